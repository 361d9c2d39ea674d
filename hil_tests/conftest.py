"""Fixtures for HIL tests: a running simulated site with real processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.config import SiteConfig, load_config
from groundwatch.demo import write_site
from hil_tests.harness import PrivateMosquitto, Proc, ThreadedSimulator, free_port


@dataclass
class Site:
    workdir: Path
    config_path: Path
    cfg: SiteConfig
    broker: PrivateMosquitto
    http_port: int
    cloud_db: Path
    procs: dict[str, Proc]
    sim: ThreadedSimulator | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def gateway_db(self) -> Path:
        return self.cfg.data_dir / "gateway.sqlite"

    def start_cloud(self, *extra: str) -> None:
        self.procs["cloud"] = Proc("cloud", [
            "cloud", "--db", str(self.cloud_db), "--broker", self.broker.url,
            "--http-port", str(self.http_port), *extra], self.workdir)

    def start_edge(self) -> None:
        self.procs["edge"] = Proc("edge", ["edge", "--config", str(self.config_path)],
                                  self.workdir)

    def start_sim(self, speed: float = 900.0) -> None:
        self.sim = ThreadedSimulator(self.cfg, speed=speed)

    def logs(self) -> str:
        return "\n".join(f"--- {n}.log\n{p.tail()}" for n, p in self.procs.items())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The demo site's devices, a private broker; processes started by the test."""
    broker = PrivateMosquitto(tmp_path / "broker")
    broker.start()
    config_path = write_site(tmp_path, broker.port, leak_at_s=1e9)
    s = Site(tmp_path, config_path, load_config(config_path), broker, free_port(),
             tmp_path / "cloud.sqlite", {})
    try:
        yield s
    finally:
        for proc in s.procs.values():
            proc.stop()
        if s.sim is not None:
            s.sim.close()
        broker.stop()
