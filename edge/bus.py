"""One Modbus bus (TCP, RTU on a serial port, or RTU over TCP): one transaction at a time.

A serial bus carries one request at a time by physics: a second master request while
a slave answers collides on the wire. We keep that rule on every bus kind, so a slow
device shows up as latency rather than as frame collisions.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusTcpClient

from drivers.device import ReadBlock
from drivers.rtu import (
    RtuError,
    RtuException,
    RtuMaster,
    SerialTransport,
    SocketTransport,
)
from edge.config import BusSection

log = logging.getLogger(__name__)


class BusError(Exception):
    """Base error of a bus transaction."""


class DeviceReportedError(BusError):
    """The device answered with a Modbus exception response."""

    def __init__(self, unit: int, block: ReadBlock | str, code: int):
        self.code = code
        super().__init__(f"unit {unit}: exception code {code} on {block}")


class NoAnswer(BusError):
    """Silence, garbage or a broken connection within the deadline."""


_READERS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class ModbusBus:
    """A Modbus TCP master (pymodbus) on one bus, serialising transactions."""

    def __init__(self, cfg: BusSection):
        self.cfg = cfg
        self.lock = asyncio.Lock()
        self.client: Any = None

    def _make_client(self) -> Any:
        c = self.cfg
        # pymodbus retries and reconnects by itself; we do both here so that every
        # read has one deadline we control (reconnect_delay=0 disables its loop).
        return AsyncModbusTcpClient(
            c.host or "", port=c.port or 502, framer=FramerType.SOCKET,
            timeout=c.timeout_s, retries=0, reconnect_delay=0,
        )

    async def _connected(self) -> Any:
        if self.client is not None and self.client.connected:
            return self.client
        self.close()
        self.client = self._make_client()
        try:
            ok = await asyncio.wait_for(self.client.connect(), self.cfg.timeout_s * 2)
        except (TimeoutError, OSError, ModbusException) as exc:
            ok = False
            log.debug("bus=%s connect failed: %s", self.cfg.name, exc)
        if not ok:
            self.close()
            raise NoAnswer(f"bus {self.cfg.name}: cannot connect")
        return self.client

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing a broken transport
                pass
            self.client = None

    async def _call(self, unit: int, what: str, method: str, *args: Any,
                    timeout_s: float, **kwargs: Any) -> Any:
        async with self.lock:
            client = await self._connected()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps every
                # read in a task of its own (docs/bench.md, poll path).
                async with asyncio.timeout(timeout_s):
                    reply = await getattr(client, method)(
                        *args, device_id=unit, **kwargs
                    )
            except (TimeoutError, ModbusException, OSError) as exc:
                # The line may still deliver a late reply; reconnecting drops it so it
                # is never taken as the answer to the next request.
                self.close()
                raise NoAnswer(f"unit {unit}: no answer to {what}: {exc}") from None
        if reply.isError():
            raise DeviceReportedError(unit, what, getattr(reply, "exception_code", 0))
        return reply

    async def read(self, unit: int, block: ReadBlock, timeout_s: float | None = None
                   ) -> dict[int, int]:
        """Read one block; return {address: register or bit}."""
        reply = await self._call(
            unit, f"{block.table} {block.start}+{block.count}", _READERS[block.table],
            block.start, count=block.count, timeout_s=timeout_s or self.cfg.timeout_s,
        )
        if block.table in ("coil", "discrete"):
            values = [int(b) for b in reply.bits[: block.count]]
        else:
            values = reply.registers
        if len(values) != block.count:
            raise NoAnswer(f"unit {unit}: {len(values)} values for {block}")
        return dict(zip(range(block.start, block.start + block.count), values))

    async def write_coil(self, unit: int, address: int, on: bool,
                         timeout_s: float | None = None) -> None:
        """Set one coil (function 05)."""
        await self._call(
            unit, f"coil {address}", "write_coil", address, on,
            timeout_s=timeout_s or self.cfg.timeout_s,
        )


class RtuBus(ModbusBus):
    """RTU framing of our own (drivers.rtu), on a serial port or over TCP.

    pymodbus matches TCP replies by transaction id; RTU has none, so serial buses and
    serial device servers go through a master that drains late replies and validates
    every frame. It is synchronous and runs on one thread per bus.
    """

    def __init__(self, cfg: BusSection):
        super().__init__(cfg)
        self.master: RtuMaster | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"bus-{cfg.name}")

    def _open(self) -> RtuMaster:
        if self.master is None:
            c = self.cfg
            try:
                if c.kind == "rtu":
                    transport: Any = SerialTransport(
                        c.serial_port or "", c.baudrate, c.parity, c.stopbits, c.bytesize
                    )
                    self.master = RtuMaster(transport, c.baudrate)
                else:
                    transport = SocketTransport(c.host or "", c.port or 502,
                                                c.timeout_s * 2)
                    self.master = RtuMaster(transport)
            except (OSError, ValueError) as exc:
                raise NoAnswer(f"bus {c.name}: cannot open: {exc}") from None
        return self.master

    def _run(self, unit: int, what: str, func: Any) -> Any:
        master = self._open()
        try:
            return func(master)
        except RtuException as exc:
            raise DeviceReportedError(unit, what, exc.code) from None
        except RtuError as exc:
            raise NoAnswer(str(exc)) from None
        except OSError as exc:  # the adapter was unplugged, the server hung up
            self._close_master()
            raise NoAnswer(f"bus {self.cfg.name}: {exc}") from None

    def _close_master(self) -> None:
        if self.master is not None:
            try:
                self.master.close()
            except OSError:
                pass
            self.master = None

    async def _in_thread(self, unit: int, what: str, func: Any) -> Any:
        async with self.lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.executor, self._run, unit, what, func
            )

    async def read(self, unit: int, block: ReadBlock, timeout_s: float | None = None
                   ) -> dict[int, int]:
        timeout_s = timeout_s or self.cfg.timeout_s
        values = await self._in_thread(
            unit, f"{block.table} {block.start}+{block.count}",
            lambda m: m.read(unit, block.table, block.start, block.count, timeout_s),
        )
        return {block.start + i: v for i, v in enumerate(values)}

    async def write_coil(self, unit: int, address: int, on: bool,
                         timeout_s: float | None = None) -> None:
        timeout_s = timeout_s or self.cfg.timeout_s
        await self._in_thread(unit, f"coil {address}",
                              lambda m: m.write_coil(unit, address, on, timeout_s))

    def close(self) -> None:
        self.executor.submit(self._close_master).result(timeout=10)


def make_bus(cfg: BusSection) -> ModbusBus:
    """The right master for a bus kind."""
    return ModbusBus(cfg) if cfg.kind == "tcp" else RtuBus(cfg)
