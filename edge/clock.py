"""Is the wall clock right? A Raspberry Pi has no real-time clock.

A Pi that boots without network starts from the last time it saved (or 1970) and
jumps when NTP gets through. Readings stamped before that jump carry wrong dates. The
gateway asks this module before stamping; while the answer is "not synchronised" it
stores each record with its monotonic time and the boot it was taken in, so the time
can be corrected once synchronisation is observed (edge.store.EdgeStore.correct_clock).

How synchronisation is observed (`[gateway] clock_sync`):

- ``"kernel"``: the kernel's own flag, as `timedatectl` shows it ("System clock
  synchronized"): adjtimex(2) without STA_UNSYNC. systemd-timesyncd, chrony and ntpd
  clear it when they discipline the clock.
- ``"assume"``: the host keeps time by other means (a real-time clock, a trusted
  host clock in a container): always synchronised.
- a path, e.g. ``"/run/systemd/timesync/synchronized"``: synchronised while the file
  exists (systemd-timesyncd touches that one on its first successful sync).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from pathlib import Path

from edge.store import ClockMark

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
STA_UNSYNC = 0x0040  # linux/timex.h
TIME_ERROR = 5  # adjtimex's return value while the clock is not synchronised


class _Timex(ctypes.Structure):
    # struct timex of linux/timex.h on LP64 and ILP32 (long-sized fields, then padding)
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
        ("status", ctypes.c_int), ("constant", ctypes.c_long),
        ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int), ("_padding", ctypes.c_int * 11),
    ]


def kernel_synchronised() -> bool:
    """The kernel's NTP status: True once a time daemon has synchronised the clock."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    tx = _Timex()  # modes = 0: read only
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        raise OSError(ctypes.get_errno(), "adjtimex failed")
    return state != TIME_ERROR and not tx.status & STA_UNSYNC


def boot_id() -> str:
    """This boot's id; monotonic times compare only within one boot."""
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:  # not Linux: one process lifetime stands in for a boot
        return f"process-{time.time_ns()}"


class WallClock:
    """Answers "is the wall clock synchronised?", at most once a second."""

    def __init__(self, mode: str, monotonic=time.monotonic, wall=time.time):  # type: ignore[no-untyped-def]
        self.mode = mode
        self.monotonic, self.wall = monotonic, wall
        self.boot_id = boot_id()
        self._checked_at: float | None = None
        self._synced = False

    def synchronised(self) -> bool:
        now = self.monotonic()
        if self._checked_at is None or now - self._checked_at >= 1.0:
            self._checked_at = now
            was, self._synced = self._synced, self._check()
            if was != self._synced:
                log.info("wall clock %s (clock_sync=%s)",
                         "synchronised" if self._synced else "NOT synchronised",
                         self.mode)
        return self._synced

    def _check(self) -> bool:
        if self.mode == "assume":
            return True
        if self.mode == "kernel":
            try:
                return kernel_synchronised()
            except OSError as exc:
                log.warning("cannot read the kernel clock status: %s", exc)
                return False
        return Path(self.mode).exists()

    def mark(self) -> ClockMark | None:
        """None while synchronised; else when, by the monotonic clock, it is now."""
        if self.synchronised():
            return None
        return ClockMark(round(self.monotonic() * 1000), self.boot_id)

    def offset_ms(self) -> int:
        """Wall-clock minus monotonic milliseconds (meaningful once synchronised)."""
        return round(self.wall() * 1000) - round(self.monotonic() * 1000)
