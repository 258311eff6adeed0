"""The entrypoint: the only place that parses argv, sets up logging and handles signals.

Each subcommand lives in its own module exposing
    add_arguments(parser: argparse.ArgumentParser) -> None
    async main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int
`stop` is set on SIGINT/SIGTERM/SIGHUP; `main` then shuts down within its grace period and returns
an exit code; a second signal kills the registered child processes (collector.children)
and exits at once with status 130. Modules are imported lazily so `collector agent` does not import Polars.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from typing import Any

from collector.errors import CollectorError, ConfigError

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("collector.run", "whole pipeline on the embedded broker with a simulated JP/US fleet"),
    "broker": ("collector.broker_cmd", "run the embedded Kafka-protocol broker (Tansu)"),
    "ingest": ("collector.ingest.main", "gRPC ingest service: agents -> Kafka"),
    "agent": ("collector.agent.main", "edge agent: collect, spool, stream to ingest"),
    "simulate": ("collector.simulate.main", "deterministic Japan/US fleet of simulated agents"),
    "aggregate": ("collector.aggregate.main", "Kafka consumer group -> windows -> /metrics"),
    "config": ("collector.config_cmd", "validate a config file or print the defaults"),
    "dev-certs": ("collector.certs_cmd", "write throw-away TLS material for a demo deployment"),
    "health": ("collector.health_cmd", "probe a running ingest/aggregate/agent (healthchecks)"),
}


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (skipping the global options and their values)."""
    it = iter(argv)
    for tok in it:
        if tok in ("--config", "-c", "--log-level"):
            next(it, None)
        elif not tok.startswith("-"):
            return tok if tok in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only `command`'s module is imported (for its arguments)."""
    parser = argparse.ArgumentParser(
        prog="collector",
        description="Edge telemetry collector: agents -> gRPC ingest -> Kafka -> aggregator -> /metrics.",
        epilog="`collector COMMAND --help` for a command's options; settings: docs/configuration.md",
    )
    parser.add_argument("--config", "-c", help="YAML settings file (env COLLECTOR_* overrides)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # --config is accepted after the subcommand too: `collector agent --config agent.yaml`
        p.add_argument("--config", "-c", dest="sub_config", help=argparse.SUPPRESS)
        if name != command:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            # A component whose optional dependency is missing still lists, and says why.
            p.set_defaults(_import_error=exc)
            continue
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def _force_exit() -> None:
    """A second Ctrl-C: kill our children by pid and leave now, without graceful stops."""
    from collector import children

    killed = children.kill_all()
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[?25h\n")  # a live view hid the cursor
    sys.stdout.flush()
    print(
        f"collector: forced exit (second signal); killed child pids {killed or 'none'}; "
        "agent spools keep what was not acknowledged",
        file=sys.stderr,
        flush=True,
    )
    os._exit(130)


async def _run(mod: Any, settings: Any, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            _force_exit()
        stop.set()

    # SIGHUP too: a closed terminal (or tmux kill) must not leave the broker child behind
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal)
    try:
        return int(await mod.main(settings, args, stop) or 0)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(command_of(argv))
    args = parser.parse_args(argv)
    if err := getattr(args, "_import_error", None):
        print(f"collector {args.command}: unavailable: {err}", file=sys.stderr)
        return 2
    from collector.config import load_settings, source_of

    path = args.sub_config or args.config
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"collector: config error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level or settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # aiokafka narrates every group join and assignment at INFO; our own services log
        # what an operator needs (assigned partitions, Kafka reachable/unreachable).
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        return asyncio.run(_run(args._module, settings, args))
    except ConfigError as exc:
        # Checked after loading (adapter options, TLS files, listen addresses): the code
        # that raised knows the key, this is where the file is known.
        print(f"collector: config error: {exc.located(source_of(exc.key, path))}", file=sys.stderr)
        return 2
    except CollectorError as exc:
        logging.getLogger("collector").error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
