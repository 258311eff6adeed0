"""`collector simulate`: run the deterministic Japan/US fleet.

    collector simulate --bootstrap 127.0.0.1:9092 --fast-forward --duration 86400 --truth out/
    collector simulate --target 127.0.0.1:4317 --ca-file ca.pem --tokens-file tokens.yaml
    collector simulate --write-tokens tokens.yaml      # the ingest's token file, then exit

Settings come from the `simulate` section (see collector/simulate/config.py); the options
below override the most used ones.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from collector.config import Settings
from collector.errors import ConfigError
from collector.simulate.config import SimulateSettings
from collector.simulate.fleet import FleetRunner, site_tokens, write_tokens_file

log = logging.getLogger("collector.simulate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=["kafka", "agents"],
        help="kafka: straight into Kafka (default without --target); agents: "
        "every site a real agent stream to --target",
    )
    parser.add_argument("--target", help="ingest HOST:PORT (agents mode)")
    parser.add_argument(
        "--ca-file",
        type=Path,
        help="CA of the ingest's TLS certificate; without it agents connect in plaintext",
    )
    parser.add_argument(
        "--tokens-file",
        type=Path,
        help="ingest token file (token -> site_id) "
        "to take the sites' tokens from; default: derived from the seed",
    )
    parser.add_argument(
        "--write-tokens",
        type=Path,
        metavar="PATH",
        help="write the token file for the ingest (token -> site_id) and exit",
    )
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (kafka mode; default kafka.bootstrap_servers)"
    )
    parser.add_argument("--topic", help="Kafka topic (default kafka.topic)")
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SIM_SECONDS",
        help="stop after this much simulated time (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--truth", type=Path, metavar="DIR", help="write the ground truth (Parquet files) into DIR at the end"
    )
    parser.add_argument(
        "--truth-samples", action="store_true", help="also write every sample with its true increment (large)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("simulate-spool"),
        help="agents mode: directory of the agents' spools",
    )
    parser.add_argument("--fast-forward", action="store_true", help="as fast as possible (acceleration 0)")
    parser.add_argument("--acceleration", type=float, help="simulated seconds per wall second")
    parser.add_argument("--seed", type=int, help="override simulate.seed")
    parser.add_argument("--sites-per-country", type=int, help="override simulate.sites_per_country")
    parser.add_argument("--start", type=float, metavar="UNIX_S", help="simulated start time (default now)")


def _overrides(settings: Settings, args: argparse.Namespace) -> Settings:
    upd: dict[str, Any] = {}
    if args.fast_forward:
        upd["acceleration"] = 0.0
    if args.acceleration is not None:
        upd["acceleration"] = args.acceleration
    if args.seed is not None:
        upd["seed"] = args.seed
    if args.sites_per_country is not None:
        upd["sites_per_country"] = args.sites_per_country
    if args.start is not None:
        upd["start_unix_s"] = args.start
    if not upd:
        return settings
    try:
        sim = SimulateSettings.model_validate({**settings.simulate.model_dump(), **upd})
    except ValueError as exc:
        raise ConfigError(str(exc), key="simulate", source="command line") from exc
    return settings.model_copy(update={"simulate": sim})


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read token file: {exc}", source=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError("token file must map token -> site_id", source=str(path))
    return {str(site): str(tok) for tok, site in data.items()}


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    settings = _overrides(settings, args)
    if args.write_tokens:
        write_tokens_file(args.write_tokens, site_tokens(settings))
        print(f"wrote {args.write_tokens}")
        return 0
    mode = args.mode or ("agents" if args.target else "kafka")
    if mode == "agents" and not args.target:
        raise ConfigError("agents mode needs --target HOST:PORT", source="command line")
    tokens = None
    if mode == "agents":
        tokens = _read_tokens(args.tokens_file) if args.tokens_file else site_tokens(settings)
    runner = FleetRunner(
        settings,
        target=args.target if mode == "agents" else None,
        bootstrap=args.bootstrap,
        tokens=tokens,
        ca_file=args.ca_file,
        work_dir=args.work_dir,
        topic=args.topic,
        duration_s=args.duration,
        truth_dir=args.truth,
        truth_samples=args.truth_samples,
    )
    s = settings.simulate
    log.info(
        "simulating %d sites (%s), %d series, interval %.3gs, acceleration %s, mode %s",
        runner.sim.model.n_sites,
        ",".join(s.countries),
        runner.sim.model.nc + runner.sim.model.ng,
        s.interval_s,
        s.acceleration or "fast-forward",
        mode,
    )
    t0 = time.monotonic()
    await runner.start()
    stopper = asyncio.ensure_future(stop.wait())
    waiter = asyncio.ensure_future(runner.wait())
    try:
        await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        await runner.stop()
        await asyncio.gather(waiter, return_exceptions=True)
    dt = max(time.monotonic() - t0, 1e-9)
    log.info(
        "sent %d batches, %d samples in %.1fs (%.0f samples/s), %d ticks%s",
        runner.records,
        runner.samples,
        dt,
        runner.samples / dt,
        runner.sim.next_tick,
        f"; truth in {args.truth}" if args.truth else "",
    )
    if runner.drained is False:
        log.error("not every batch was acknowledged before the drain timeout")
        return 1
    return 0
