"""Broker credentials and TLS for both ends of the uplink: where a password comes from.

A password is read from an environment variable or from a file only its owner can
read, never from a file in the repository. Errors name the key (or option) that led
to the secret, so an installer knows what to fix. Imported by edge and cloud alike.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from drivers.errors import ConfigError

log = logging.getLogger(__name__)

PLAIN_SCHEMES = ("mqtt", "tcp")
TLS_SCHEMES = ("mqtts", "ssl")
DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """Split mqtt://host:port or mqtts://host:port; raise ValueError if it is neither."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"{url!r} has a bad port") from None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname:
        raise ValueError(f"{url!r} is not like mqtt://host:port or mqtts://host:port")
    return BrokerAddress(parsed.hostname, port or DEFAULT_PORTS[parsed.scheme],
                         parsed.scheme in TLS_SCHEMES)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """What the client trusts (ca_file; None: the system's CAs) and who it is."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def read_secret_file(path: str | Path, source: str, key: str) -> str:
    """The first line of a secret file; refuse one that group or others may access."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(source, key, f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            source, key,
            f"{path} is accessible by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, key, f"cannot read {path}: {exc}") from None
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(source, key, f"{path} is empty")
    return secret


def resolve_password(
    source: str, prefix: str, *, password: str | None = None,
    password_env: str | None = None, password_file: str | Path | None = None,
) -> str | None:
    """The password from exactly one of its three places, or None when none is given.

    `prefix` is the key path of the section ("uplink") or "" for command-line options,
    which are then named --password-env / --password-file.
    """
    given = [k for k, v in (("password", password), ("password_env", password_env),
                            ("password_file", password_file)) if v is not None]
    if len(given) > 1:
        raise ConfigError(source, _key(prefix, given[1]),
                          f"give only one of {', '.join(given)}")
    if password_env is not None:
        value = os.environ.get(password_env)
        if not value:
            raise ConfigError(source, _key(prefix, "password_env"),
                              f"environment variable {password_env} is not set")
        return value
    if password_file is not None:
        return read_secret_file(password_file, source, _key(prefix, "password_file"))
    if password is not None:
        log.warning("%s: %s is in plain text; use password_file or password_env",
                    source, _key(prefix, "password"))
    return password


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else "--" + name.replace("_", "-")


def check_tls_files(tls: TlsFiles, source: str, prefix: str) -> None:
    """Fail naming the key of a TLS file that is missing or unreadable."""
    names = {"ca_file": tls.ca_file, "cert_file": tls.cert_file,
             "key_file": tls.key_file}
    for name, path in names.items():
        key = f"{prefix}.tls_{name}" if prefix else "--" + name.replace("_", "-")
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(source, key, f"cannot read {path}")
    if (tls.cert_file is None) != (tls.key_file is None):
        key = f"{prefix}.tls_cert_file" if prefix else "--cert-file"
        raise ConfigError(source, key, "a client certificate needs both cert and key")


def apply_tls(client: mqtt.Client, tls: TlsFiles) -> None:
    """Make the client verify the broker's certificate and host name, TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    client.tls_set_context(context)
