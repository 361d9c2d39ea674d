"""Cloud side of commands and notifications: queue, resend, answers, web acks; email
against a real SMTP server (aiosmtpd), webhooks against a real HTTP server, retries
and escalation on an injected clock."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from cloud.commands import CommandError, Commands
from cloud.notify import (
    NotifyConfig, Notifier, SendError, load_notify_config, render_body, send_webhook,
)
from cloud.operations import OperationsStore
from drivers.errors import ConfigError
from groundwatch import contract


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def alarm_event(seq, state, alarm="trench-leak", message="Leak", severity="critical",
                ts="2026-12-03T10:00:00.000+00:00"):
    return {"seq": seq, "kind": "event", "ts": ts, "source": alarm, "event": "alarm",
            "state": state, "severity": severity, "point": "cable1.leak", "value": 1.0,
            "message": message}


def answer(seq, cid, state="applied", ts="2026-12-03T10:00:05.000+00:00"):
    return {"seq": seq, "kind": "event", "ts": ts, "source": cid, "event": "command",
            "state": state, "point": "trench-leak", "message": "ack by a: done"}


@pytest.fixture
def queue(tmp_path):
    sent: list[tuple[str, dict]] = []
    clock = Clock()

    def publish(topic, payload):
        sent.append((topic, contract.decode_command(payload)))
        return True

    c = Commands(tmp_path / "cloud.sqlite", publish, resend_after_s=30,
                 expire_after_s=3600, clock=clock)
    yield c, sent, clock
    c.close()


def test_ack_goes_to_the_gateway_that_reported_the_alarm_until_answered(queue):
    c, sent, clock = queue
    with pytest.raises(CommandError, match="no gateway"):
        c.send_ack("s1", "trench-leak", "alice")
    c.on_records("s1", "gw-2", [alarm_event(7, "raised")])
    cid = c.send_ack("s1", "trench-leak", "alice", "checked")
    assert c.publish_due() == 1
    topic, body = sent[-1]
    assert topic == "groundwatch/s1/gw-2/command"
    assert (body["id"], body["command"], body["alarm"], body["who"], body["comment"]) == (
        cid, "ack", "trench-leak", "alice", "checked")
    assert c.publish_due() == 0  # not due again yet
    clock.t += 30
    assert c.publish_due() == 1  # no answer in resend_after_s: sent again, same id
    assert sent[-1][1]["id"] == cid
    c.on_gateway_online("s1", "gw-2")
    assert c.publish_due() == 1  # back online: at once
    c.on_records("s1", "gw-2", [answer(8, cid)])
    clock.t += 60
    assert c.publish_due() == 0
    [row] = c.commands("s1")
    assert (row["state"], row["result"], row["sends"]) == ("done", "applied", 3)
    # An answer from another gateway, or for an unknown id, changes nothing.
    c.on_records("s1", "gw-9", [answer(9, cid, "rejected")])
    assert c.commands("s1")[0]["result"] == "applied"


def test_a_command_never_answered_expires(queue):
    c, sent, clock = queue
    c.send_maintenance("s1", "gw-1", "mw1", True, "bob", "sampling")
    assert c.publish_due() == 1
    clock.t += 3601
    assert c.publish_due() == 0
    assert c.commands("s1")[0]["state"] == "expired"


def test_alarm_states_show_the_newest_event_and_whether_acknowledged(queue):
    c, _, _ = queue
    c.on_records("s1", "gw-1", [
        alarm_event(1, "raised", ts="2026-12-03T10:00:00+00:00"),
        alarm_event(3, "acknowledged", message="acknowledged by alice in the cloud",
                    ts="2026-12-03T10:01:00+00:00")])
    # A backfilled older event does not replace the newer state.
    c.on_records("s1", "gw-1", [alarm_event(2, "raised", ts="2026-12-03T09:59:00+00:00")])
    [state] = c.alarm_states("s1")
    assert (state["state"], state["active"], state["acknowledged"], state["seq"]) == (
        "acknowledged", True, True, 3)
    assert state["message"] == "acknowledged by alice in the cloud"
    c.on_records("s1", "gw-1", [alarm_event(4, "cleared", ts="2026-12-03T10:05:00Z")])
    [state] = c.alarm_states("s1")
    assert (state["active"], state["acknowledged"]) == (False, False)


def test_web_acknowledgements_become_commands_and_are_marked_delivered(tmp_path):
    db = tmp_path / "cloud.sqlite"
    ops = OperationsStore(db)
    sent = []
    c = Commands(db, lambda topic, payload: sent.append(payload) or True)
    try:
        c.on_records("s1", "gw-1", [alarm_event(5, "raised")])
        entry = ops.add("s1", "trench-leak", "ack", "erin", "horn silenced")
        ops.add("s1", "trench-leak", "comment", "erin", "a comment is not an ack")
        assert c.run_once() == 1
        assert c.run_once() == 0  # adopted once
        body = contract.decode_command(sent[0])
        assert (body["alarm"], body["who"], body["comment"]) == (
            "trench-leak", "erin", "horn silenced")
        c.on_records("s1", "gw-1", [answer(6, body["id"])])
        [ack] = [e for e in ops.entries("s1") if e["kind"] == "ack"]
        assert ack["id"] == entry["id"]
        assert ack["delivered_at"] == "2026-12-03T10:00:05.000+00:00"
    finally:
        c.close()
        ops.close()


# -- notifications --------------------------------------------------------------------


class Hook:
    """A local HTTP server standing in for a chat bot's webhook."""

    def __init__(self, answers=None):
        self.bodies: list[dict] = []
        self.answers = list(answers or [])
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(n)))
                status, body = hook.answers.pop(0) if hook.answers else (
                    200, {"errcode": 0, "errmsg": "ok"})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send?key=k"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd
        self.messages.append((envelope.mail_from, envelope.rcpt_tos,
                              envelope.content.decode("utf-8", "replace")))
        return "250 OK"


def config(hook_url, smtp_port, escalate_after_s=60.0, **retry):
    return NotifyConfig.model_validate({
        "channels": {
            "wecom": {"kind": "webhook", "url": hook_url, "preset": "wecom"},
            "mail": {"kind": "email", "host": "127.0.0.1", "port": smtp_port,
                     "sender": "gw@example.com", "to": ["boss@example.com"]},
        },
        "rules": [{"sites": ["s1"], "levels": [["wecom"], ["mail"]],
                   "escalate_after_s": escalate_after_s}],
        "retry": {"attempts": 3, "base_s": 5, "max_s": 60, **retry},
    })


@pytest.fixture
def parts(tmp_path):
    hook = Hook()
    box = Mailbox()
    with socket.socket() as probe:  # aiosmtpd checks readiness by connecting
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(box, hostname="127.0.0.1", port=port)
    smtp.start()
    yield hook, box, port, tmp_path
    smtp.stop()
    hook.close()


def test_raised_alarm_notifies_level_0_then_escalates_to_email(parts):
    hook, box, smtp_port, tmp = parts
    clock = Clock()
    n = Notifier(tmp / "cloud.sqlite", config(hook.url, smtp_port), clock=clock)
    try:
        n.on_records("s1", "gw-1", [alarm_event(11, "raised", message="Leak 泄漏")])
        n.on_records("s1", "gw-1", [alarm_event(11, "raised")])  # a duplicate batch
        n.on_records("other", "gw-1", [alarm_event(11, "raised")])  # no rule
        assert n.run_once() == 1
        [body] = hook.bodies
        assert body["msgtype"] == "text"
        text = body["text"]["content"]
        assert "s1/gw-1 trench-leak raised (critical): Leak 泄漏" in text
        assert "value=1" in text
        clock.t += 59
        assert n.run_once() == 0
        clock.t += 1
        assert n.run_once() == 1
        [(sender, rcpts, content)] = box.messages
        assert (sender, rcpts) == ("gw@example.com", ["boss@example.com"])
        assert "escalation 1" in content and "not acknowledged after 60 s" in content
        rows = n.notifications("s1")
        assert [(r["level"], r["channel"], r["status"], r["attempts"]) for r in rows] == [
            (1, "mail", "sent", 1), (0, "wecom", "sent", 1)]
        clock.t += 600
        assert n.run_once() == 0  # no level 2
    finally:
        n.close()


def test_an_acknowledgement_or_a_cloud_ack_stops_the_escalation(parts):
    hook, box, smtp_port, tmp = parts
    clock = Clock()
    acked = {}
    n = Notifier(tmp / "cloud.sqlite", config(hook.url, smtp_port), clock=clock,
                 acked_in_cloud=lambda site, gw, alarm, since: acked.get(alarm))
    try:
        n.on_records("s1", "gw-1", [alarm_event(1, "raised"),
                                     alarm_event(2, "raised", alarm="tank-high")])
        n.run_once()
        n.on_records("s1", "gw-1", [alarm_event(3, "acknowledged",
                                                message="acknowledged by push button")])
        acked["tank-high"] = "alice"
        clock.t += 61
        assert n.run_once() == 0
        assert box.messages == []
        assert len(hook.bodies) == 2
    finally:
        n.close()


def test_a_refused_webhook_is_retried_with_backoff_and_recorded(parts):
    hook, _, smtp_port, tmp = parts
    hook.answers = [(200, {"errcode": 93000, "errmsg": "invalid webhook url"}),
                    (500, {}), (200, {"errcode": 0})]
    clock = Clock()
    n = Notifier(tmp / "cloud.sqlite", config(hook.url, smtp_port, attempts=5),
                 clock=clock)
    try:
        n.on_records("s1", "gw-1", [alarm_event(1, "raised")])
        assert n.send_due() == 0
        [row] = n.notifications()
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert row["result"] == "HTTP 200, code 93000: invalid webhook url"
        clock.t += 4.9
        assert n.send_due() == 0 and len(hook.bodies) == 1  # backoff: 5 s
        clock.t += 0.1
        assert n.send_due() == 0  # HTTP 500
        assert n.notifications()[0]["result"] == "HTTP 500"
        clock.t += 9.9
        assert n.send_due() == 0 and len(hook.bodies) == 2  # then 10 s
        clock.t += 0.1
        assert n.send_due() == 1
        [row] = n.notifications()
        assert (row["status"], row["attempts"], row["result"]) == ("sent", 3, "HTTP 200")
    finally:
        n.close()


def test_gives_up_after_the_attempts(parts):
    hook, _, smtp_port, tmp = parts
    clock = Clock()
    cfg = config("http://127.0.0.1:9/nothing-listens", smtp_port, attempts=2)
    n = Notifier(tmp / "cloud.sqlite", cfg, clock=clock)
    try:
        n.on_records("s1", "gw-1", [alarm_event(1, "raised")])
        n.send_due()
        clock.t += 5
        n.send_due()
        [row] = n.notifications()
        assert (row["status"], row["attempts"]) == ("failed", 2)
        assert row["result"].startswith("cannot reach http://127.0.0.1:9/nothing-listens")
    finally:
        n.close()


def test_templates_are_json_safe_and_presets_fit_each_bot():
    fields = {"text": 'a "quoted" line\nwith 中文', "site": "s1"}
    body = render_body({"msg_type": "text", "content": {"text": "{text}"},
                        "n": 3, "tags": ["{site}", "{unknown}"]}, fields)
    assert body == {"msg_type": "text", "content": {"text": fields["text"]}, "n": 3,
                    "tags": ["s1", "{unknown}"]}
    assert json.loads(json.dumps(body))["content"]["text"] == fields["text"]
    hook = Hook(answers=[(200, {"code": 19001, "msg": "param invalid"})])
    try:
        ch = config(hook.url, 25).channels["wecom"].model_copy(update={"preset": "feishu"})
        with pytest.raises(SendError, match="code 19001: param invalid"):
            send_webhook(ch, {"text": "hello"})  # type: ignore[arg-type]
        assert hook.bodies == [{"msg_type": "text", "content": {"text": "hello"}}]
    finally:
        hook.close()


def test_rules_file_errors_name_the_key(tmp_path):
    path = tmp_path / "notify.toml"
    path.write_text('[channels.a]\nkind = "webhook"\nurl = "http://x/"\n'
                    '[[rules]]\nlevels = [["a"], ["b"]]\n')
    with pytest.raises(ConfigError, match=r"levels\[1\]: no channel 'b'"):
        load_notify_config(path)
    path.write_text('[channels.a]\nkind = "pager"\n')
    with pytest.raises(ConfigError, match="channels.a"):
        load_notify_config(path)
    path.write_text('[channels.a]\nkind = "webhook"\nurl = "http://x/"\n'
                    '[[rules]]\nlevels = [["a"]]\nescalate_after_s = 30\n')
    cfg = load_notify_config(path)
    assert cfg.rules[0].escalate_after_s == 30 and cfg.rules[0].severities == [
        "warning", "critical"]
