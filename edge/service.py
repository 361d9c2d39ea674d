"""Running as a systemd service: readiness and watchdog notices, and the unit we ship.

The gateway tells systemd it is ready once its loops run, and pings the watchdog only
while every bus loop and the relay loop keep turning. A gateway whose poll loop hangs
stops pinging; systemd kills it and starts it again (`WatchdogSec=` in the unit), and
the relay module's own watchdog drops "gateway healthy" meanwhile.

The notification protocol is a datagram to the socket named by NOTIFY_SOCKET
(sd_notify(3)); it is small enough to speak directly, so the gateway needs no
libsystemd.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

UNIT_NAME = "groundwatch-edge.service"

# A config error (exit 2) will not fix itself: systemd waits for an operator instead
# of restarting the gateway every few seconds.
UNIT_TEMPLATE = """\
[Unit]
Description=groundwatch gateway: Modbus polling, local leak alarms, store and sync
Documentation=file://{docs}
After=network-online.target time-sync.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStart={python} -m groundwatch edge --config {config}
User={user}
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=2
WatchdogSec={watchdog_s}
TimeoutStopSec=20
# Secrets (broker password) come from this file, readable only by the service user.
EnvironmentFile=-/etc/groundwatch/secrets.env
LogRateLimitIntervalSec=30s
LogRateLimitBurst=2000

[Install]
WantedBy=multi-user.target
"""

# The journal is the gateway's log: keep it from filling an SD card.
JOURNALD_DROPIN = """\
[Journal]
SystemMaxUse=100M
SystemMaxFileSize=10M
MaxRetentionSec=30day
"""


def notify(state: str) -> bool:
    """Send one sd_notify message ("READY=1", "WATCHDOG=1"...); False if not a service."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """How often to ping the watchdog (half its timeout), or None when none is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None


@dataclass(frozen=True, slots=True)
class InstalledFiles:
    unit: Path
    journald: Path


def install_service(config: Path, root: Path = Path("/"), user: str = "groundwatch",
                    watchdog_s: int = 30) -> InstalledFiles:
    """Write the systemd unit and the journald size limits under `root`."""
    unit = root / "etc/systemd/system" / UNIT_NAME
    journald = root / "etc/systemd/journald.conf.d/groundwatch.conf"
    docs = Path(__file__).resolve().parents[1] / "docs" / "service.md"
    text = UNIT_TEMPLATE.format(python=sys.executable, config=config.resolve(),
                                user=user, watchdog_s=watchdog_s, docs=docs)
    for path, body in ((unit, text), (journald, JOURNALD_DROPIN)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return InstalledFiles(unit, journald)


def systemctl() -> str | None:
    """Path of systemctl where systemd runs this machine."""
    return shutil.which("systemctl") if Path("/run/systemd/system").is_dir() else None
