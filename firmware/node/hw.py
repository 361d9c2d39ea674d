"""The hardware interface on a real board (RP2040, ESP32) through `machine`.

hw_host.Hardware implements the same methods on the MicroPython unix port.
"""

import select

import machine


class Hardware:
    def __init__(self, cfg):
        Pin = machine.Pin
        pulls = {"up": Pin.PULL_UP, "down": Pin.PULL_DOWN, "none": None}
        self.di = [Pin(d["pin"], Pin.IN, pulls[d.get("pull", "up")]) for d in cfg["di"]]
        self.adc = [machine.ADC(Pin(a["pin"])) for a in cfg["ai"]]
        self.active_high = [r.get("active_high", True) for r in cfg["relays"]]
        self.relays = [Pin(r["pin"], Pin.OUT, value=0 if r.get("active_high", True)
                           else 1) for r in cfg["relays"]]
        u = cfg["uart"]
        parity = {"N": None, "E": 0, "O": 1}[cfg["parity"]]
        self.uart = machine.UART(u["id"], baudrate=cfg["baudrate"], bits=8,
                                 parity=parity, stop=1, tx=Pin(u["tx"]),
                                 rx=Pin(u["rx"]), timeout=0, rxbuf=512)
        # RS-485 driver enable: high only while the node transmits.
        self.de = Pin(u["de"], Pin.OUT, value=0) if u.get("de") is not None else None
        self.poll = select.poll()
        self.poll.register(self.uart, select.POLLIN)
        self.wdt = None

    def refresh(self, now_ms):
        pass

    def read_di(self, i):
        return self.di[i].value()

    def read_adc(self, i):
        return self.adc[i].read_u16()

    def set_relay(self, i, on):
        self.relays[i].value(1 if bool(on) == self.active_high[i] else 0)

    def uart_wait(self, ms):
        self.poll.poll(ms)

    def uart_readinto(self, buf):
        return self.uart.readinto(buf) or 0

    def uart_write(self, buf):
        if self.de:
            self.de.value(1)
        self.uart.write(buf)
        self.uart.flush()  # returns once the last stop bit is out (rp2, esp32)
        if self.de:
            self.de.value(0)

    def watchdog_start(self, ms):
        self.wdt = machine.WDT(timeout=ms)

    def watchdog_feed(self):
        if self.wdt:
            self.wdt.feed()

    def watchdog_reset(self):
        return machine.reset_cause() == machine.WDT_RESET

    def hold_watchdog(self):
        """At the REPL (deploying): keep a started watchdog fed until the next reset."""
        if self.wdt:
            wdt = self.wdt
            try:
                timer = machine.Timer(-1)  # rp2: virtual timers only
            except ValueError:
                timer = machine.Timer(0)  # esp32: hardware timers only
            timer.init(period=1000, mode=machine.Timer.PERIODIC,
                       callback=lambda t: wdt.feed())
            self.timer = timer

    def stop(self):
        for i in range(len(self.relays)):
            self.set_relay(i, False)
        self.hold_watchdog()
