"""The `groundwatch` command: one program, a subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from drivers.errors import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _cmd_edge(args: argparse.Namespace) -> int:
    from edge.gateway import run_gateway

    return run_gateway(args.config)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from groundwatch.sim.server import run_simulate

    return run_simulate(args.config, speed=args.speed, duration_s=args.duration)


def _cmd_cloud(args: argparse.Namespace) -> int:
    from cloud.service import run_cloud

    return run_cloud(
        db=args.db, broker_url=args.broker, http_host=args.http_host,
        http_port=args.http_port, offline_after_s=args.offline_after,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from groundwatch.demo import run_demo

    return run_demo(
        duration_s=args.duration, http_port=args.http_port, workdir=args.workdir,
        speed=args.speed, broker_kind=args.broker,
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from edge.config import load_config

    cfg = load_config(args.config)
    n_points = sum(len(m.points) for m in cfg.maps.values())
    print(
        f"{args.config}: site {cfg.site.id}, gateway {cfg.gateway.id}: "
        f"{len(cfg.buses)} buses, {len(cfg.maps)} devices, {n_points} points, "
        f"{len(cfg.alarms)} alarms, {len(cfg.relays)} relays: OK"
    )
    return EXIT_OK


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


def _cmd_profiles(args: argparse.Namespace) -> int:
    from drivers.profile import builtin_profiles, load_profile

    for name in builtin_profiles():
        prof = load_profile(name)
        print(f"{name:16} {len(prof.points):3} points  {prof.description}")
    return EXIT_OK


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
    p.add_argument("--speed", type=float, default=900.0,
                   help="recorded seconds per real second (900: one 15-min record/s)")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")

    p = add("cloud", _cmd_cloud,
            "run the cloud receiver: ingest over MQTT, acknowledge, serve HTTP JSON",
            "groundwatch cloud --db cloud.sqlite --broker mqtt://127.0.0.1:1883")
    p.add_argument("--db", default="cloud.sqlite", help="SQLite file (default cloud.sqlite)")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="MQTT broker URL")
    p.add_argument("--http-host", default="127.0.0.1", help="HTTP bind address")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--offline-after", type=float, default=120.0,
                   help="seconds of silence before a gateway shows offline")

    p = add("demo", _cmd_demo,
            "run a whole simulated site: broker, cloud, simulators and a gateway",
            "groundwatch demo --duration 60 --http-port 8080")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after S seconds, print a summary, exit 0 if data flowed")
    p.add_argument("--http-port", type=int, default=0, help="cloud API port (0: a free one)")
    p.add_argument("--workdir", default=None, help="where everything is written")
    p.add_argument("--speed", type=float, default=900.0, help="replay speed")
    p.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto",
                   help="MQTT broker: a private Mosquitto if installed (auto), or the "
                        "embedded Python broker")

    p = add("check", _cmd_check, "validate a site configuration and exit",
            "groundwatch check --config site.toml")
    p.add_argument("--config", required=True, help="site configuration (TOML)")

    p = add("ack", _cmd_ack, "acknowledge (unlatch) an alarm at the gateway",
            "groundwatch ack --config site.toml trench-leak")
    p.add_argument("--config", required=True, help="site configuration (TOML)")
    p.add_argument("--who", default="local operator", help="recorded with the event")
    p.add_argument("alarm", help="alarm name from the site configuration")

    add("profiles", _cmd_profiles, "list the built-in device profiles",
        "groundwatch profiles")
    return parser


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
