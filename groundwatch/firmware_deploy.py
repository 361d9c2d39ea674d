"""`groundwatch firmware deploy`: copy the field node's application and configuration
to a MicroPython board with mpremote, verify every file by SHA-256, reset the board."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from drivers.errors import ConfigError

log = logging.getLogger(__name__)

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"

# Run on the board: each file's SHA-256, or "missing".
_HASH_SNIPPET = """\
import hashlib, binascii
for p in {paths!r}:
    h = hashlib.sha256()
    try:
        with open(p, 'rb') as f:
            while True:
                b = f.read(512)
                if not b:
                    break
                h.update(b)
        print('SHA256', p, binascii.hexlify(h.digest()).decode())
    except OSError:
        print('SHA256', p, 'missing')
"""
_MKDIR_SNIPPET = """\
import os
try:
    os.mkdir('node')
except OSError:
    pass
"""
# machine.reset() on a board; the unix port has only soft_reset, which ends it.
_RESET_SNIPPET = "import machine\ngetattr(machine, 'reset', machine.soft_reset)()\n"


class DeployError(Exception):
    """The board did not take the files, or they read back wrong."""


def files_to_copy(firmware: Path = FIRMWARE) -> list[tuple[Path, str]]:
    """(local file, path on the board) of the application."""
    files = [(firmware / "main.py", "main.py")]
    files += [(p, f"node/{p.name}") for p in sorted((firmware / "node").glob("*.py"))]
    return files


def check_node_config(path: Path, firmware: Path = FIRMWARE) -> None:
    """Load node.json with the firmware's own loader; any problem is a ConfigError."""
    spec = importlib.util.spec_from_file_location("_node_config",
                                                  firmware / "node" / "config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not path.exists():
        raise ConfigError(str(path), "", "file not found")
    _, problems = module.load(str(path))
    if problems:
        key, _, message = str(problems[0]).partition(": ")
        raise ConfigError(str(path), key, message or key)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Mpremote:
    """mpremote as a subprocess, connected without a reset (`resume`)."""

    def __init__(self, port: str, timeout_s: float = 60.0):
        self.port, self.timeout_s = port, timeout_s

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mpremote", "connect", self.port, "resume", *args]
        log.debug("running %s", " ".join(cmd))
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise DeployError(f"mpremote on {self.port}: no answer in "
                              f"{self.timeout_s:.0f} s") from None

    def check(self, *args: str) -> str:
        proc = self.run(*args)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "failed").splitlines()
            raise DeployError(f"mpremote on {self.port}: {last[-1]}")
        return proc.stdout


def deploy(port: str, config: Path | None = None, reset: bool = True,
           firmware: Path = FIRMWARE) -> dict[str, str]:
    """Copy, verify and (by default) reset; return {board path: sha256}."""
    files = files_to_copy(firmware)
    if config is not None:
        check_node_config(config, firmware)
        files.append((config, "node.json"))
    want = {remote: sha256(local) for local, remote in files}
    mp = Mpremote(port)
    copy: list[str] = ["exec", _MKDIR_SNIPPET]
    for local, remote in files:
        copy += ["+", "fs", "cp", str(local), f":{remote}"]
    mp.check(*copy)
    out = mp.check("exec", _HASH_SNIPPET.format(paths=list(want)))
    got = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "SHA256":
            got[parts[1]] = parts[2]
    for remote, digest in want.items():
        if got.get(remote) != digest:
            raise DeployError(f"{remote} on the board reads back as "
                              f"{got.get(remote, 'nothing')}, not {digest[:16]}...")
    log.info("port=%s copied and verified %d files", port, len(want))
    if reset:
        # The connection drops as the board resets: mpremote's exit status says
        # nothing then; the board coming back with the node running is the check.
        mp.run("exec", _RESET_SNIPPET)
        log.info("port=%s board reset", port)
    return want
