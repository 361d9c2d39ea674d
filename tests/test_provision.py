"""Broker credentials: the ACL generator, provisioning files, where passwords come from."""

import os
import re
import stat
import tomllib
from pathlib import Path

import pytest

from cloud.service import BrokerLogin, parse_broker_url
from drivers.errors import ConfigError
from edge.config import parse_config
from edge.uplink import uplink_credentials
from groundwatch import provision as pv
from groundwatch.cli import main
from groundwatch.credentials import read_secret_file, resolve_password

ROOT = Path(__file__).parents[1]
SITE = {"site": {"id": "sz-01"}, "gateway": {"id": "gw-01", "clock_sync": "assume"}}


def test_acl_names_every_grant_explicitly():
    registry = {"version": 1, "receivers": [{"username": "groundwatch-cloud"}],
                "gateways": [{"site": "s2", "gateway": "g1", "username": "g1@s2"},
                             {"site": "s1", "gateway": "g1", "username": "g1@s1"}]}
    body = [ln for ln in pv.acl_text(registry).splitlines()
            if ln and not ln.startswith("#")]
    assert body == [
        "user groundwatch-cloud",
        "topic read groundwatch/+/+/data",
        "topic read groundwatch/+/+/status",
        "topic read groundwatch/+/+/health",
        "topic write groundwatch/+/+/ack",
        "topic write groundwatch/+/+/command",
        "user g1@s1",
        "topic write groundwatch/s1/g1/data",
        "topic write groundwatch/s1/g1/status",
        "topic write groundwatch/s1/g1/health",
        "topic read groundwatch/s1/g1/ack",
        "topic read groundwatch/s1/g1/command",
        "user g1@s2",
        "topic write groundwatch/s2/g1/data",
        "topic write groundwatch/s2/g1/status",
        "topic write groundwatch/s2/g1/health",
        "topic read groundwatch/s2/g1/ack",
        "topic read groundwatch/s2/g1/command",
    ]
    # Lines before any `user` line would apply to every client: there are none.
    assert pv.acl_text(registry).splitlines()[0].startswith("#")


def test_usernames_of_different_pairs_differ():
    # ids may contain "."; "@" they may not, so no two (site, gateway) pairs collide
    assert pv.gateway_username("a.b", "c") != pv.gateway_username("a", "b.c")
    with pytest.raises(pv.ProvisionError):
        pv.provision_gateway(Path("/nonexistent"), "bad@site", "g1")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_provision_rotate_and_revoke(tmp_path):
    d = tmp_path / "broker"
    first = pv.provision_gateway(d, "s1", "g1")
    other = pv.provision_gateway(d, "s2", "g1")
    assert not first.rotated and first.username == "g1@s1"
    assert len(first.password) == 43 and first.password != other.password
    assert first.secret_file.read_text() == first.password + "\n"
    assert mode(first.secret_file) == 0o600 and mode(first.secret_file.parent) == 0o700
    passwd = (d / "passwd").read_text().splitlines()
    assert [ln.split(":")[0] for ln in passwd] == ["g1@s1", "g1@s2"]
    assert all(re.match(r"^[^:]+:\$7\$\d+\$", ln) for ln in passwd)  # PBKDF2-SHA512
    assert first.password not in (d / "passwd").read_text()
    assert mode(d / "passwd") & 0o007 == 0 and mode(d / "acl") & 0o007 == 0
    assert mode(d / pv.REGISTRY) == 0o600

    again = pv.provision_gateway(d, "s1", "g1")
    assert again.rotated and again.password != first.password
    assert len((d / "passwd").read_text().splitlines()) == 2

    assert pv.revoke(d, "g1@s1")
    assert [ln.split(":")[0] for ln in (d / "passwd").read_text().splitlines()] == [
        "g1@s2"]
    assert "g1@s1" not in (d / "acl").read_text()
    assert "groundwatch/s1/" not in (d / "acl").read_text()
    assert "user g1@s2" in (d / "acl").read_text()
    assert not first.secret_file.exists()
    assert not pv.revoke(d, "g1@s1")


def test_cli_prints_a_snippet_that_loads_and_hides_the_password(tmp_path, capsys):
    d = tmp_path / "broker"
    assert main(["provision", "--site", "sz-01", "--gateway", "gw-01", "--broker-dir",
                 str(d), "--broker-url", "mqtts://broker.example.com:8883"]) == 0
    out = capsys.readouterr().out
    password = (d / "secrets" / "gw-01@sz-01.secret").read_text().strip()
    assert password not in out
    snippet = out[out.index("[uplink]"):out.index("reload the broker")]
    cfg = parse_config({**SITE, **tomllib.loads(snippet)}, "site.toml", tmp_path)
    assert (cfg.uplink.host, cfg.uplink.port, cfg.uplink.tls) == (
        "broker.example.com", 8883, True)
    assert cfg.uplink.password_file == str(d.resolve() / "secrets" / "gw-01@sz-01.secret")
    assert cfg.uplink.username == "gw-01@sz-01"

    assert main(["provision", "--site", "sz-01", "--gateway", "gw-01", "--broker-dir",
                 str(d), "--show-secret"]) == 0
    out = capsys.readouterr().out
    assert "rotated" in out
    assert (d / "secrets" / "gw-01@sz-01.secret").read_text().strip() in out

    assert main(["revoke", "--site", "sz-01", "--gateway", "gw-01", "--broker-dir",
                 str(d)]) == 0
    assert main(["revoke", "--site", "sz-01", "--gateway", "gw-01", "--broker-dir",
                 str(d)]) == 1


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_file_open_to_group_or_others_is_refused(tmp_path, file_mode):
    secret = tmp_path / "mqtt.secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, file_mode)
    with pytest.raises(ConfigError) as err:
        read_secret_file(secret, "site.toml", "uplink.password_file")
    assert err.value.path == "uplink.password_file"
    assert f"{file_mode:04o}" in err.value.message and "chmod 600" in err.value.message
    os.chmod(secret, 0o600)
    assert read_secret_file(secret, "site.toml", "uplink.password_file") == "s3cret"
    os.chmod(secret, 0o400)
    assert read_secret_file(secret, "site.toml", "uplink.password_file") == "s3cret"


def site_with(tmp_path, **uplink) -> object:
    return parse_config({**SITE, "uplink": uplink}, str(tmp_path / "site.toml"),
                        tmp_path)


def test_gateway_password_from_file_env_or_plain(tmp_path, monkeypatch, caplog):
    (tmp_path / "mqtt.secret").write_text("from-file\n")
    os.chmod(tmp_path / "mqtt.secret", 0o600)
    cfg = site_with(tmp_path, username="u", password_file="mqtt.secret")  # relative
    assert uplink_credentials(cfg) == ("from-file", None)

    os.chmod(tmp_path / "mqtt.secret", 0o644)
    with pytest.raises(ConfigError) as err:
        uplink_credentials(cfg)
    assert err.value.path == "uplink.password_file"
    assert str(tmp_path / "mqtt.secret") in err.value.message

    monkeypatch.setenv("GW_MQTT_PASSWORD", "from-env")
    cfg = site_with(tmp_path, username="u", password_env="GW_MQTT_PASSWORD")
    assert uplink_credentials(cfg) == ("from-env", None)
    monkeypatch.delenv("GW_MQTT_PASSWORD")
    with pytest.raises(ConfigError) as err:
        uplink_credentials(cfg)
    assert err.value.path == "uplink.password_env"

    caplog.set_level("WARNING")
    cfg = site_with(tmp_path, username="u", password="plain")
    assert uplink_credentials(cfg) == ("plain", None)
    assert "uplink.password is in plain text" in caplog.text


@pytest.mark.parametrize("uplink, key", [
    ({"password": "a", "password_env": "B"}, "uplink"),
    ({"broker_url": "mqtt://h:1883", "tls_ca_file": "ca.crt"}, "uplink"),
    ({"broker_url": "mqtts://h", "tls_cert_file": "c.crt"}, "uplink"),
    ({"broker_url": "https://h"}, "uplink"),
])
def test_bad_uplink_security_settings_name_the_section(tmp_path, uplink, key):
    with pytest.raises(ConfigError) as err:
        site_with(tmp_path, **uplink)
    assert err.value.path == key


def test_tls_settings_resolve_against_the_site_directory(tmp_path):
    (tmp_path / "ca.crt").write_text("x")
    cfg = site_with(tmp_path, broker_url="mqtts://broker.example.com",
                    tls_ca_file="ca.crt")
    assert (cfg.uplink.port, cfg.uplink.tls) == (8883, True)
    _, tls = uplink_credentials(cfg)
    assert tls is not None and tls.ca_file == str(tmp_path / "ca.crt")
    cfg = site_with(tmp_path, broker_url="mqtts://b", tls_ca_file="missing.crt")
    with pytest.raises(ConfigError) as err:
        uplink_credentials(cfg)
    assert err.value.path == "uplink.tls_ca_file"


def test_receiver_credential_options(tmp_path):
    secret = tmp_path / "cloud.secret"
    secret.write_text("rx\n")
    os.chmod(secret, 0o600)
    address = parse_broker_url("mqtts://127.0.0.1")
    assert address.port == 8883 and address.tls
    login = BrokerLogin("groundwatch-cloud", password_file=str(secret))
    assert login.resolve(address)[0] == "rx"
    os.chmod(secret, 0o640)
    with pytest.raises(ConfigError) as err:
        login.resolve(address)
    assert err.value.path == "--password-file"
    with pytest.raises(ConfigError) as err:
        BrokerLogin(ca_file=str(secret)).resolve(parse_broker_url("mqtt://h"))
    assert err.value.path == "--ca-file"
    with pytest.raises(ConfigError):
        resolve_password("x", "", password_env="A", password_file="b")


def test_shipped_files_hold_no_secret():
    example = tomllib.loads((ROOT / "groundwatch/examples/site.toml").read_text())
    assert "password" not in example["uplink"]
    conf = (ROOT / "deploy/mosquitto/groundwatch.conf").read_text().splitlines()
    settings = {ln.split()[0]: ln.split(None, 1)[1] for ln in conf
                if ln.strip() and not ln.startswith("#")}
    assert settings["allow_anonymous"] == "false"
    assert settings["listener"] == "8883"
    assert {"certfile", "keyfile", "password_file", "acl_file"} <= settings.keys()
    assert settings["use_username_as_clientid"] == "true"
