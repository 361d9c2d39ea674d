"""One Modbus bus (TCP, RTU on a serial port, or RTU over TCP): one transaction at a time.

A serial bus carries one request at a time by physics: a second master request while
a slave answers collides on the wire. We keep that rule on every bus kind, so a slow
device shows up as latency rather than as frame collisions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from drivers.device import ReadBlock
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
    """A Modbus master on one bus, serialising transactions with a lock."""

    def __init__(self, cfg: BusSection):
        self.cfg = cfg
        self.lock = asyncio.Lock()
        self.client: Any = None

    def _make_client(self) -> Any:
        c = self.cfg
        # pymodbus retries and reconnects by itself; we do both here so that every
        # read has one deadline we control (reconnect_delay=0 disables its loop).
        if c.kind == "rtu":
            return AsyncModbusSerialClient(
                c.serial_port or "", framer=FramerType.RTU, baudrate=c.baudrate,
                parity=c.parity, stopbits=c.stopbits, bytesize=c.bytesize,
                timeout=c.timeout_s, retries=0, reconnect_delay=0,
            )
        framer = FramerType.RTU if c.kind == "rtu_over_tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(
            c.host or "", port=c.port or 502, framer=framer, timeout=c.timeout_s,
            retries=0, reconnect_delay=0,
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
                reply = await asyncio.wait_for(
                    getattr(client, method)(*args, device_id=unit, **kwargs),
                    timeout_s,
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
            values = list(reply.registers)
        if len(values) != block.count:
            raise NoAnswer(f"unit {unit}: {len(values)} values for {block}")
        return {block.start + i: v for i, v in enumerate(values)}

    async def write_coil(self, unit: int, address: int, on: bool,
                         timeout_s: float | None = None) -> None:
        """Set one coil (function 05)."""
        await self._call(
            unit, f"coil {address}", "write_coil", address, on,
            timeout_s=timeout_s or self.cfg.timeout_s,
        )
