"""`collector config`: validate a settings file, or print every setting with its default."""

from __future__ import annotations

import argparse
import asyncio
import json

from collector.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--defaults", action="store_true", help="print defaults, not the file")


async def main(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    shown = Settings.model_construct() if args.defaults else settings
    print(json.dumps(shown.model_dump(mode="json"), indent=2))
    return 0
