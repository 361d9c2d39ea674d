"""The shipped Mosquitto configuration on a real Mosquitto: TLS, one credential per
gateway, ACLs that keep each gateway to its own topics, revocation on SIGHUP; and a
real gateway syncing through it to a real receiver.

The CA and the server certificate are made by the openssl command line per test run;
no key is committed.
"""

from __future__ import annotations

import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from groundwatch import provision as pv
from groundwatch.broker import mosquitto_path
from groundwatch.demo import write_site
from hil_tests.harness import (
    Proc,
    ThreadedSimulator,
    free_port,
    http_json,
    port_open,
    wait_for,
)

pytestmark = pytest.mark.hil

ROOT = Path(__file__).parents[1]
SHIPPED = ROOT / "deploy" / "mosquitto" / "groundwatch.conf"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
            "-out", str(crt), "-days", "2", "-subj", f"/CN=groundwatch test {name}")
    return key, crt


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate it signed for 127.0.0.1, and a second, unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_crt = make_ca(d, "ca")
    _, other_crt = make_ca(d, "other-ca")
    key, csr, crt = d / "server.key", d / "server.csr", d / "server.crt"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
            str(csr), "-subj", "/CN=localhost")
    ext = d / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return {"ca": ca_crt, "other_ca": other_crt, "cert": crt, "key": key}


def shipped_config(shipped: str, port: int, certs: dict[str, Path],
                             broker_dir: Path, state_dir: Path) -> str:
    """The shipped file with its paths and port moved into the test's directories."""
    moved = {
        "listener 8883": f"listener {port} 127.0.0.1",
        "certfile /etc/mosquitto/certs/server.crt": f"certfile {certs['cert']}",
        "keyfile /etc/mosquitto/certs/server.key": f"keyfile {certs['key']}",
        "password_file /etc/mosquitto/groundwatch/passwd":
            f"password_file {broker_dir / pv.PASSWD}",
        "acl_file /etc/mosquitto/groundwatch/acl": f"acl_file {broker_dir / pv.ACL}",
        "persistence_location /var/lib/mosquitto/": f"persistence_location {state_dir}/",
    }
    lines = shipped.splitlines()
    for line in moved:
        assert line in lines, f"the shipped config no longer has {line!r}"
    out = [moved.get(line, line) for line in lines]
    # Started as root, Mosquitto drops to user mosquitto, who cannot enter the test's
    # directories; a private instance stays root.
    out += ["user root", f"log_dest file {state_dir / 'mosquitto.log'}",
            "log_type all"]
    return "\n".join(out) + "\n"


@dataclass
class SecureBroker:
    port: int
    broker_dir: Path
    state_dir: Path
    pki: dict[str, Path]
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def reload(self) -> None:
        """SIGHUP: Mosquitto rereads passwd and acl, as `systemctl reload` does."""
        log = self.state_dir / "mosquitto.log"
        reloads = log.read_text().count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log.read_text().count("Reloading config") > reloads, 10,
                 "mosquitto to reload")

    def log(self) -> str:
        return (self.state_dir / "mosquitto.log").read_text(errors="replace")


@pytest.fixture
def broker(tmp_path, pki) -> Iterator[SecureBroker]:
    exe = mosquitto_path()
    assert exe, "mosquitto is not installed: apt-get install mosquitto"
    broker_dir, state_dir = tmp_path / "broker", tmp_path / "state"
    state_dir.mkdir()
    pv.provision_receiver(broker_dir)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(shipped_config(SHIPPED.read_text(), port, pki, broker_dir,
                                   state_dir))
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    b = SecureBroker(port, broker_dir, state_dir, pki, proc)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 10,
                 "mosquitto to listen")
        assert proc.poll() is None, f"mosquitto exited:\n{b.log()}"
        yield b
    finally:
        proc.kill()
        proc.wait()


class Client:
    """A paho client over TLS that records what it receives, in order."""

    def __init__(self, broker: SecureBroker, username: str | None,
                 password: str | None, ca: Path | None = None):
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[mqtt.ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[list[mqtt.ReasonCode]] = queue.Queue()
        self.dropped = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{username}",
                             protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=str(ca or broker.pki["ca"]))
        if username:
            self.c.username_pw_set(username, password)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_disconnect = lambda c, u, f, rc, p: self.dropped.set()
        self.c.reconnect_delay_set(60, 60)  # one attempt per test: no retry storms
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()
        self.reason = self.connack.get(timeout=10)

    def subscribe(self, *topics: str) -> None:
        self.c.subscribe([(t, 1) for t in topics])
        assert not any(rc.is_failure for rc in self.subacks.get(timeout=10))

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def received(self, until: bytes, timeout_s: float = 10) -> list[tuple[str, bytes]]:
        """Everything received up to and including the payload `until`."""
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while not got or got[-1][1] != until:
            got.append(self.messages.get(timeout=max(0.01, deadline - time.monotonic())))
        return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def login(broker: SecureBroker, site: str, gateway: str) -> Client:
    p = pv.provision_gateway(broker.broker_dir, site, gateway)
    broker.reload()
    return Client(broker, p.username, p.password)


def receiver(broker: SecureBroker) -> Client:
    password = pv.default_secret_file(broker.broker_dir, pv.RECEIVER_USER).read_text()
    rx = Client(broker, pv.RECEIVER_USER, password.strip())
    assert rx.reason == 0, rx.reason
    rx.subscribe("groundwatch/+/+/data", "groundwatch/+/+/status")
    return rx


def test_a_gateway_publishes_only_under_its_own_site_and_gateway(broker):
    rx = receiver(broker)
    gw = login(broker, "s1", "g1")
    neighbour = login(broker, "s2", "g1")
    assert gw.reason == 0 and neighbour.reason == 0
    neighbour.subscribe("groundwatch/s2/g1/ack")
    gw.subscribe("groundwatch/#")  # granted, but delivers only what it may read
    try:
        gw.publish("groundwatch/s2/g1/data", b"forged: another site")
        gw.publish("groundwatch/s1/g2/data", b"forged: another gateway, same site")
        gw.publish("groundwatch/s2/g1/status", b"offline")
        gw.publish("groundwatch/s2/g1/ack", b"forged ack")
        gw.publish("groundwatch/s1/g1/data", b"own")
        # The broker keeps one client's messages in order: "own" arriving after
        # nothing else means the forged ones, sent before it, were dropped.
        assert rx.received(until=b"own") == [("groundwatch/s1/g1/data", b"own")]
        neighbour.publish("groundwatch/s2/g1/ack", b"marker")  # g1@s2 may not write
        neighbour.publish("groundwatch/s2/g1/data", b"neighbour's own")
        assert rx.received(until=b"neighbour's own") == [
            ("groundwatch/s2/g1/data", b"neighbour's own")]
        # Neither the forged ack nor the neighbour's data reached the other gateway.
        time.sleep(0.5)
        assert neighbour.messages.empty()
        assert gw.messages.empty(), list(gw.messages.queue)
        denied = [ln for ln in broker.log().splitlines() if "Denied PUBLISH" in ln]
        assert len(denied) == 5, denied
    finally:
        for c in (gw, neighbour, rx):
            c.close()


def test_wrong_password_and_anonymous_clients_are_refused(broker):
    p = pv.provision_gateway(broker.broker_dir, "s1", "g1")
    broker.reload()
    for username, password in ((p.username, "not-" + p.password), (None, None),
                               ("g9@s1", p.password)):
        c = Client(broker, username, password)
        assert c.reason == "Not authorized", (username, c.reason)
        c.close()
    ok = Client(broker, p.username, p.password)
    assert ok.reason == 0
    ok.close()


def test_a_revoked_gateway_is_refused_after_sighup(broker):
    rx = receiver(broker)
    p = pv.provision_gateway(broker.broker_dir, "s1", "g1")
    broker.reload()
    gw = Client(broker, p.username, p.password)
    assert gw.reason == 0
    gw.publish("groundwatch/s1/g1/data", b"before")
    assert rx.received(until=b"before")

    assert pv.revoke(broker.broker_dir, p.username)
    assert p.username not in (broker.broker_dir / pv.ACL).read_text()
    broker.reload()
    # Mosquitto drops a connected client whose credential is gone on reload...
    assert gw.dropped.wait(10), "the revoked gateway's connection survived the reload"
    gw.close()
    # ...and refuses it from then on.
    again = Client(broker, p.username, p.password)
    assert again.reason == "Not authorized"
    again.close()
    rx.close()


def test_an_untrusted_server_certificate_is_refused(broker):
    p = pv.provision_gateway(broker.broker_dir, "s1", "g1")
    broker.reload()
    with pytest.raises(ssl.SSLCertVerificationError):
        Client(broker, p.username, p.password, ca=broker.pki["other_ca"])


def uplink_of(site_toml: str, snippet: str) -> str:
    """The demo site file with its [uplink] broker_url replaced by the snippet's lines."""
    head, _, rest = site_toml.partition("[uplink]\n")
    _, _, tail = rest.partition("\n")  # drop the demo's broker_url line
    assert rest.startswith("broker_url"), "the demo site's [uplink] has changed"
    return head + snippet + tail


def test_gateway_syncs_to_the_receiver_through_tls_with_a_provisioned_credential(
        broker, tmp_path):
    def groundwatch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "groundwatch", *args],
                              check=False, capture_output=True, text=True,
                              timeout=60)

    done = groundwatch("provision", "--site", "demo-site", "--gateway", "gw-demo",
                       "--broker-dir", str(broker.broker_dir), "--broker-url",
                       broker.url, "--ca-file", str(broker.pki["ca"]))
    assert done.returncode == 0, done.stderr
    password = (broker.broker_dir / "secrets" / "gw-demo@demo-site.secret").read_text()
    assert password.strip() not in done.stdout
    snippet = done.stdout[done.stdout.index("[uplink]"):
                          done.stdout.index("reload the broker")]
    broker.reload()

    site_path = write_site(tmp_path, broker.port, leak_at_s=1e9)
    site_path.write_text(uplink_of(site_path.read_text(), snippet))
    secret = broker.broker_dir / "secrets" / "gw-demo@demo-site.secret"

    # A secret others may read stops the gateway before it starts: exit 2, key named.
    os.chmod(secret, 0o644)
    done = groundwatch("edge", "--config", str(site_path))
    assert done.returncode == 2
    assert "uplink.password_file" in done.stderr and "0644" in done.stderr
    os.chmod(secret, 0o600)

    from edge.config import load_config

    cfg = load_config(site_path)
    assert cfg.uplink.tls and cfg.uplink.password_file == str(secret.resolve())
    sim = ThreadedSimulator(cfg)
    http_port = free_port()
    rx_secret = pv.default_secret_file(broker.broker_dir, pv.RECEIVER_USER)
    procs = {
        "cloud": Proc("cloud", [
            "cloud", "--db", str(tmp_path / "cloud.sqlite"), "--broker", broker.url,
            "--ca-file", str(broker.pki["ca"]), "--username", pv.RECEIVER_USER,
            "--password-file", str(rx_secret), "--http-port", str(http_port)],
            tmp_path),
        "edge": Proc("edge", ["edge", "--config", str(site_path)], tmp_path),
    }

    def logs() -> str:
        return "\n".join(f"--- {n}\n{p.tail()}" for n, p in procs.items())

    def devices() -> set[str]:
        try:
            points = http_json(f"http://127.0.0.1:{http_port}/api/sites/demo-site/points")
        except OSError:
            return set()
        return {p["device"] for p in points}

    try:
        wait_for(lambda: devices() >= {"tank1", "cable1", "relay1", "mw1", "mw2"}, 60,
                 f"readings of every device in the cloud over TLS\n{logs()}")
        outbox = tmp_path / "gateway" / "gateway.sqlite"
        from hil_tests.harness import query

        acked = query(outbox, "SELECT count(*) FROM readings")[0][0] - query(
            outbox, "SELECT count(*) FROM outbox")[0][0]
        assert acked > 0, "the gateway got no acknowledgement back over TLS"
        log = broker.log()
        assert "as gw-demo@demo-site" in log and "as groundwatch-cloud" in log
        assert "Denied" not in log, [ln for ln in log.splitlines() if "Denied" in ln]

        # The same gateway with a CA that did not sign the broker's certificate
        # refuses the broker, says why, and nothing of it arrives.
        assert procs["edge"].stop() == 0
        other = tmp_path / "other-ca.crt"
        other.write_bytes(broker.pki["other_ca"].read_bytes())
        site_path.write_text(site_path.read_text().replace(
            f'tls_ca_file = "{broker.pki["ca"]}"', f'tls_ca_file = "{other}"'))
        connects = log.count("as gw-demo@demo-site")
        procs["edge2"] = Proc("edge2", ["edge", "--config", str(site_path)], tmp_path)
        wait_for(lambda: "certificate verify failed" in procs["edge2"].log.read_text(),
                 20, f"the gateway to refuse the broker's certificate\n{logs()}")
        assert broker.log().count("as gw-demo@demo-site") == connects
    finally:
        for proc in procs.values():
            proc.stop()
        sim.close()
