"""The entrypoint imports only the module of the command it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collector.cli import COMMANDS, build_parser, command_of


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["agent", "--config", "a.yaml"], "agent"),
        (["--config", "agent", "ingest"], "ingest"),  # a global option's value is not the command
        (["-c", "x.yaml", "--log-level", "DEBUG", "run", "--duration", "3"], "run"),
        (["--config=x.yaml", "aggregate"], "aggregate"),
        (["--help"], None),
        (["nonsense"], None),
    ],
)
def test_command_of(argv: list[str], command: str | None) -> None:
    assert command_of(argv) == command


@pytest.mark.parametrize("command", ["agent", "ingest"])
def test_edge_commands_do_not_import_polars(command: str) -> None:
    # The agent runs on small edge hosts and the ingest is a lean front: neither pays for
    # Polars (the aggregator's) at start-up.
    code = (
        f"import sys; from collector.cli import build_parser; build_parser({command!r}); "
        "print('polars' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_command_parses_its_own_arguments() -> None:
    for name in COMMANDS:
        args = build_parser(name).parse_args([name])
        assert args.command == name
        assert getattr(args, "_module", None) is not None or getattr(args, "_import_error", None)
