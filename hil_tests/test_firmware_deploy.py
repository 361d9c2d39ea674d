"""`groundwatch firmware deploy` end to end: a MicroPython unix port on a pty plays the
board (its REPL on the pty, its flash the working directory); the deploy copies,
verifies and resets it, the test reboots it, and the gateway reads its inputs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from groundwatch.firmware_deploy import files_to_copy
from hil_tests.field_node import (
    FIRMWARE,
    Node,
    PtyPair,
    latest,
    micropython,
    node_config,
    write_site,
)
from hil_tests.harness import Proc, wait_for

pytestmark = pytest.mark.hil

REPO = FIRMWARE.parent


def groundwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "groundwatch", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


class Board:
    """A MicroPython REPL on a pty, as a board's USB serial port."""

    def __init__(self, flash: Path, repl: Path):
        socat = shutil.which("socat")
        assert socat, "socat is required: apt-get install socat"
        self.repl = repl
        self.proc = subprocess.Popen(
            [socat, f"pty,link={repl},raw,echo=0",
             f"EXEC:{micropython()},pty,raw,echo=0,stderr,setsid,ctty"],
            cwd=flash, stderr=subprocess.DEVNULL)
        wait_for(repl.exists, 5, "the board's REPL pty", interval_s=0.02)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def test_deploy_copies_verifies_resets_and_the_gateway_reads_the_node(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    pair = PtyPair(tmp_path)
    cfg = node_config(tmp_path, pair.node_end, unit_id=7)
    node_json = tmp_path / "node.json"
    node_json.write_text(json.dumps(cfg))
    board = Board(flash, tmp_path / "repl")
    node = Node(flash, cfg, code_dir=flash)
    edge = None
    try:
        proc = groundwatch("firmware", "deploy", "--port", str(board.repl),
                           "--config", str(node_json))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        expected = {remote: hashlib.sha256(local.read_bytes()).hexdigest()
                    for local, remote in files_to_copy()}
        expected["node.json"] = hashlib.sha256(node_json.read_bytes()).hexdigest()
        assert f"{len(expected)} files copied and verified" in proc.stdout
        # The reset ended the unix port, as a reset ends a board's session.
        wait_for(lambda: board.proc.poll() is not None, 10, "the board to reset")
        on_flash = {str(p.relative_to(flash)):
                    hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in flash.rglob("*") if p.is_file()}
        assert on_flash == expected
        # Boot: the board runs the deployed main.py with the deployed node.json.
        node.set_inputs([1, 0], [16.0, 4.0])
        node.start(write_config=False)
        wait_for(lambda: node.relays() == [1, 0], 3, "the node's sump relay")
        edge = Proc("edge", ["edge", "--config", str(write_site(tmp_path, pair, 7))],
                    tmp_path)
        db = tmp_path / "var" / "gateway.sqlite"
        wait_for(lambda: db.exists() and latest(db, "ai0_current_ma"), 15,
                 "the gateway's readings of the node")
        # 16 mA through 150 ohm: 2.4 V, 2978 counts of 4095 at 3.3 V.
        value, quality = latest(db, "ai0_current_ma")
        assert quality == "good"
        assert value == pytest.approx((2978 * 22000 + 2047) // 4095 / 1000)
        assert latest(db, "di0") == (1.0, "good")
        assert latest(db, "relay0") == (1.0, "good")
        assert latest(db, "firmware_version") == (1.0, "good")
    finally:
        if edge is not None:
            edge.stop()
        node.stop()
        board.close()
        pair.close()


def test_deploy_refuses_a_bad_node_config_before_touching_the_board(tmp_path):
    bad = tmp_path / "node.json"
    bad.write_text(json.dumps({"unit_id": 900}))
    proc = groundwatch("firmware", "deploy", "--port", str(tmp_path / "no-such-port"),
                       "--config", str(bad))
    assert proc.returncode == 2
    assert "unit_id" in proc.stderr and "1..247" in proc.stderr


def test_deploy_to_a_port_without_a_board_fails_in_one_line(tmp_path):
    proc = groundwatch("firmware", "deploy", "--port", str(tmp_path / "no-such-port"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: mpremote on ")
    assert len(proc.stderr.strip().splitlines()) == 1
