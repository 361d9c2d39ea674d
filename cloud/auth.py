"""Accounts of the cloud's API and web app: users, roles, sessions, tokens, audit."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request

from cloud.sidecar import connect_shared

log = logging.getLogger(__name__)

ROLES = ("regulator", "enterprise", "engineer")
ALL_SITES = "*"
DEFAULT_SESSION_TTL_S = 8 * 3600.0
SESSION_COOKIE = "gw_session"
TOKEN_PREFIX = "gwt_"
MIN_PASSWORD_LEN = 8
# Paths anyone may call: liveness, and the login itself.
PUBLIC_PATHS = frozenset({"/api/health", "/api/auth/login", "/api/auth/logout"})

# Tables of their own (auth_*, audit_log) in the cloud's SQLite file, beside the
# store's. Session and API tokens are high-entropy random strings: only their
# SHA-256 is kept, so a copy of the database does not hold a usable credential.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    sites TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS auth_sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS auth_tokens (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    username TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    site TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_by_site ON audit_log (site, id);
"""


class AuthError(ValueError):
    """A user or token change that cannot be made (unknown user, bad role...)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user by session or token, or anyone while no account exists."""

    username: str
    role: str
    sites: frozenset[str]
    via: str

    @property
    def open(self) -> bool:
        """True while no account exists and the API is open to anyone."""
        return self.via == "open"

    def can_see(self, site: str) -> bool:
        """Regulators see every site; enterprise and engineer users their own."""
        return (self.open or self.role == "regulator" or ALL_SITES in self.sites
                or site in self.sites)

    @property
    def can_acknowledge(self) -> bool:
        """The enterprise answers its alarms; engineers too; regulators comment."""
        return self.open or self.role in ("enterprise", "engineer")

    @property
    def can_configure(self) -> bool:
        """Only engineers change a site's configuration."""
        return self.open or self.role == "engineer"

    def public(self) -> dict[str, Any]:
        """The principal as the API shows it."""
        return {"username": self.username, "role": self.role,
                "sites": sorted(self.sites), "via": self.via,
                "auth_enabled": not self.open}


OPEN = Principal("anonymous", "open", frozenset(), "open")


def _utc_iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _site_list(sites: Iterable[str]) -> list[str]:
    out = sorted({s.strip() for s in sites if s.strip()})
    return out


class AuthStore:
    """Users, sessions, API tokens and the audit log, in the cloud's SQLite file.

    The API and the `groundwatch users` CLI both talk to this class only, so another
    backend is a second implementation of these methods.
    """

    def __init__(self, path: str | Path, session_ttl_s: float = DEFAULT_SESSION_TTL_S,
                 clock: Callable[[], float] = time.time,
                 hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.session_ttl_s = session_ttl_s
        self._clock = clock
        # argon2id with RFC 9106's second recommended parameters (argon2-cffi's).
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()
        self._db = connect_shared(self.path, _SCHEMA, wal=True)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def _now_iso(self) -> str:
        return _utc_iso(self._clock())

    # -- users -----------------------------------------------------------------------

    def has_users(self) -> bool:
        """Whether any account exists: the API asks for a login only then."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM auth_users LIMIT 1").fetchone()
        return row is not None

    def add_user(self, username: str, password: str, role: str,
                 sites: Iterable[str] = (), actor: str = "cli") -> None:
        """Create a user; AuthError for a taken name, a bad role or a short password."""
        site_list = _site_list(sites)
        if not username or not username.replace("-", "").replace("_", "").replace(
                ".", "").replace("@", "").isalnum():
            raise AuthError(f"username {username!r}: letters, digits and -_.@ only")
        if role not in ROLES:
            raise AuthError(f"role {role!r}: one of {', '.join(ROLES)}")
        if role == "regulator" and site_list:
            raise AuthError("a regulator sees every site: give no --site")
        if role != "regulator" and not site_list:
            every = f" ({ALL_SITES!r} for all)" if role == "engineer" else ""
            raise AuthError(f"an {role} user needs at least one --site{every}")
        if role == "enterprise" and ALL_SITES in site_list:
            raise AuthError("an enterprise user sees its own sites only, not '*'")
        if len(password) < MIN_PASSWORD_LEN:
            raise AuthError(f"password shorter than {MIN_PASSWORD_LEN} characters")
        hashed = self._hasher.hash(password)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO auth_users (username, password_hash, role, sites, "
                    "created_at) VALUES (?, ?, ?, ?, ?)",
                    (username, hashed, role, json.dumps(site_list), self._now_iso()))
            except sqlite3.IntegrityError:
                raise AuthError(f"user {username!r} exists") from None
        self.audit(actor, "user.add", None,
                   {"username": username, "role": role, "sites": site_list})
        log.info("user %s added (%s, sites %s) by %s", username, role, site_list, actor)

    def set_password(self, username: str, password: str, actor: str = "cli") -> None:
        """Replace a user's password and end their sessions."""
        if len(password) < MIN_PASSWORD_LEN:
            raise AuthError(f"password shorter than {MIN_PASSWORD_LEN} characters")
        hashed = self._hasher.hash(password)
        with self._lock:
            cur = self._db.execute(
                "UPDATE auth_users SET password_hash = ? WHERE username = ?",
                (hashed, username))
            if cur.rowcount == 0:
                raise AuthError(f"no user {username!r}")
            self._db.execute("DELETE FROM auth_sessions WHERE username = ?",
                             (username,))
        self.audit(actor, "user.password", None, {"username": username})

    def set_disabled(self, username: str, disabled: bool = True,
                     actor: str = "cli") -> None:
        """Disable (or enable) a user: their sessions end and their tokens stop."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE auth_users SET disabled = ? WHERE username = ?",
                (int(disabled), username))
            if cur.rowcount == 0:
                raise AuthError(f"no user {username!r}")
            if disabled:
                self._db.execute("DELETE FROM auth_sessions WHERE username = ?",
                                 (username,))
        self.audit(actor, "user.disable" if disabled else "user.enable", None,
                   {"username": username})
        log.info("user %s %s by %s", username,
                 "disabled" if disabled else "enabled", actor)

    def users(self) -> list[dict[str, Any]]:
        """Every user with role, sites, disabled flag and live token count."""
        with self._lock:
            rows = self._db.execute(
                "SELECT username, role, sites, disabled, created_at, (SELECT count(*) "
                "FROM auth_tokens t WHERE t.username = u.username AND revoked_at IS "
                "NULL) AS tokens FROM auth_users u ORDER BY username").fetchall()
        return [dict(row, sites=json.loads(row["sites"]),
                     disabled=bool(row["disabled"])) for row in rows]

    def _principal_of(self, username: str, via: str) -> Principal | None:
        row = self._db.execute(
            "SELECT role, sites, disabled FROM auth_users WHERE username = ?",
            (username,)).fetchone()
        if row is None or row["disabled"]:
            return None
        return Principal(username, row["role"], frozenset(json.loads(row["sites"])),
                         via)

    # -- sessions --------------------------------------------------------------------

    def login(self, username: str, password: str) -> tuple[str, Principal] | None:
        """Check a password; return a new session token and the principal, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT password_hash, disabled FROM auth_users WHERE username = ?",
                (username,)).fetchone()
        if row is None and self._dummy_hash is None:
            # Verified against for unknown users, so that both take the same time.
            self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        stored = row["password_hash"] if row is not None else self._dummy_hash
        assert stored is not None
        try:
            self._hasher.verify(stored, password)
            ok = row is not None and not row["disabled"]
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            log.info("login refused for %r", username)
            return None
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            if self._hasher.check_needs_rehash(stored):
                self._db.execute(
                    "UPDATE auth_users SET password_hash = ? WHERE username = ?",
                    (self._hasher.hash(password), username))
            self._db.execute("DELETE FROM auth_sessions WHERE expires_at <= ?", (now,))
            self._db.execute(
                "INSERT INTO auth_sessions (token_hash, username, created_at, "
                "expires_at) VALUES (?, ?, ?, ?)",
                (_digest(token), username, _utc_iso(now), now + self.session_ttl_s))
            principal = self._principal_of(username, "session")
        assert principal is not None
        self.audit(username, "login", None, {})
        return token, principal

    def session(self, token: str) -> Principal | None:
        """The principal of a live session token, or None (unknown, expired, disabled)."""
        with self._lock:
            row = self._db.execute(
                "SELECT username, expires_at FROM auth_sessions WHERE token_hash = ?",
                (_digest(token),)).fetchone()
            if row is None:
                return None
            if row["expires_at"] <= self._clock():
                self._db.execute("DELETE FROM auth_sessions WHERE token_hash = ?",
                                 (_digest(token),))
                return None
            return self._principal_of(row["username"], "session")

    def session_expiry(self, token: str) -> float | None:
        """The epoch second a session token expires at, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT expires_at FROM auth_sessions WHERE token_hash = ?",
                (_digest(token),)).fetchone()
        return None if row is None else float(row["expires_at"])

    def logout(self, token: str) -> None:
        """End a session."""
        with self._lock:
            self._db.execute("DELETE FROM auth_sessions WHERE token_hash = ?",
                             (_digest(token),))

    # -- API tokens ------------------------------------------------------------------

    def create_token(self, username: str, name: str, actor: str = "cli") -> str:
        """Make an API token for a user; the token is shown once, only its hash kept."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            if self._principal_of(username, "token") is None:
                raise AuthError(f"no enabled user {username!r}")
            cur = self._db.execute(
                "INSERT INTO auth_tokens (token_hash, username, name, created_at) "
                "VALUES (?, ?, ?, ?)", (_digest(token), username, name, self._now_iso()))
            token_id = cur.lastrowid
        self.audit(actor, "token.create", None,
                   {"username": username, "name": name, "id": token_id})
        return token

    def revoke_token(self, token_id: int, actor: str = "cli") -> None:
        """Revoke an API token by its id."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE auth_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS "
                "NULL", (self._now_iso(), token_id))
            if cur.rowcount == 0:
                raise AuthError(f"no live token with id {token_id}")
        self.audit(actor, "token.revoke", None, {"id": token_id})

    def tokens(self, username: str | None = None) -> list[dict[str, Any]]:
        """API tokens (never their value): id, user, name, created, last used, revoked."""
        sql = ("SELECT id, username, name, created_at, last_used, revoked_at "
               "FROM auth_tokens")
        args: tuple[Any, ...] = ()
        if username is not None:
            sql += " WHERE username = ?"
            args = (username,)
        with self._lock:
            return [dict(row) for row in self._db.execute(sql + " ORDER BY id", args)]

    def token(self, token: str) -> Principal | None:
        """The principal of a live API token, or None."""
        digest = _digest(token)
        with self._lock:
            row = self._db.execute(
                "SELECT id, username FROM auth_tokens WHERE token_hash = ? AND "
                "revoked_at IS NULL", (digest,)).fetchone()
            if row is None:
                return None
            principal = self._principal_of(row["username"], "token")
            if principal is not None:
                self._db.execute("UPDATE auth_tokens SET last_used = ? WHERE id = ?",
                                 (self._now_iso(), row["id"]))
            return principal

    # -- audit -----------------------------------------------------------------------

    def audit(self, actor: str, action: str, site: str | None,
              detail: dict[str, Any]) -> int:
        """Append who did what, when, on which site; return the entry's id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO audit_log (ts, actor, action, site, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (self._now_iso(), actor, action, site,
                 json.dumps(detail, ensure_ascii=False, separators=(",", ":"))))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def audit_entries(self, site: str | None = None, limit: int = 200,
                      sites: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Audit entries newest first: of one site, of some sites, or all."""
        sql = "SELECT id, ts, actor, action, site, detail FROM audit_log"
        args: list[Any] = []
        if site is not None:
            sql += " WHERE site = ?"
            args.append(site)
        elif sites is not None:
            wanted = sorted(sites)
            sql += f" WHERE site IN ({','.join('?' * len(wanted))})"
            args.extend(wanted)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [dict(row, detail=json.loads(row["detail"])) for row in rows]

    # -- requests --------------------------------------------------------------------

    def principal(self, request: Request) -> Principal | None:
        """Who sent the request: a bearer token, else the session cookie; OPEN while
        no account exists."""
        if not self.has_users():
            return OPEN
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return self.token(header[7:].strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.session(cookie) if cookie else None


def principal_of(request: Request) -> Principal | None:
    """The principal the guard put on the request, if any."""
    return getattr(request.state, "principal", None)


def can_see(request: Request, site: str) -> bool:
    """Whether the request's caller may read this site."""
    principal = principal_of(request)
    return principal is not None and principal.can_see(site)


def make_guard(auth: AuthStore) -> Callable[[Request], None]:
    """A FastAPI dependency guarding every /api/ path but the public ones.

    It answers 401 without a live session or token, and 403 for a path naming a site
    (`{site}`) that the caller may not see, whether or not that site exists.
    """

    def guard(request: Request) -> None:
        path = request.url.path
        if not path.startswith("/api/") or path in PUBLIC_PATHS:
            return
        principal = auth.principal(request)
        if principal is None:
            raise HTTPException(401, detail="log in or send a bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        site = request.path_params.get("site")
        if site is not None and not principal.can_see(site):
            log.info("user %s refused site=%s (%s)", principal.username, site, path)
            raise HTTPException(403, detail=f"no access to site {site!r}")

    return guard
