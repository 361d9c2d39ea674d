"""The field node: inputs to Modbus registers, local alarm relays, heartbeat, watchdog.

One loop does everything. It waits on the UART for at most sample_ms, answers a
finished request frame, and every sample_ms reads the inputs, debounces them, drives
the relays of the local alarms and feeds the watchdog. Nothing here needs the
gateway: a sump float drives its relay even if no request ever arrives.
"""

from micropython import const

from node import inputs, modbus
from node.config import MAX_AI, MAX_DI, MAX_RELAYS, MAX_RULES

VERSION = const(100)  # 1.00

# Input registers (function 04), 0-based; firmware/README.md has the full map.
IR_HEARTBEAT = const(0)
IR_STATUS = const(1)
IR_DI_BITS = const(2)
IR_RELAY_BITS = const(3)
IR_UPTIME_S = const(4)  # uint32, high word first
IR_VERSION = const(6)
IR_LOOP_MAX_MS = const(7)
IR_AI = const(8)  # 4 registers per analog input: µA, % x100, status, raw ADC
IR_COUNT = const(24)  # IR_AI + 4 * MAX_AI
# Holding registers (functions 03/06).
HR_RELAY_COMMAND = const(0)
HR_UNIT_ID = const(1)
HR_DEBOUNCE_MS = const(2)
HR_HEARTBEAT_MS = const(3)
HR_COUNT = const(4)
# Discrete inputs (function 02): digital inputs, then one fault flag per analog input.
DI_AI_FAULT = const(8)  # MAX_DI
# Status bits of IR_STATUS.
ST_CONFIG = const(1)  # node.json had problems: some defaults in use
ST_WATCHDOG = const(2)  # the last reset was the watchdog's
ST_AI_FAULT = const(4)  # an analog input is open, over range or unreadable
ST_LOCAL_ALARM = const(8)  # a local alarm rule holds a relay on
ST_CONTROL_ERROR = const(16)  # a control step failed since boot

KIND_DI = const(0)
KIND_ABOVE = const(1)
KIND_BELOW = const(2)


class NodeTables(modbus.Tables):
    """Coil and register writes become relay commands from the gateway."""

    def __init__(self):
        super().__init__(MAX_RELAYS, MAX_DI + MAX_AI, HR_COUNT, IR_COUNT)
        self.command = bytearray(MAX_RELAYS)
        self.holding_writable[HR_RELAY_COMMAND] = 1

    def write_coil(self, address, on):
        self.command[address] = 1 if on else 0

    def write_register(self, address, value):
        for i in range(MAX_RELAYS):
            self.command[i] = value >> i & 1


class Node:
    """The application, on injected hardware and clocks (tests drive both)."""

    def __init__(self, cfg, hw, ticks_ms, ticks_us, ticks_diff, problems=()):
        self.cfg = cfg
        self.hw = hw
        self.ticks_ms = ticks_ms
        self.ticks_us = ticks_us
        self.ticks_diff = ticks_diff
        self.tables = NodeTables()
        self.slave = modbus.Slave(cfg["unit_id"], self.tables)
        self.tx = memoryview(self.slave.tx)
        self.framer = modbus.Framer(cfg["baudrate"])
        self.n_di = len(cfg["di"])
        self.n_ai = len(cfg["ai"])
        self.n_relays = len(cfg["relays"])
        self.debounce = inputs.Debouncer(MAX_DI, cfg["debounce_ms"], ticks_diff)
        self.invert = bytearray(1 if d.get("invert") else 0 for d in cfg["di"])
        self.full_ua = [inputs.full_scale_ua(a.get("vref_mv", 3300),
                                             a.get("shunt_ohms", 150.0))
                        for a in cfg["ai"]]
        self.ai_ua = [0] * MAX_AI
        self.ai_status = bytearray(MAX_AI)
        self.relay_on = bytearray(MAX_RELAYS)
        self.local = bytearray(MAX_RELAYS)
        # Local alarm rules as parallel arrays: kind, input, relay, threshold, on_fault.
        rules = cfg["local_alarms"][:MAX_RULES]
        self.n_rules = len(rules)
        self.rule_kind = bytearray(self.n_rules)
        self.rule_input = bytearray(self.n_rules)
        self.rule_relay = bytearray(self.n_rules)
        self.rule_fault = bytearray(self.n_rules)
        self.rule_ua = [0] * self.n_rules
        for i, r in enumerate(rules):
            self.rule_relay[i] = r["relay"]
            if "di" in r:
                self.rule_kind[i], self.rule_input[i] = KIND_DI, r["di"]
                continue
            above = "above_ma" in r
            self.rule_kind[i] = KIND_ABOVE if above else KIND_BELOW
            self.rule_input[i] = r["ai"]
            self.rule_ua[i] = int((r["above_ma"] if above else r["below_ma"]) * 1000)
            self.rule_fault[i] = 1 if r.get("on_fault", True) else 0
        self.status = ST_CONFIG if problems else 0
        if hw.watchdog_reset():
            self.status |= ST_WATCHDOG
        self.control_errors = 0
        self.heartbeat = 0
        now = ticks_ms()
        self.boot_ms = now
        self.next_sample_ms = now
        self.next_beat_ms = ticks_ms() + cfg["heartbeat_ms"]
        self.loop_max_ms = 0
        t = self.tables
        t.input[IR_VERSION] = VERSION
        t.holding[HR_UNIT_ID] = cfg["unit_id"]
        t.holding[HR_DEBOUNCE_MS] = cfg["debounce_ms"]
        t.holding[HR_HEARTBEAT_MS] = cfg["heartbeat_ms"]
        for i in range(self.n_ai, MAX_AI):
            t.input[IR_AI + 4 * i + 2] = inputs.STATUS_ADC_ERROR  # not fitted
            t.discrete[DI_AI_FAULT + i] = 1

    # -- control ----------------------------------------------------------------

    def _read_inputs(self, now_ms):
        hw = self.hw
        t = self.tables
        bits = 0
        for i in range(self.n_di):
            level = hw.read_di(i) ^ self.invert[i]
            on = self.debounce.update(i, level, now_ms)
            t.discrete[i] = on
            bits |= on << i
        t.input[IR_DI_BITS] = bits
        fault = 0
        for i in range(self.n_ai):
            base = IR_AI + 4 * i
            try:
                raw = hw.read_adc(i)
            except OSError:
                raw = 0
                ua = 0
                status = inputs.STATUS_ADC_ERROR
            else:
                ua = inputs.loop_ua(raw, self.full_ua[i])
                status = inputs.loop_status(ua)
            self.ai_ua[i] = ua
            self.ai_status[i] = status
            t.input[base] = ua if ua < 65535 else 65535
            t.input[base + 1] = inputs.percent_x100(ua) & 0xFFFF
            t.input[base + 2] = status
            t.input[base + 3] = raw
            t.discrete[DI_AI_FAULT + i] = 1 if status else 0
            if status:
                fault = ST_AI_FAULT
        return fault

    def _local_alarms(self):
        local = self.local
        for i in range(MAX_RELAYS):
            local[i] = 0
        for i in range(self.n_rules):
            kind = self.rule_kind[i]
            k = self.rule_input[i]
            if kind == KIND_DI:
                on = self.tables.discrete[k]
            elif self.ai_status[k]:
                on = self.rule_fault[i]  # a broken loop: fail towards the alarm
            elif kind == KIND_ABOVE:
                on = self.ai_ua[k] > self.rule_ua[i]
            else:
                on = self.ai_ua[k] < self.rule_ua[i]
            if on:
                local[self.rule_relay[i]] = 1

    def _drive_relays(self):
        t = self.tables
        hw = self.hw
        bits = 0
        any_local = 0
        command = 0
        for i in range(MAX_RELAYS):
            command |= t.command[i] << i
        for i in range(self.n_relays):
            on = 1 if self.local[i] or t.command[i] else 0
            any_local |= self.local[i]
            if on != self.relay_on[i]:
                hw.set_relay(i, on)
                self.relay_on[i] = on
            t.coils[i] = on
            bits |= on << i
        t.input[IR_RELAY_BITS] = bits
        t.holding[HR_RELAY_COMMAND] = command
        return ST_LOCAL_ALARM if any_local else 0

    def control(self, now_ms):
        """One sampling step; the heartbeat counts and the watchdog is fed only here."""
        self.hw.refresh(now_ms)
        status = self.status & (ST_CONFIG | ST_WATCHDOG | ST_CONTROL_ERROR)
        status |= self._read_inputs(now_ms)
        self._local_alarms()
        status |= self._drive_relays()
        t = self.tables
        while self.ticks_diff(now_ms, self.next_beat_ms) >= 0:
            self.heartbeat = (self.heartbeat + 1) & 0xFFFF
            self.next_beat_ms += self.cfg["heartbeat_ms"]
        t.input[IR_HEARTBEAT] = self.heartbeat
        up_s = self.ticks_diff(now_ms, self.boot_ms) // 1000
        t.input[IR_UPTIME_S] = up_s >> 16 & 0xFFFF
        t.input[IR_UPTIME_S + 1] = up_s & 0xFFFF
        t.input[IR_LOOP_MAX_MS] = self.loop_max_ms
        self.status = status
        t.input[IR_STATUS] = status
        self.hw.watchdog_feed()

    # -- Modbus -----------------------------------------------------------------

    def serve(self, now_us):
        """Take what the UART has; answer a frame once the line has been silent."""
        fr = self.framer
        fr.got(self.hw.uart_readinto(fr.chunk), now_us)
        n = fr.complete(now_us, self.ticks_diff)
        if n:
            k = self.slave.handle(fr.rx, n)
            fr.reset()
            if k:
                self.hw.uart_write(self.tx[:k])

    def step(self):
        """One turn of the main loop."""
        start = self.ticks_ms()
        wait_ms = self.ticks_diff(self.next_sample_ms, start)
        if self.framer.n:
            wait_ms = 1  # a frame is coming in: look again after the silence
        self.hw.uart_wait(wait_ms if wait_ms > 0 else 0)
        self.serve(self.ticks_us())
        now = self.ticks_ms()
        if self.ticks_diff(now, self.next_sample_ms) >= 0:
            try:
                self.control(now)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop Modbus
                # No heartbeat, no watchdog feed: the gateway sees the heartbeat stop
                # and the watchdog resets the board.
                self.control_errors += 1
                self.status |= ST_CONTROL_ERROR
                self.tables.input[IR_STATUS] = self.status
                if self.control_errors == 1:
                    print("node: control step failed:", exc)
            self.next_sample_ms = now + self.cfg["sample_ms"]
        took = self.ticks_diff(self.ticks_ms(), start)
        if took > self.loop_max_ms:
            self.loop_max_ms = took if took < 65535 else 65535


def main(config_path="node.json"):
    """Boot: load the configuration, pick the hardware, run forever."""
    import sys
    import time

    from node import config

    cfg, problems = config.load(config_path)
    for p in problems:
        print("node: config", p)
    if sys.platform == "linux":
        from node import hw_host as hw_mod
    else:
        from node import hw as hw_mod
    hw = hw_mod.Hardware(cfg)
    node = Node(cfg, hw, time.ticks_ms, time.ticks_us, time.ticks_diff, problems)
    if cfg["watchdog_ms"]:
        hw.watchdog_start(cfg["watchdog_ms"])
    print("node: unit", cfg["unit_id"], "serving")
    try:
        while True:
            node.step()
    finally:
        hw.stop()
