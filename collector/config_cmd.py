"""`collector config`: validate a settings file, or print every setting with its default.

Validation covers every section and, for an agent file, the device adapters' options
(`agent.sources.link.options` of `snmp` and `gnmi`); their secrets are read only by the
agent itself, on the host that has them."""

from __future__ import annotations

import argparse
import asyncio
import json

from collector.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--defaults", action="store_true", help="print defaults, not the file")


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    link = settings.agent.sources.link
    if not args.defaults and "agent" in settings.model_fields_set and link.enabled:
        from collector.agent.sources.link_adapters import check_options

        check_options(link.adapter, dict(link.options))  # a ConfigError names key and file
    shown = Settings.model_construct() if args.defaults else settings
    print(json.dumps(shown.model_dump(mode="json"), indent=2))
    return 0
