"""The CLI and docs/operations.md agree: every subcommand has help text and is listed under "Commands"."""

from __future__ import annotations

import argparse
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from gatewayd.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def subcommands(parser: argparse.ArgumentParser, prefix: str = "gatewayd") -> Iterator[tuple[str, str | None]]:
    """(`gatewayd bypass list`, its help) for every subcommand at any depth."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", helps.get(name)
                yield from subcommands(sub, f"{prefix} {name}")


def commands_section() -> str:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    return text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]


def test_every_subcommand_has_help_text():
    found = dict(subcommands(build_parser()))
    assert len(found) >= 20 and "gatewayd bypass revoke" in found, sorted(found)
    assert not [name for name, help_text in found.items() if not (help_text or "").strip()]


def test_every_subcommand_is_listed_in_operations_md():
    section = commands_section()
    missing = [name for name, _ in subcommands(build_parser())
               if f"`{name}`" not in section and f"`{name} " not in section]
    assert not missing, f"add to docs/operations.md's Commands table: {missing}"


def test_the_commands_table_lists_no_command_that_does_not_exist():
    known = {name for name, _ in subcommands(build_parser())}
    listed = set()
    for row in commands_section().splitlines():
        if not row.startswith("| `"):
            continue
        first_cell = row.split(" | ")[0]
        for quoted in re.findall(r"`(gatewayd [^`]*)`", first_cell):
            words = quoted.split()
            listed.add(" ".join(itertools.takewhile(lambda word: word[0].islower(), words)))
    assert listed and listed <= known, listed - known
