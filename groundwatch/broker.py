"""An MQTT broker for the demo: a private Mosquitto if installed, else an embedded one.

The embedded broker (amqtt) speaks MQTT 3.1.1 and runs inside a Python process; it is
for demos and tests on machines without Mosquitto, not for production.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


def write_mosquitto_config(workdir: Path, port: int, persistence: bool = True) -> Path:
    """A private Mosquitto config on 127.0.0.1:port, keeping its files in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # Started as root, Mosquitto drops to user `mosquitto` and then cannot write
        # its persistence file in our directory; stay root for a private instance.
        "user root",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {workdir}/",
        f"log_dest file {workdir / 'mosquitto.log'}",
        "max_queued_messages 100000",
    ]
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_broker(workdir: Path, port: int, kind: str = "auto") -> subprocess.Popen:
    """Start a broker process on 127.0.0.1:port: Mosquitto when present (kind auto)."""
    exe = mosquitto_path() if kind in ("auto", "mosquitto") else None
    if kind == "mosquitto" and exe is None:
        raise RuntimeError("mosquitto is not installed (use --broker embedded)")
    if exe:
        conf = write_mosquitto_config(workdir, port)
        # A session of its own: a Ctrl-C at the terminal reaches only whoever
        # started it, which then stops it in order.
        return subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    log_file = (workdir / "broker.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "groundwatch.broker", str(port)],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )


async def serve_embedded(port: int) -> None:
    """Run the embedded amqtt broker on 127.0.0.1:port until SIGINT or SIGTERM."""
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {
            "allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve_embedded(int(sys.argv[1])))
