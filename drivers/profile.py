"""Device profiles: data files that map Modbus registers to named points.

A profile is a TOML file (see docs/profiles.md). Built-in profiles live beside this
module in ``profiles/``; a site may also name a profile file by path.
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .codec import NUMERIC_TYPES, register_count
from .errors import ConfigError, from_validation_error

PROFILE_DIR = Path(__file__).with_name("profiles")

# Protocol limits (Modbus application protocol v1.1b3, 6.1-6.4): one read returns
# at most 125 registers or 2000 bits.
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000

Table = Literal["holding", "input", "coil", "discrete"]
REGISTER_TABLES = ("holding", "input")
BIT_TABLES = ("coil", "discrete")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Strict):
    """One named value of a device."""

    name: str = ""
    table: Table = "holding"
    address: int = Field(ge=0, le=65535, description="register number as in the manual")
    type: Literal[
        "int16", "uint16", "int32", "uint32", "int64", "uint64",
        "float32", "float64", "string", "bit", "bool",
    ] = "uint16"
    bit: int | None = Field(default=None, ge=0, le=15)
    length: int = Field(default=0, ge=0, le=250, description="string length in bytes")
    byte_order: Literal["big", "little"] | None = None
    word_order: Literal["big", "little"] | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    sentinel: list[float] = Field(default_factory=list)
    plausible_min: float | None = None
    plausible_max: float | None = None
    quality_address: int | None = Field(default=None, ge=0, le=65535)
    writable: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> "Point":
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(f"a {self.table} point must have type bool")
        if self.table in REGISTER_TABLES and self.type == "bool":
            raise ValueError("type bool is for coil and discrete tables; use bit")
        if self.type == "bit" and self.bit is None:
            raise ValueError("type bit needs bit = 0..15")
        if self.type == "string" and not self.length:
            raise ValueError("type string needs length (bytes)")
        if (
            self.plausible_min is not None and self.plausible_max is not None
            and self.plausible_min > self.plausible_max
        ):
            raise ValueError("plausible_min is above plausible_max")
        return self

    @property
    def count(self) -> int:
        """Registers (or bits) this point occupies."""
        return 1 if self.type == "bool" else register_count(self.type, self.length)

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES


class Profile(_Strict):
    """A device family's register map."""

    name: str
    description: str = ""
    register_base: Literal[0, 1] = Field(
        default=0, description="1 if the manual numbers registers from 1"
    )
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    max_read_registers: int = Field(default=MAX_READ_REGISTERS, ge=1, le=125)
    max_gap: int = Field(default=0, ge=0, le=32, description="registers a block may skip")
    points: dict[str, Point]

    @model_validator(mode="after")
    def _check_layout(self) -> "Profile":
        # Resolve defaults and names, then reject overlaps and blocks past the limit.
        resolved = {}
        for name, p in self.points.items():
            updates = {"name": name}
            if p.byte_order is None:
                updates["byte_order"] = self.byte_order
            if p.word_order is None:
                updates["word_order"] = self.word_order
            if p.address < self.register_base:
                raise ValueError(
                    f"points.{name}.address {p.address} is below register_base "
                    f"{self.register_base}"
                )
            end = p.address - self.register_base + p.count
            if end > 65536:
                raise ValueError(f"points.{name}: past the end of the address space")
            resolved[name] = p.model_copy(update=updates)
        object.__setattr__(self, "points", resolved)

        # Bit points are views into a status register and may share it; values may not.
        owner: dict[tuple[str, int], str] = {}
        for name, p in resolved.items():
            if p.type == "bit":
                continue
            for addr in range(p.address, p.address + p.count):
                prev = owner.get((p.table, addr))
                if prev:
                    raise ValueError(
                        f"points.{name} overlaps points.{prev} at {p.table} register {addr}"
                    )
                owner[(p.table, addr)] = name
        return self

    def wire_address(self, point: Point) -> int:
        """The 0-based protocol address of a point."""
        return point.address - self.register_base


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None


@cache
def load_profile(ref: str, base_dir: str = ".") -> Profile:
    """Load a profile by built-in name or by path (relative to base_dir)."""
    path = Path(ref)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{ref}.toml"
        if not path.exists():
            raise ConfigError(
                ref, "", f"no built-in profile {ref!r} (have: {', '.join(builtin_profiles())})"
            )
    elif not path.is_absolute():
        path = Path(base_dir) / path
    data = _read_toml(path)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(str(path), exc) from None
