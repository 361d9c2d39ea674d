"""Configuration errors that name the key path of the fault."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(ValueError):
    """A configuration or profile file that is not valid; `path` names the key."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.message = source, path, message
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {message}")


def _loc_to_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def from_validation_error(source: str, exc: ValidationError, prefix: str = "") -> ConfigError:
    """Turn pydantic's first error into a ConfigError with a dotted key path."""
    errors = exc.errors()
    # A misspelt key shows up twice: as an unknown key, and as the real key missing.
    # The unknown one is the mistake the user made, so it is the one named.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in err["loc"] if not str(p).startswith("function-"))
    path = _loc_to_path(loc)
    if prefix:
        path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return ConfigError(source, path, msg)
