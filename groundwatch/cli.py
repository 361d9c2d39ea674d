"""The `groundwatch` command: one program, a subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from drivers.errors import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _cmd_edge(args: argparse.Namespace) -> int:
    from edge.gateway import run_gateway

    return run_gateway(args.config)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from groundwatch.sim.server import run_simulate

    return run_simulate(args.config, speed=args.speed, duration_s=args.duration)


def _cmd_cloud(args: argparse.Namespace) -> int:
    from cloud.service import BrokerLogin, run_cloud

    login = BrokerLogin(args.username, args.password_env, args.password_file,
                        args.ca_file, args.cert_file, args.key_file)
    return run_cloud(
        db=args.db, broker_url=args.broker, http_host=args.http_host,
        http_port=args.http_port, offline_after_s=args.offline_after, login=login,
        share_group=args.share_group, auth_db=args.auth_db,
        session_ttl_s=args.session_hours * 3600.0, notify_path=args.notify,
    )


def _provision_target(args: argparse.Namespace) -> str:
    from groundwatch import provision as pv

    if args.receiver:
        if args.site or args.gateway:
            raise pv.ProvisionError("--receiver takes no --site/--gateway")
        return str(args.username)
    if not (args.site and args.gateway):
        raise pv.ProvisionError("give --site and --gateway (or --receiver)")
    return pv.gateway_username(args.site, args.gateway)


def _cmd_provision(args: argparse.Namespace) -> int:
    from pathlib import Path

    from groundwatch import provision as pv

    _provision_target(args)
    broker_dir = Path(args.broker_dir)
    secret = Path(args.secret_file) if args.secret_file else None
    if args.receiver:
        p = pv.provision_receiver(broker_dir, args.username, secret)
    else:
        p = pv.provision_gateway(broker_dir, args.site, args.gateway, secret)
    print(f"{'rotated the password of' if p.rotated else 'provisioned'} {p.username} "
          f"in {broker_dir}; secret in {p.secret_file} (mode 0600)")
    if args.show_secret:
        print(f"password: {p.password}")
    if args.receiver:
        ca = f" --ca-file {args.ca_file}" if args.ca_file else ""
        print(f"run the receiver with:\n  groundwatch cloud --broker {args.broker_url}"
              f"{ca} --username {p.username} --password-file {p.secret_file}")
    else:
        print("site file (copy the secret to the gateway, owner-only, and point "
              "password_file at it):")
        print(pv.uplink_snippet(p, args.broker_url, args.ca_file), end="")
    print("reload the broker: systemctl reload mosquitto (or kill -HUP its pid)")
    return EXIT_OK


def _cmd_revoke(args: argparse.Namespace) -> int:
    from pathlib import Path

    from groundwatch import provision as pv

    username = _provision_target(args)
    if not pv.revoke(Path(args.broker_dir), username):
        print(f"error: {username} is not provisioned in {args.broker_dir}",
              file=sys.stderr)
        return EXIT_FAIL
    print(f"revoked {username}; reload the broker: systemctl reload mosquitto "
          "(or kill -HUP its pid)")
    return EXIT_OK


def _cmd_users(args: argparse.Namespace) -> int:
    from groundwatch.users_cli import run_users

    return run_users(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from groundwatch.demo import run_demo

    return run_demo(
        duration_s=args.duration, http_port=args.http_port, workdir=args.workdir,
        speed=args.speed, broker_kind=args.broker,
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from groundwatch.poll_plan import check_site, format_plan

    cfg, plans = check_site(args.config)
    n_points = sum(len(m.points) for m in cfg.maps.values())
    print(
        f"{args.config}: site {cfg.site.id}, gateway {cfg.gateway.id}: "
        f"{len(cfg.buses)} buses, {len(cfg.maps)} devices, {n_points} points, "
        f"{len(cfg.alarms)} alarms, {len(cfg.relays)} relays: OK"
    )
    for line in format_plan(plans):
        print(line)
    return EXIT_OK


def _quiet_pymodbus(args: argparse.Namespace) -> None:
    """pymodbus logs every refused connection and timeout; the commands report them."""
    if not args.verbose:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _cli_bus(args: argparse.Namespace, timeout_s: float) -> Any:
    from groundwatch.commission import bus_from_options

    return bus_from_options(
        tcp=args.tcp, rtu=args.rtu, rtu_over_tcp=args.rtu_over_tcp, baudrate=args.baud,
        parity=args.parity, stopbits=args.stopbits, timeout_s=timeout_s,
    )


def _cmd_scan(args: argparse.Namespace) -> int:
    from groundwatch import commission as c

    _quiet_pymodbus(args)
    bus = _cli_bus(args, args.timeout)
    units = c.parse_units(args.units)
    if bus.kind != "tcp" and 0 in units:
        raise c.UsageError("--units: unit 0 is the RTU broadcast address; no slave "
                           "answers it")
    table = c.FUNCTION_TABLES[args.function]
    link = c.open_link(bus)
    found: list[c.Probe] = []
    t0 = time.monotonic()
    try:
        for probe in c.scan(link, units, table, args.register, args.timeout):
            if probe.present:
                found.append(probe)
                if not args.json:
                    print(f"unit {probe.unit:3}: {probe.detail} "
                          f"({probe.elapsed_s * 1000:.0f} ms)", flush=True)
    except c.LinkDown as exc:
        if args.json:
            print(json.dumps({"bus": c.describe_bus(bus), "error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        link.close()
    elapsed_s = time.monotonic() - t0
    ids = [p.unit for p in found]
    if args.json:
        print(json.dumps({
            "bus": c.describe_bus(bus), "table": table, "register": args.register,
            "probed": len(units), "units": ids,
            "found": [{"unit": p.unit, "detail": p.detail,
                       "elapsed_s": round(p.elapsed_s, 4)} for p in found],
            "elapsed_s": round(elapsed_s, 3), "error": None,
        }))
    else:
        listed = ", ".join(map(str, ids)) or "none"
        print(f"{c.describe_bus(bus)}: {len(ids)} of {len(units)} unit(s) answered: "
              f"{listed} ({elapsed_s:.1f} s)")
    return EXIT_OK if found else EXIT_FAIL


def _cmd_read(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from groundwatch import commission as c

    _quiet_pymodbus(args)
    bus_given = bool(args.tcp or args.rtu or args.rtu_over_tcp)
    if args.config:
        if bus_given or not args.device:
            raise c.UsageError("--config needs --device (and no --tcp/--rtu/"
                               "--rtu-over-tcp: the bus comes from the site file)")
        cfg = load_config(args.config)
        bus, unit, dmap = c.device_map(cfg, args.device, args.point)
        timeout_s = args.timeout or c.device_timeout_s(cfg, args.device)
        link = c.open_link(bus)

        def read() -> Any:
            return c.read_points(link, args.device, unit, dmap, timeout_s)
    else:
        if args.device or args.point:
            raise c.UsageError("--device and --point need --config")
        if args.register is None:
            raise c.UsageError("--register is required (or --config and --device)")
        timeout_s = args.timeout or 1.0
        bus = _cli_bus(args, timeout_s)
        req = c.register_request(args.unit, args.function, args.register, args.count,
                                 args.type, args.order, args.scale, args.offset)
        link = c.open_link(bus)

        def read() -> Any:
            return c.read_registers(link, req, timeout_s)

    failed = 0
    try:
        for result in c.repeat(read, args.repeat, args.interval):
            failed += not result.ok
            if args.json:
                print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)
            elif hasattr(result, "lines"):
                print("\n".join(result.lines()), flush=True)
            else:
                print(result.line(), flush=True)
    finally:
        link.close()
    return EXIT_FAIL if failed else EXIT_OK


def _cmd_write_coil(args: argparse.Namespace) -> int:
    from groundwatch import commission as c

    _quiet_pymodbus(args)
    bus = _cli_bus(args, args.timeout)
    link = c.open_link(bus)
    try:
        check = c.write_and_verify(link, args.unit, args.address, args.state == "on",
                                   args.timeout)
    finally:
        link.close()
    print(json.dumps(check.to_json()) if args.json else check.line())
    return EXIT_OK if check.ok else EXIT_FAIL


def _cmd_test_relay(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from groundwatch import commission as c

    _quiet_pymodbus(args)
    cfg = load_config(args.config)
    target = c.relay_target(cfg, args.relay)
    timeout_s = args.timeout or target.timeout_s
    print(f"relay {target.name}: {target.device}.{target.point} = unit {target.unit} "
          f"coil {target.address} on {c.describe_bus(target.bus)}"
          f"{'' if target.active_high else ' (active low: on = coil off)'}; "
          f"holding {args.hold:g} s", flush=True)
    link = c.open_link(target.bus)
    try:
        checks = c.relay_test(link, target, args.hold, timeout_s,
                              lambda check: print(check.line(), flush=True))
    finally:
        link.close()
    ok = all(check.ok for check in checks)
    print(f"relay {target.name}: {'OK' if ok else 'FAILED'}")
    return EXIT_OK if ok else EXIT_FAIL


def _cmd_ack(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.store import EdgeStore

    cfg = load_config(args.config)
    if args.alarm not in {a.name for a in cfg.alarms}:
        print(f"error: no alarm {args.alarm!r} in {args.config}", file=sys.stderr)
        return EXIT_FAIL
    store = EdgeStore(cfg.data_dir / "gateway.sqlite")
    store.request_ack(args.alarm, who=args.who)
    store.close()
    print(f"acknowledgement of {args.alarm} queued; the gateway applies it on its next poll")
    return EXIT_OK


def _cmd_maintenance(args: argparse.Namespace) -> int:
    from datetime import datetime

    from edge.config import load_config
    from edge.store import EdgeStore

    cfg = load_config(args.config)
    device, _, point = args.target.partition(".")
    if device not in cfg.maps or (point and point not in cfg.maps[device].points):
        print(f"error: no device or point {args.target!r} in {args.config}",
              file=sys.stderr)
        return EXIT_FAIL
    until = None
    if args.until:
        try:
            parsed = datetime.fromisoformat(args.until)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise ConfigError("groundwatch maintenance", "--until",
                              f"{args.until!r} is not ISO 8601 with an offset")
        until = parsed.isoformat()
    store = EdgeStore(cfg.data_dir / "gateway.sqlite")
    store.request_maintenance(args.target, args.state == "on", who=args.who,
                              reason=args.reason, until=until)
    store.close()
    print(f"maintenance {args.state} for {args.target} queued; the gateway applies it "
          "on its next poll")
    return EXIT_OK


def _cmd_command(args: argparse.Namespace) -> int:
    from cloud.commands import CommandError, Commands

    commands = Commands(args.db)
    try:
        if args.action == "list":
            for c in commands.commands(args.site):
                what = c["body"].get("alarm") or c["body"].get("target")
                print(f"{c['created_at']} {c['id']} {c['gateway']} {c['kind']} {what} "
                      f"by {c['who']}: {c['state']}"
                      + (f" ({c['result']}: {c['message']})" if c["result"] else ""))
            return EXIT_OK
        if not args.target:
            raise ConfigError("groundwatch command", "target", "is required")
        if args.action == "ack":
            cid = commands.send_ack(args.site, args.target, args.who, args.comment,
                                    args.gateway)
        else:
            if args.state is None or not args.gateway:
                raise ConfigError("groundwatch command", "--gateway/state",
                                  "maintenance needs --gateway and on or off")
            cid = commands.send_maintenance(args.site, args.gateway, args.target,
                                            args.state == "on", args.who, args.reason,
                                            args.until)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        commands.close()
    print(f"command {cid} queued; the receiver sends it to the gateway")
    return EXIT_OK


def _cmd_hj212(args: argparse.Namespace) -> int:
    import json

    from cloud.hj212 import Hj212Error, parse, verify_line

    if args.action == "forward":
        return _hj212_forward(args)
    bad = 0
    for n, line in enumerate(sys.stdin, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        result = verify_line(line)
        if result["ok"] and args.strict:
            try:
                parse(line, strict_length=True)
            except Hj212Error as exc:
                result = {"ok": False, "error": str(exc)}
        bad += not result["ok"]
        if args.json:
            print(json.dumps({"line": n, **result}, ensure_ascii=False))
        else:
            print(f"{n}: " + ("ok" if result["ok"] else f"BAD: {result['error']}"))
    return EXIT_FAIL if bad else EXIT_OK


def _hj212_forward(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cloud.hj212_forward import Forwarder, load_forward_config

    if not args.forward_config:
        raise ConfigError("hj212 forward", "--forward-config", "is required")
    cfg = load_forward_config(args.forward_config)
    fwd = Forwarder(args.db, cfg, Path(args.db).with_suffix(".hj212-cursor.json"))
    try:
        if args.once:
            fwd.run_once()
        else:
            fwd.run(args.interval)
    finally:
        fwd.close()
    print(json.dumps(fwd.stats)) if args.json else print(
        f"sent {fwd.stats['readings']} readings in {fwd.stats['answered']} answered "
        f"packets ({fwd.stats['resends']} resends, {fwd.stats['failures']} failures)")
    return EXIT_FAIL if fwd.stats["failures"] else EXIT_OK


def _cmd_install_service(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    from edge.config import load_config
    from edge.service import UNIT_NAME, install_service, systemctl

    load_config(args.config)  # a broken site file is reported now, not at boot
    files = install_service(Path(args.config), Path(args.root), args.user, args.watchdog)
    print(f"wrote {files.unit}\nwrote {files.journald}")
    if args.enable:
        ctl = systemctl()
        if ctl is None or args.root != "/":
            print("error: --enable needs systemd running on this machine", file=sys.stderr)
            return EXIT_FAIL
        for cmd in ([ctl, "daemon-reload"], [ctl, "enable", "--now", UNIT_NAME]):
            subprocess.run(cmd, check=True)
        print(f"{UNIT_NAME} enabled and started; logs: journalctl -u {UNIT_NAME}")
    else:
        print(f"then: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")
    return EXIT_OK


def _cmd_leak_test(args: argparse.Namespace) -> int:
    from groundwatch.leak_cli import format_result, run_leak_test

    out = run_leak_test(args.stream, args.tank)
    print(json.dumps(out) if args.json else format_result(out))
    return EXIT_OK


def _cmd_leak_eval(args: argparse.Namespace) -> int:
    from groundwatch.leak_cli import format_eval, run_leak_eval

    doc = run_leak_eval(args.n, args.seed)
    print(json.dumps(doc) if args.json else "\n".join(format_eval(doc)))
    return EXIT_OK


def _cmd_trend(args: argparse.Namespace) -> int:
    from groundwatch import gw_cli

    out = gw_cli.trend_of_file(args.file, args.well, args.constituent,
                               args.decimal_years)
    print(gw_cli.dumps(out) if args.json else gw_cli.format_trend(out))
    return EXIT_OK


def _cmd_flow(args: argparse.Namespace) -> int:
    from groundwatch import gw_cli

    out = gw_cli.flow_of_file(args.file)
    print(gw_cli.dumps(out) if args.json else gw_cli.format_flow(out))
    return EXIT_OK


def _cmd_profiles(args: argparse.Namespace) -> int:
    from drivers.profile import builtin_profiles, load_profile

    for name in builtin_profiles():
        prof = load_profile(name)
        print(f"{name:16} {len(prof.points):3} points  {prof.description}")
    return EXIT_OK


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 to 65535)")
    return port


def _positive(text: str) -> float:
    """An argparse type: a number of seconds (or a speed) above zero."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be above zero")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundwatch",
        description="Soil and groundwater leak monitoring: gateway, simulators, cloud.",
        epilog="example: groundwatch demo --duration 60",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str,
            example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_, description=help_, epilog=f"example: {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        return p

    p = add("edge", _cmd_edge, "run the gateway: poll, alarm, store, sync",
            "groundwatch edge --config site.toml")
    p.add_argument("--config", required=True, help="site configuration (TOML)")

    p = add("simulate", _cmd_simulate,
            "serve the site's devices from recorded data (Modbus TCP and RTU on ptys)",
            "groundwatch simulate --config site.toml --speed 900")
    p.add_argument("--config", required=True, help="site configuration (TOML)")
    p.add_argument("--speed", type=_positive, default=900.0,
                   help="recorded seconds per real second (900: one 15-min record/s)")
    p.add_argument("--duration", type=_positive, default=None,
                   help="stop after S seconds")

    p = add("cloud", _cmd_cloud,
            "run the cloud receiver: ingest over MQTT, acknowledge, serve HTTP JSON",
            "groundwatch cloud --db cloud.sqlite --broker mqtt://127.0.0.1:1883")
    p.add_argument("--db", default="cloud.sqlite",
                   help="SQLite file (default cloud.sqlite) or a PostgreSQL URL "
                   "(postgresql://HOST/DBNAME)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL")
    p.add_argument("--share-group", metavar="NAME",
                   help="share the data topics with the other receivers of this group "
                   "(MQTT shared subscription; use with a PostgreSQL --db)")
    p.add_argument("--http-host", default="127.0.0.1", help="HTTP bind address")
    p.add_argument("--http-port", type=_port, default=8080,
                   help="HTTP port (default 8080)")
    p.add_argument("--offline-after", type=float, default=120.0,
                   help="seconds of silence before a gateway shows offline")
    p.add_argument("--auth-db", metavar="PATH",
                   help="SQLite file of the web accounts (default: the --db file; "
                   "cloud-auth.sqlite with a PostgreSQL --db)")
    p.add_argument("--session-hours", type=float, default=8.0,
                   help="a web login expires after this many hours (8)")
    p.add_argument("--notify", metavar="TOML",
                   help="alarm notification rules: email and webhook channels, "
                   "escalation (docs/operations.md)")
    p.add_argument("--username", help="the receiver's broker username")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-env", metavar="VAR",
                   help="environment variable holding the broker password")
    g.add_argument("--password-file", metavar="PATH",
                   help="file holding the broker password (mode 0600)")
    p.add_argument("--ca-file", help="CA certificate the broker's must chain to "
                   "(mqtts://; default: the system's CAs)")
    p.add_argument("--cert-file", help="client certificate (optional, with --key-file)")
    p.add_argument("--key-file", help="client private key")

    def target_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--site", help="site id")
        p.add_argument("--gateway", help="gateway id")
        p.add_argument("--receiver", action="store_true",
                       help="a cloud receiver's credential instead of a gateway's")
        p.add_argument("--username", default="groundwatch-cloud",
                       help="the receiver's username (groundwatch-cloud)")
        p.add_argument("--broker-dir", required=True,
                       help="the broker's directory: passwd, acl, gateways.json")

    p = add("provision", _cmd_provision,
            "create (or rotate) a gateway's broker credential and ACL entry; print "
            "its [uplink] lines",
            "groundwatch provision --site sz-demo-01 --gateway gw-01 "
            "--broker-dir /etc/mosquitto/groundwatch "
            "--broker-url mqtts://broker.example.com:8883")
    target_options(p)
    p.add_argument("--broker-url", default="mqtts://BROKER-HOST:8883",
                   help="written into the printed snippet")
    p.add_argument("--ca-file", default="/etc/groundwatch/ca.crt",
                   help="the CA certificate's path on the gateway, for the snippet")
    p.add_argument("--secret-file", help="where to write the password (default "
                   "BROKER_DIR/secrets/USERNAME.secret)")
    p.add_argument("--show-secret", action="store_true", help="also print the password")

    p = add("revoke", _cmd_revoke,
            "remove a gateway's broker credential and ACL entry",
            "groundwatch revoke --site sz-demo-01 --gateway gw-01 "
            "--broker-dir /etc/mosquitto/groundwatch")
    target_options(p)

    p = add("users", _cmd_users,
            "manage the web app's accounts: add, list, token, disable, password",
            "groundwatch users add --db cloud.sqlite --username acme --role enterprise "
            "--site sz-demo-01 --generate-password")
    from groundwatch.users_cli import add_arguments as users_arguments

    users_arguments(p)

    p = add("demo", _cmd_demo,
            "run a whole simulated site: broker, cloud, simulators and a gateway",
            "groundwatch demo --duration 60 --http-port 8080")
    p.add_argument("--duration", type=_positive, default=None,
                   help="stop after S seconds, print a summary, exit 0 if data flowed")
    p.add_argument("--http-port", type=_port, default=0,
                   help="cloud API port (0: a free one)")
    p.add_argument("--workdir", default=None, help="where everything is written")
    p.add_argument("--speed", type=_positive, default=900.0, help="replay speed")
    p.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto",
                   help="MQTT broker: a private Mosquitto if installed (auto), or the "
                        "embedded Python broker")

    p = add("check", _cmd_check,
            "validate a site configuration and print its poll plan (as check-config)",
            "groundwatch check --config site.toml")
    p.add_argument("--config", required=True, help="site configuration (TOML)")

    p = add("check-config", _cmd_check,
            "validate a site configuration; print per bus the block reads, requests "
            "per second and serial line load",
            "groundwatch check-config --config site.toml")
    p.add_argument("--config", required=True, help="site configuration (TOML)")

    def bus_options(p: argparse.ArgumentParser, required: bool = True) -> None:
        g = p.add_mutually_exclusive_group(required=required)
        g.add_argument("--tcp", metavar="HOST:PORT", help="Modbus TCP")
        g.add_argument("--rtu", metavar="PORT", help="Modbus RTU on a serial port, "
                       "e.g. /dev/ttyUSB0")
        g.add_argument("--rtu-over-tcp", metavar="HOST:PORT",
                       help="RTU frames through a serial device server")
        p.add_argument("--baud", type=int, default=9600, help="RTU baudrate (9600)")
        p.add_argument("--parity", choices=["N", "E", "O"], default="N",
                       help="RTU parity (N)")
        p.add_argument("--stopbits", type=int, choices=[1, 2], default=1,
                       help="RTU stop bits (1)")

    p = add("scan", _cmd_scan,
            "list the unit ids that answer on a bus (an exception reply counts: the "
            "unit spoke)",
            "groundwatch scan --rtu /dev/ttyUSB0 --baud 9600 --parity E "
            "--units 1-10,17")
    bus_options(p)
    p.add_argument("--units", default="1-247", help="ids to probe: 1-247, 1-10,17")
    p.add_argument("--timeout", type=float, default=0.3,
                   help="seconds to wait for each unit (0.3); on RTU a silent unit "
                        "costs about twice this")
    p.add_argument("--register", type=int, default=0,
                   help="0-based wire address to probe (0)")
    p.add_argument("--function", type=int, choices=[1, 2, 3, 4], default=3,
                   help="read function to probe with: 3 holding (default), 4 input, "
                        "1 coil, 2 discrete")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("read", _cmd_read,
            "read a register block, or a configured device's points, and print it "
            "decoded",
            "groundwatch read --tcp 127.0.0.1:5020 --unit 1 --register 100 "
            "--type float32 --order CDAB\n"
            "         groundwatch read --rtu /dev/ttyUSB0 --baud 9600 --parity E "
            "--unit 2 --register 0 --count 4\n"
            "         groundwatch read --config site.toml --device mw1")
    bus_options(p, required=False)
    p.add_argument("--config", help="site configuration: read --device through its "
                   "profile")
    p.add_argument("--device", help="device name in the site configuration")
    p.add_argument("--point", help="only this point of --device")
    p.add_argument("--unit", type=int, default=1, help="unit id (1)")
    p.add_argument("--register", type=int,
                   help="0-based wire address as sent in the request (a manual's "
                        "register 40101 or 1-based 101 is wire address 100)")
    p.add_argument("--function", type=int, choices=[1, 2, 3, 4], default=3,
                   help="3 holding (default), 4 input, 1 coils, 2 discrete inputs")
    p.add_argument("--count", type=int,
                   help="registers (or bits) to read when no --type; for string, "
                        "registers of text (8)")
    p.add_argument("--type", choices=["int16", "uint16", "int32", "uint32", "float32",
                                      "float64", "string"],
                   help="decode as this type (default: print the raw registers)")
    p.add_argument("--order", choices=["ABCD", "CDAB", "BADC", "DCBA"], default="ABCD",
                   help="byte layout of wider values, A most significant: ABCD "
                        "(default), CDAB word-swapped, BADC byte-swapped, DCBA both")
    p.add_argument("--scale", type=float, default=1.0, help="value = raw * scale + "
                   "offset")
    p.add_argument("--offset", type=float, default=0.0, help="added after scaling")
    p.add_argument("--timeout", type=float, default=None,
                   help="deadline of each read in seconds (1.0; with --config, the "
                        "device's)")
    p.add_argument("--repeat", type=int, default=1,
                   help="reads on one connection, one line each (0: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds from one read to the next (1.0)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per read: value, raw, error, ...")

    p = add("write-coil", _cmd_write_coil,
            "write one coil (function 05) and read it back (function 01)",
            "groundwatch write-coil --tcp 127.0.0.1:5020 --unit 3 --address 0 on")
    bus_options(p)
    p.add_argument("--unit", type=int, default=1, help="unit id (1)")
    p.add_argument("--address", type=int, required=True, help="0-based coil address")
    p.add_argument("--timeout", type=float, default=1.0, help="deadline in seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("state", choices=["on", "off"])

    p = add("test-relay", _cmd_test_relay,
            "switch a relay of the site on, read back, hold, switch off, read back",
            "groundwatch test-relay --config site.toml horn --hold 3")
    p.add_argument("--config", required=True, help="site configuration (TOML)")
    p.add_argument("--hold", type=float, default=2.0, help="seconds to hold it on (2)")
    p.add_argument("--timeout", type=float, default=None,
                   help="deadline in seconds (default: the device's)")
    p.add_argument("relay", help="relay name in the site file ([relays.NAME])")

    p = add("ack", _cmd_ack, "acknowledge (unlatch) an alarm at the gateway",
            "groundwatch ack --config site.toml trench-leak")
    p.add_argument("--config", required=True, help="site configuration (TOML)")
    p.add_argument("--who", default="local operator", help="recorded with the event")
    p.add_argument("alarm", help="alarm name from the site configuration")

    p = add("maintenance", _cmd_maintenance,
            "put a device or point in (or out of) maintenance mode at the gateway: its "
            "readings are flagged maintenance, its alarms suppressed",
            "groundwatch maintenance --config site.toml mw1 on --reason \"pump test\"")
    p.add_argument("--config", required=True, help="site configuration (TOML)")
    p.add_argument("--who", default="local operator", help="recorded with the event")
    p.add_argument("--reason", default="", help="why (recorded with the event)")
    p.add_argument("--until", help="ISO 8601 time with an offset: maintenance ends "
                   "by itself then")
    p.add_argument("target", help="DEVICE or DEVICE.POINT")
    p.add_argument("state", choices=["on", "off"])

    p = add("command", _cmd_command,
            "send a gateway a command from the cloud (acknowledge an alarm, maintenance "
            "on/off) or list commands; the running receiver delivers it",
            "groundwatch command --db cloud.sqlite --site sz-demo-01 ack trench-leak "
            "--who alice --comment \"trench checked\"")
    p.add_argument("--db", default="cloud.sqlite",
                   help="the receiver's SQLite file (its --auth-db with PostgreSQL)")
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--gateway", help="gateway id (ack: default, the one that last "
                   "reported the alarm)")
    p.add_argument("--who", default="cloud operator", help="recorded with the event")
    p.add_argument("--comment", default="", help="ack: recorded with the event")
    p.add_argument("--reason", default="", help="maintenance: why")
    p.add_argument("--until", help="maintenance: ISO 8601 end time with an offset")
    p.add_argument("action", choices=["ack", "maintenance", "list"])
    p.add_argument("target", nargs="?", help="ack: ALARM; maintenance: DEVICE[.POINT]")
    p.add_argument("state", nargs="?", choices=["on", "off"], help="maintenance: on/off")

    p = add("leak-test", _cmd_leak_test,
            "static tank leak test on a recorded stream (time, level_mm, product "
            "temperatures): leak rate, interval, verdict",
            "groundwatch leak-test groundwatch/examples/leak_stream.csv "
            "--tank groundwatch/examples/tank.toml --json")
    p.add_argument("stream", help="CSV: time (ISO 8601),level_mm,temperature columns")
    p.add_argument("--tank", required=True, help="TANK.toml: geometry or calibration "
                   "table, product and expansion coefficient, target rate")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("leak-eval", _cmd_leak_eval,
            "evaluate the static test on simulated tight and leaking tanks (EPA-style): "
            "Pd and Pfa per target rate",
            "groundwatch leak-eval --json")
    p.add_argument("--n", type=int, default=200,
                   help="tests per condition (fill x temperature offset) and leak rate "
                        "(200)")
    p.add_argument("--seed", type=int, default=20260501, help="random seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("trend", _cmd_trend,
            "Mann-Kendall trend, Sen's slope (per year) and trend class of one well "
            "and constituent in a lab-results CSV (well, constituent, date, result "
            "with ND<x, units; GWSDAT layout too)",
            "groundwatch trend results.csv --well MW-3 --constituent BENZENE --json")
    p.add_argument("file", help="lab-results CSV")
    p.add_argument("--well", help="well (needed if the file has several)")
    p.add_argument("--constituent", help="constituent (needed if several)")
    p.add_argument("--decimal-years", action="store_true",
                   help="the date column holds decimal years (as the Unified "
                        "Guidance examples: 89.6)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: n, s, var_s, z, p, sen_slope, sen_ci, trend")

    p = add("flow", _cmd_flow,
            "groundwater gradient and flow direction from well heads (plane fit, "
            "least squares beyond three wells)",
            "groundwatch flow heads.csv --json")
    p.add_argument("file", help="CSV with columns well, x, y, head (x east, y north)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: gradient, direction_deg (azimuth the water "
                        "flows toward, clockwise from north), r2")

    add("profiles", _cmd_profiles, "list the built-in device profiles",
        "groundwatch profiles")

    p = add("hj212", _cmd_hj212,
            "HJ 212 packets: verify framing, length and CRC (one packet per line)",
            "groundwatch hj212 verify --json < packets.txt")
    p.add_argument("action", choices=["verify", "forward"],
                   help="verify: check packets on stdin; forward: send the cloud's "
                        "readings to a platform (--db, --forward-config)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line with at least ok and error")
    p.add_argument("--strict", action="store_true",
                   help="also apply the standard's 1024-byte data segment cap")
    p.add_argument("--db", default="cloud.sqlite", help="forward: the cloud's database")
    p.add_argument("--forward-config", help="forward: platform, MN and code map (TOML)")
    p.add_argument("--interval", type=float, default=30.0,
                   help="forward: seconds between rounds (30)")
    p.add_argument("--once", action="store_true", help="forward: one round, then exit")

    p = add("install-service", _cmd_install_service,
            "install the gateway as a systemd service with a watchdog (docs/service.md)",
            "groundwatch install-service --config /etc/groundwatch/site.toml --enable")
    p.add_argument("--config", required=True, help="site configuration (TOML)")
    p.add_argument("--user", default="groundwatch", help="service user (groundwatch)")
    p.add_argument("--root", default="/", help="write under this root (an OS image)")
    p.add_argument("--watchdog", type=int, default=30,
                   help="WatchdogSec: seconds without a ping before a restart (30)")
    p.add_argument("--enable", action="store_true",
                   help="then systemctl daemon-reload and enable --now")

    p = add("firmware", _cmd_firmware,
            "field node firmware: copy the application and node.json to a "
            "MicroPython board with mpremote, verify by SHA-256, reset it",
            "groundwatch firmware deploy --port /dev/ttyACM0 --config node.json")
    p.add_argument("action", choices=["deploy"], help="deploy: copy, verify, reset")
    p.add_argument("--port", required=True,
                   help="the board's serial port (USB REPL), as mpremote names it")
    p.add_argument("--config", help="node.json to install (checked first; without "
                                    "it the board keeps its own or runs the defaults)")
    p.add_argument("--no-reset", action="store_true", help="copy and verify only")
    return parser


def _cmd_firmware(args: argparse.Namespace) -> int:
    from pathlib import Path

    from groundwatch.firmware_deploy import deploy

    files = deploy(args.port, Path(args.config) if args.config else None,
                   reset=not args.no_reset)
    for remote, digest in files.items():
        print(f"{remote}  sha256 {digest}")
    print(f"{len(files)} files copied and verified on {args.port}"
          + ("" if args.no_reset else "; board reset"))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the CLI prints one line unless -v
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
