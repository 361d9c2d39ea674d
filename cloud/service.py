"""`groundwatch cloud`: the MQTT ingestor and the HTTP API in one process."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from types import FrameType

import uvicorn

from cloud.api import create_app
from cloud.auth import DEFAULT_SESSION_TTL_S, AuthStore
from cloud.commands import Commands
from cloud.ingest import Ingestor
from cloud.notify import Notifier, load_notify_config
from cloud.store import CloudStore
from cloud.store_pg import PgStore, is_postgres_url
from drivers.errors import ConfigError
from groundwatch import credentials
from groundwatch.credentials import BrokerAddress, TlsFiles

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL = 0, 1
DEFAULT_CLIENT_ID = "groundwatch-cloud"
# Batches handled at once. SQLite commits one at a time, but a second thread decodes
# and checks the next batch meanwhile; PostgreSQL takes concurrent writers.
PG_WRITERS, SQLITE_WRITERS = 4, 2
DEFAULT_PG_AUTH_DB = "cloud-auth.sqlite"


def parse_broker_url(url: str) -> BrokerAddress:
    """Host, port and TLS of a mqtt(s)://host:port URL; ConfigError if not one."""
    try:
        return credentials.parse_broker_url(url)
    except ValueError as exc:
        raise ConfigError("--broker", "", str(exc)) from None


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """The receiver's own broker credential and TLS files (command-line options)."""

    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def resolve(self, address: BrokerAddress) -> tuple[str | None, TlsFiles | None]:
        """The password and TLS files; ConfigError names the option at fault."""
        password = credentials.resolve_password(
            "groundwatch cloud", "", password_env=self.password_env,
            password_file=self.password_file)
        if password is not None and not self.username:
            raise ConfigError("groundwatch cloud", "--username",
                              "a password needs a username")
        tls = TlsFiles(self.ca_file, self.cert_file, self.key_file)
        if not address.tls:
            if tls != TlsFiles():
                raise ConfigError("groundwatch cloud", "--ca-file",
                                  "TLS files need a mqtts:// --broker")
            return password, None
        credentials.check_tls_files(tls, "groundwatch cloud", "")
        return password, tls


def open_store(db: str) -> CloudStore | PgStore:
    """The store a --db value names: a postgresql:// URL, else a SQLite file path."""
    return PgStore(db) if is_postgres_url(db) else CloudStore(db)


def _bind(host: str, port: int) -> socket.socket:
    """Bind the HTTP listening socket, so port 0 resolves before the log line."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE,
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _safe_db(db: str) -> str:
    """A --db value for logs: a URL loses its password."""
    if not is_postgres_url(db):
        return db
    head, sep, tail = db.rpartition("@")
    if not sep:
        return db
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':')[0]}@{tail}"


def run_cloud(
    db: str, broker_url: str, http_host: str, http_port: int, offline_after_s: float,
    login: BrokerLogin | None = None, share_group: str | None = None,
    auth_db: str | None = None, session_ttl_s: float = DEFAULT_SESSION_TTL_S,
    notify_path: str | None = None,
) -> int:
    """Run ingest and the API until SIGINT or SIGTERM; return the exit code."""
    notify_cfg = load_notify_config(notify_path) if notify_path else None
    if share_group is not None and (
            not share_group or any(c in share_group for c in "/+#")):
        raise ConfigError("--share-group", "", f"{share_group!r} is not a share name "
                          "(no '/', '+' or '#')")
    address = parse_broker_url(broker_url)
    broker_host, broker_port = address.host, address.port
    login = login or BrokerLogin()
    password, tls = login.resolve(address)
    try:
        sock = _bind(http_host, http_port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", http_host, http_port, exc)
        return EXIT_FAIL
    try:
        store = open_store(db)
    except Exception as exc:  # noqa: BLE001 - any database failure ends the start
        log.error("cannot open the database %s: %s", _safe_db(db),
                  " ".join(str(exc).split()))
        sock.close()
        return EXIT_FAIL
    # Members of a share group each need their own client id (one session each).
    client_id = (f"{DEFAULT_CLIENT_ID}-{share_group}-{socket.gethostname()}-"
                 f"{os.getpid()}" if share_group else DEFAULT_CLIENT_ID)
    ingestor = Ingestor(store, broker_host, broker_port, client_id=client_id,
                        username=login.username, password=password, tls=tls,
                        share_group=share_group,
                        writers=(PG_WRITERS if isinstance(store, PgStore)
                                 else SQLITE_WRITERS))
    # Accounts are kept in SQLite: the store's own file, or --auth-db beside PostgreSQL.
    auth = AuthStore(auth_db or (DEFAULT_PG_AUTH_DB if is_postgres_url(db) else db),
                     session_ttl_s=session_ttl_s)
    if not auth.has_users():
        log.warning("no accounts in %s: the API and web app are open to anyone who "
                    "reaches them (groundwatch users add ...)", auth.path)
    app = create_app(store, ingestor, offline_after_s=offline_after_s, auth=auth)
    # Commands to gateways and notifications live in SQLite beside the accounts.
    commands = Commands(auth.path, ingestor.publish)
    ingestor.listeners.append(commands)
    app.state.commands = commands
    notifier = None
    if notify_cfg is not None:
        notifier = Notifier(auth.path, notify_cfg,
                            acked_in_cloud=commands.acknowledged_since)
        ingestor.listeners.append(notifier)
        log.info("notifications: %d rules, %d channels from %s", len(notify_cfg.rules),
                 len(notify_cfg.channels), notify_path)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # uvicorn handles the signal first, then re-raises it here once it has stopped.
        server.should_exit = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    bound_host, bound_port = sock.getsockname()[:2]
    host_text = f"[{bound_host}]" if ":" in bound_host else bound_host
    log.info("cloud receiver: HTTP on http://%s:%s/api, broker %s://%s:%s, db %s%s",
             host_text, bound_port, "mqtts" if tls else "mqtt", broker_host,
             broker_port, _safe_db(db),
             f", share group {share_group}" if share_group else "")
    ingestor.start()
    commands.start()
    if notifier is not None:
        notifier.start()
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits on a failed startup
        log.error("HTTP server failed to start (%s)", exc.code)
        return EXIT_FAIL
    finally:
        ingestor.stop()
        commands.close()
        if notifier is not None:
            notifier.close()
        store.close()
        auth.close()
        sock.close()
    log.info("cloud receiver stopped")
    return EXIT_OK
