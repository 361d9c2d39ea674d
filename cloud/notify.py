"""Alarm notifications from the cloud: email and webhooks, escalation, retries.

Rules (a TOML file, `groundwatch cloud --notify notify.toml`, docs/operations.md) say
which alarms of which sites go to which channels, level by level: when a gateway's
`raised` event arrives, level 0 is notified; if neither an acknowledgement (at the
gateway, or in the cloud) nor a clear arrives within `escalate_after_s`, the next
level is, and so on. Every notification is a row of `notifications` with its result;
a failed send is retried with exponential backoff, from the table, so a restart of
the receiver loses none. Webhooks POST JSON, by default shaped for the chat bots of
WeCom (企业微信), DingTalk (钉钉) or Feishu (飞书); email goes by SMTP.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import ssl
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cloud.sidecar import RoundWorker, connect_shared
from cloud.store import utc_now
from drivers.errors import ConfigError, from_validation_error

log = logging.getLogger(__name__)

TEXT_TEMPLATE = ("【groundwatch {level_text}】{site}/{gateway} {alarm} {state} "
                 "({severity}): {message} value={value} at {ts}")
# Chat-bot bodies: {text} is the whole notification as one line of text.
PRESETS: dict[str, Any] = {
    "wecom": {"msgtype": "text", "text": {"content": "{text}"}},
    "dingtalk": {"msgtype": "text", "text": {"content": "{text}"}},
    "feishu": {"msg_type": "text", "content": {"text": "{text}"}},
    "json": {"site": "{site}", "gateway": "{gateway}", "alarm": "{alarm}",
             "state": "{state}", "severity": "{severity}", "level": "{level}",
             "message": "{message}", "value": "{value}", "ts": "{ts}",
             "text": "{text}"},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailChannel(_Strict):
    kind: Literal["email"]
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password_env: str | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    subject: str = "[groundwatch] {site} {alarm} {state} ({level_text})"
    timeout_s: float = Field(default=15.0, gt=0)


class WebhookChannel(_Strict):
    kind: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    preset: Literal["wecom", "dingtalk", "feishu", "json"] = "json"
    # A JSON body of your own; every string in it is formatted with the fields
    # ({site}, {alarm}, {text}...). Overrides the preset.
    body: dict[str, Any] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0)


Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("warning", "critical")


class Rule(_Strict):
    sites: list[str] = Field(default_factory=lambda: ["*"])
    alarms: list[str] = Field(default_factory=lambda: ["*"])
    severities: list[Severity] = Field(default_factory=lambda: list(SEVERITIES))
    levels: list[list[str]] = Field(min_length=1)
    escalate_after_s: float = Field(default=900.0, gt=0)

    def matches(self, site: str, alarm: str, severity: str | None) -> bool:
        return (("*" in self.sites or site in self.sites)
                and ("*" in self.alarms or alarm in self.alarms)
                and (severity or "warning") in self.severities)


class Retry(_Strict):
    attempts: int = Field(default=6, ge=1, le=100)
    base_s: float = Field(default=5.0, gt=0)
    max_s: float = Field(default=300.0, gt=0)


Channel = Annotated[EmailChannel | WebhookChannel, Field(discriminator="kind")]


class NotifyConfig(_Strict):
    channels: dict[str, Channel] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    retry: Retry = Field(default_factory=Retry)

    @model_validator(mode="after")
    def _check_channels(self) -> "NotifyConfig":
        for i, rule in enumerate(self.rules):
            for j, level in enumerate(rule.levels):
                for name in level:
                    if name not in self.channels:
                        raise ValueError(f"rules[{i}].levels[{j}]: no channel {name!r}")
        return self


def load_notify_config(path: str | Path) -> NotifyConfig:
    """Load and check a notification rules file; ConfigError names the key."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    try:
        return NotifyConfig.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(source, exc) from None


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_body(template: Any, fields: dict[str, str]) -> Any:
    """The template with every string formatted; the result is still JSON data."""
    if isinstance(template, str):
        return template.format_map(_Fields(fields))
    if isinstance(template, dict):
        return {k: render_body(v, fields) for k, v in template.items()}
    if isinstance(template, list):
        return [render_body(v, fields) for v in template]
    return template


class SendError(Exception):
    """A channel refused or failed a notification; the message says how."""


def send_webhook(ch: WebhookChannel, fields: dict[str, str]) -> str:
    """POST the JSON body; a 2xx with a bot's errcode/code 0 (or none) is success."""
    body = render_body(ch.body if ch.body is not None else PRESETS[ch.preset], fields)
    data = json.dumps(body, ensure_ascii=False).encode()
    req = urllib.request.Request(ch.url, data=data, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", **ch.headers})
    try:
        with urllib.request.urlopen(req, timeout=ch.timeout_s) as resp:
            status, text = resp.status, resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise SendError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SendError(f"cannot reach {ch.url.split('?')[0]}: {exc}") from None
    # WeCom and DingTalk answer 200 {"errcode": 0, ...}; Feishu 200 {"code": 0, ...}:
    # a refused message (bad key, rate limit) is a 200 with a non-zero code.
    try:
        answer = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        answer = {}
    code = answer.get("errcode", answer.get("code", 0)) if isinstance(answer, dict) else 0
    if code not in (0, "0", None):
        raise SendError(f"HTTP {status}, code {code}: "
                        f"{answer.get('errmsg') or answer.get('msg') or ''}".strip())
    return f"HTTP {status}"


def send_email(ch: EmailChannel, fields: dict[str, str]) -> str:
    msg = EmailMessage()
    msg["Subject"] = ch.subject.format_map(_Fields(fields))
    msg["From"] = ch.sender
    msg["To"] = ", ".join(ch.to)
    msg.set_content(fields["text"] + "\n")
    password = os.environ.get(ch.password_env) if ch.password_env else None
    try:
        smtp: smtplib.SMTP
        if ch.security == "ssl":
            smtp = smtplib.SMTP_SSL(ch.host, ch.port, timeout=ch.timeout_s,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout_s)
        with smtp:
            if ch.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if ch.username:
                smtp.login(ch.username, password or "")
            refused = smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        raise SendError(f"SMTP {ch.host}:{ch.port}: {exc}") from None
    if refused:
        raise SendError(f"refused recipients {sorted(refused)}")
    return f"SMTP accepted for {len(ch.to)} recipients"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    alarm TEXT NOT NULL,
    level INTEGER NOT NULL,
    channel TEXT NOT NULL,
    created_at TEXT NOT NULL,
    fields TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_s REAL NOT NULL,
    result TEXT,
    sent_at TEXT,
    UNIQUE (site, gateway, seq, level, channel)
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_attempt_s);
-- One per raised alarm and matching rule: the level reached, when the next is due,
-- and what closed it (an acknowledgement or a clear).
CREATE TABLE IF NOT EXISTS escalations (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    rule INTEGER NOT NULL,
    alarm TEXT NOT NULL,
    fields TEXT NOT NULL,
    level INTEGER NOT NULL,
    raised_s REAL NOT NULL,
    next_s REAL,
    closed_at TEXT,
    closed_by TEXT,
    PRIMARY KEY (site, gateway, seq, rule)
);
"""

Sender = Callable[[EmailChannel | WebhookChannel, dict[str, str]], str]


def send(ch: EmailChannel | WebhookChannel, fields: dict[str, str]) -> str:
    return send_email(ch, fields) if isinstance(ch, EmailChannel) else send_webhook(
        ch, fields)


class Notifier(RoundWorker):
    """Turns arriving alarm events into notifications and sends them, in a thread."""

    thread_name = "notify"

    def __init__(self, path: str | Path, cfg: NotifyConfig, *,
                 acked_in_cloud: Callable[[str, str, str, float], str | None]
                 | None = None,
                 clock: Callable[[], float] = time.time, sender: Sender = send) -> None:
        self.cfg, self.clock, self.sender = cfg, clock, sender
        # (site, gateway, alarm, since_s) -> who acknowledged it in the cloud, or None
        self.acked_in_cloud = acked_in_cloud
        self._lock = threading.Lock()
        self._db = connect_shared(str(path), _SCHEMA)
        super().__init__()

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._db.close()

    # -- arriving events (the ingest's network thread) ---------------------------

    def on_records(self, site: str, gateway: str, records: Iterable[dict[str, Any]]
                   ) -> None:
        """Open escalations for raised alarms, close them on an ack or a clear."""
        records = [r for r in records
                   if r.get("kind") == "event" and r.get("event") == "alarm"]
        if not records:
            return
        now = self.clock()
        changed = False
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for rec in records:
                    alarm, state = rec["source"], rec["state"]
                    if state == "raised":
                        changed |= self._raised(site, gateway, rec, now)
                    elif state in ("acknowledged", "cleared"):
                        changed |= self._db.execute(
                            "UPDATE escalations SET closed_at = ?, closed_by = ?, "
                            "next_s = NULL WHERE site = ? AND gateway = ? AND alarm = ? "
                            "AND seq < ? AND closed_at IS NULL",
                            (utc_now(), f"{state}: {rec.get('message') or ''}".strip(),
                             site, gateway, alarm, rec["seq"])).rowcount > 0
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if changed:
            self._wake.set()

    def _raised(self, site: str, gateway: str, rec: dict[str, Any], now: float) -> bool:
        value = rec.get("value")
        fields = {"site": site, "gateway": gateway, "alarm": rec["source"],
                  "state": rec["state"], "severity": rec.get("severity") or "",
                  "message": rec.get("message") or "", "point": rec.get("point") or "",
                  "value": "" if value is None else f"{value:g}" if isinstance(
                      value, float) else str(value),
                  "ts": rec["ts"]}
        new = False
        for i, rule in enumerate(self.cfg.rules):
            if not rule.matches(site, rec["source"], rec.get("severity")):
                continue
            next_s = now + rule.escalate_after_s if len(rule.levels) > 1 else None
            if self._db.execute(
                    "INSERT OR IGNORE INTO escalations (site, gateway, seq, rule, alarm, "
                    "fields, level, raised_s, next_s) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                    (site, gateway, rec["seq"], i, rec["source"], json.dumps(fields),
                     now, next_s)).rowcount:
                self._queue(site, gateway, rec["seq"], rec["source"], 0, rule, fields,
                            now)
                new = True
        return new

    def _queue(self, site: str, gateway: str, seq: int, alarm: str, level: int,
               rule: Rule, fields: dict[str, str], now: float) -> None:
        fields = dict(fields, level=str(level),
                      level_text="报警 alarm" if level == 0 else
                      f"升级 escalation {level}: not acknowledged after "
                      f"{rule.escalate_after_s * level:g} s")
        fields["text"] = TEXT_TEMPLATE.format_map(_Fields(fields))
        for channel in rule.levels[level]:
            self._db.execute(
                "INSERT OR IGNORE INTO notifications (site, gateway, seq, alarm, level, "
                "channel, created_at, fields, status, next_attempt_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (site, gateway, seq, alarm, level, channel, utc_now(),
                 json.dumps(fields, ensure_ascii=False), now))

    # -- the worker ----------------------------------------------------------------

    def escalate_due(self) -> int:
        """Queue the next level of every escalation due and not acknowledged."""
        now = self.clock()
        with self._lock:
            due = self._db.execute(
                "SELECT * FROM escalations WHERE closed_at IS NULL AND next_s <= ?",
                (now,)).fetchall()
        n = 0
        for row in due:
            rule = self.cfg.rules[row["rule"]] if row["rule"] < len(self.cfg.rules) else None
            who = (self.acked_in_cloud(row["site"], row["gateway"], row["alarm"],
                                       row["raised_s"]) if self.acked_in_cloud else None)
            with self._lock:
                if rule is None or who is not None:
                    self._db.execute(
                        "UPDATE escalations SET closed_at = ?, closed_by = ?, next_s = "
                        "NULL WHERE site = ? AND gateway = ? AND seq = ? AND rule = ?",
                        (utc_now(), f"acknowledged in the cloud by {who}" if who else
                         "rule removed", row["site"], row["gateway"], row["seq"],
                         row["rule"]))
                    continue
                level = row["level"] + 1
                next_s = (now + rule.escalate_after_s if level + 1 < len(rule.levels)
                          else None)
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(
                        "UPDATE escalations SET level = ?, next_s = ? WHERE site = ? AND "
                        "gateway = ? AND seq = ? AND rule = ?",
                        (level, next_s, row["site"], row["gateway"], row["seq"],
                         row["rule"]))
                    self._queue(row["site"], row["gateway"], row["seq"], row["alarm"],
                                level, rule, json.loads(row["fields"]), now)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            log.warning("alarm %s site=%s gateway=%s not acknowledged: escalated to "
                        "level %d", row["alarm"], row["site"], row["gateway"], level)
            n += 1
        return n

    def send_due(self) -> int:
        """Send every pending notification whose time has come; return how many."""
        now = self.clock()
        with self._lock:
            due = self._db.execute(
                "SELECT id, channel, fields, attempts FROM notifications WHERE "
                "status = 'pending' AND next_attempt_s <= ? ORDER BY id",
                (now,)).fetchall()
        retry = self.cfg.retry
        sent = 0
        for row in due:
            ch = self.cfg.channels.get(row["channel"])
            attempts = row["attempts"] + 1
            try:
                if ch is None:
                    raise SendError(f"channel {row['channel']!r} no longer configured")
                result, status = self.sender(ch, json.loads(row["fields"])), "sent"
                sent += 1
            except SendError as exc:
                result = str(exc)
                status = "failed" if attempts >= retry.attempts or ch is None else "pending"
                log.warning("notification %s via %s failed (attempt %d of %d): %s",
                            row["id"], row["channel"], attempts, retry.attempts, exc)
            delay_s = min(retry.max_s, retry.base_s * 2 ** (attempts - 1))
            with self._lock:
                self._db.execute(
                    "UPDATE notifications SET status = ?, attempts = ?, result = ?, "
                    "next_attempt_s = ?, sent_at = ? WHERE id = ?",
                    (status, attempts, result, self.clock() + delay_s,
                     utc_now() if status == "sent" else None, row["id"]))
        return sent

    def notifications(self, site: str | None = None, limit: int = 200
                      ) -> list[dict[str, Any]]:
        """Notifications with their results, newest first."""
        sql = ("SELECT id, site, gateway, seq, alarm, level, channel, created_at, "
               "status, attempts, result, sent_at FROM notifications")
        args: list[Any] = []
        if site is not None:
            sql += " WHERE site = ?"
            args.append(site)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args)]

    def run_once(self) -> int:
        self.escalate_due()
        return self.send_due()

    def start(self, interval_s: float = 0.5) -> None:
        super().start(interval_s)
