"""The hardware interface on the MicroPython unix port, for tests without a board.

- Inputs come from a JSON file a test writes (atomically, by rename), reread when
  its modification time changes: {"di": [pin levels 0/1], "ai_ma": [loop currents in
  mA, or null for an ADC that fails to read], "fault": text}. The ADC turns a current
  into the 12-bit reading the board's shunt and reference would give. A "fault"
  makes every control step fail (a hardware or driver failure the application does
  not expect), for tests of the heartbeat and the watchdog.
- Relay outputs go to a JSON file, rewritten on every change: {"relays": [0/1]}.
- The UART is a pty (one end of a socat pair) opened as a file in raw mode with
  VMIN = VTIME = 0, so a read returns what has arrived without blocking.
- The watchdog is a thread: if not fed in time it kills the process, as a reset
  ends a board's program; whoever started it restarts it, as a board reboots.
"""

import _thread
import json
import os
import select
import sys
import termios
import time


class Hardware:
    def __init__(self, cfg):
        host = cfg["host"]
        self.inputs_path = host["inputs"]
        self.outputs_path = host["outputs"]
        self.n_di = len(cfg["di"])
        self.ai = cfg["ai"]
        self.di = bytearray(self.n_di)
        self.ai_ma = [None] * len(cfg["ai"])
        self.relays = bytearray(len(cfg["relays"]))
        self.ino = self.mtime = self.size = None
        self.fault = None
        self._load_inputs()
        self._write_outputs()
        if not host["uart"]:
            raise OSError("host.uart: give the pty path of the node's serial line")
        self.uart = open(host["uart"], "r+b")
        fd = self.uart.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][5] = 0  # VTIME
        attrs[6][6] = 0  # VMIN: a read returns at once with what is there
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self.poll = select.poll()
        self.poll.register(self.uart, select.POLLIN)
        self.wdt = Watchdog()

    def _load_inputs(self):
        try:
            st = os.stat(self.inputs_path)
        except OSError:
            return
        # mtime has whole seconds here; a rename gives a new inode every time.
        if st[1] == self.ino and st[8] == self.mtime and st[6] == self.size:
            return
        try:
            with open(self.inputs_path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return  # caught mid-write: keep the last levels, look again next time
        self.ino, self.mtime, self.size = st[1], st[8], st[6]
        self.fault = data.get("fault")
        for i, v in enumerate(data.get("di", [])[:self.n_di]):
            self.di[i] = 1 if v else 0
        for i, v in enumerate(data.get("ai_ma", [])[:len(self.ai)]):
            self.ai_ma[i] = v

    def _write_outputs(self):
        tmp = self.outputs_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"relays": list(self.relays)}, f)
        os.rename(tmp, self.outputs_path)

    def refresh(self, now_ms):
        self._load_inputs()
        if self.fault:
            raise RuntimeError("injected hardware fault: %s" % self.fault)

    def read_di(self, i):
        return self.di[i]

    def read_adc(self, i):
        ma = self.ai_ma[i]
        if ma is None:
            raise OSError("ADC %d: no reading" % i)
        a = self.ai[i]
        volts = ma / 1000 * a.get("shunt_ohms", 150.0)
        count = int(volts * 1000 / a.get("vref_mv", 3300) * 4095 + 0.5)
        count = 0 if count < 0 else 4095 if count > 4095 else count
        return count << 4 | count >> 8  # as read_u16 scales a 12-bit count

    def set_relay(self, i, on):
        self.relays[i] = 1 if on else 0
        self._write_outputs()

    def uart_wait(self, ms):
        self.poll.poll(ms)

    def uart_readinto(self, buf):
        return self.uart.readinto(buf) or 0

    def uart_write(self, buf):
        self.uart.write(buf)

    def watchdog_start(self, ms):
        self.wdt.start(ms)

    def watchdog_feed(self):
        self.wdt.feed()

    def watchdog_reset(self):
        return os.getenv("NODE_RESET_CAUSE") == "watchdog"

    def hold_watchdog(self):
        self.wdt.hold()

    def stop(self):
        for i in range(len(self.relays)):
            self.relays[i] = 0
        self._write_outputs()
        self.hold_watchdog()


class Watchdog:
    """A thread that kills the process if feed() stops for longer than the timeout."""

    def __init__(self):
        self.ms = 0
        self.fed_ms = 0

    def start(self, ms):
        self.ms = ms
        self.fed_ms = time.ticks_ms()
        _thread.start_new_thread(self._run, ())

    def _run(self):
        while True:
            time.sleep_ms(self.ms // 10 + 1)
            if time.ticks_diff(time.ticks_ms(), self.fed_ms) > self.ms:
                sys.stderr.write("node: watchdog expired: reset\n")
                os.system("kill -9 $PPID")  # the shell's parent: this process

    def feed(self):
        self.fed_ms = time.ticks_ms()

    def hold(self):
        self.ms = 1 << 29
