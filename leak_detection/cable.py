"""Leak cables: states, events and the location of a leak in named zones."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Zone:
    """A stretch of cable, e.g. a trench; distances are metres along the cable.

    reference names a landmark (a pit) at reference_m along the cable, from which
    locations in this zone are told.
    """

    name: str
    start_m: float
    end_m: float
    reference: str = ""
    reference_m: float | None = None


def locate(distance_m: float, zones: list[Zone] | tuple[Zone, ...]) -> str:
    """Where a leak is, in the site's words: 'trench T2, 35 m from the north pit'."""
    for z in zones:
        if z.start_m <= distance_m <= z.end_m:
            if z.reference and z.reference_m is not None:
                return f"{z.name}, {abs(distance_m - z.reference_m):.0f} m from the " \
                       f"{z.reference}"
            return f"{z.name}, {distance_m - z.start_m:.0f} m into the zone"
    return f"{distance_m:.1f} m along the cable (no zone)"


@dataclass(frozen=True)
class CableEvent:
    """A change of a cable's state."""

    kind: str  # leak, new_leak, leak_cleared, cable_break, cable_restored,
    # loop_fault, loop_restored
    t_s: float
    distance_m: float | None = None
    location: str = ""
    accuracy_m: float | None = None


@dataclass
class CableMonitor:
    """Turns a controller's polled bits and distance into alarm events.

    A leak that moves by more than spread_m from where it was last alarmed (a
    second leak, or one spreading along the trench) alarms again.
    """

    zones: tuple[Zone, ...] = ()
    spread_m: float = 2.0
    # Vendors locate to 0.5 % of the connected cable length.
    accuracy_fraction: float = 0.005
    leak: bool = False
    broken: bool = False
    loop_fault: bool = False
    alarmed_m: float | None = None

    def update(
        self, t_s: float, leak: bool, cable_break: bool, loop_fault: bool,
        distance_m: float | None, cable_length_m: float | None = None,
    ) -> list[CableEvent]:
        """Feed one poll; returns the events it causes."""
        out: list[CableEvent] = []
        acc = (self.accuracy_fraction * cable_length_m) if cable_length_m else None
        if cable_break != self.broken:
            out.append(CableEvent("cable_break" if cable_break else "cable_restored", t_s))
            self.broken = cable_break
        if loop_fault != self.loop_fault:
            out.append(CableEvent("loop_fault" if loop_fault else "loop_restored", t_s))
            self.loop_fault = loop_fault
        if leak and distance_m is not None:
            if not self.leak:
                out.append(CableEvent("leak", t_s, distance_m,
                                      locate(distance_m, self.zones), acc))
                self.alarmed_m = distance_m
            elif self.alarmed_m is not None and \
                    abs(distance_m - self.alarmed_m) > self.spread_m:
                out.append(CableEvent("new_leak", t_s, distance_m,
                                      locate(distance_m, self.zones), acc))
                self.alarmed_m = distance_m
            self.leak = True
        elif not leak and self.leak:
            out.append(CableEvent("leak_cleared", t_s, self.alarmed_m,
                                  locate(self.alarmed_m, self.zones)
                                  if self.alarmed_m is not None else ""))
            self.leak = False
            self.alarmed_m = None
        return out
