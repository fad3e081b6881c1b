"""Every subcommand keeps the flags users' scripts pass: the same names, defaults, choices and
required flags as recorded from the code before flags were derived from the settings models
(`help_flags.json`); each one is listed by its `--help`, and a flag that had help text keeps some.
New subcommands and flags may be added (`study erase`, `study serve --pilot`); none recorded may go or change."""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from culturepark.cli import build_parser

RECORDED: dict[str, dict[str, Any]] = json.loads((Path(__file__).parent / "help_flags.json").read_text())


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    parser.format_help()  # builds a subcommand whose flags are added when it is first used
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*path, name))


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def _now(parser: argparse.ArgumentParser) -> dict[str, Any]:
    acts = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    return {"flags": sorted(s for a in acts for s in a.option_strings),
            "defaults": {a.option_strings[-1]: _plain(a.default) for a in acts},
            "required": sorted(a.option_strings[-1] for a in acts if a.required),
            "choices": {a.option_strings[-1]: list(a.choices) for a in acts if a.choices}}


LEAVES = dict(_leaves(build_parser()))


def test_no_subcommand_is_gone() -> None:
    assert set(RECORDED) <= set(LEAVES)


@pytest.mark.parametrize("command", sorted(RECORDED))
def test_flags_names_defaults_and_choices_are_unchanged(command: str) -> None:
    parser = LEAVES[command]
    now = _now(parser)
    was = RECORDED[command]
    assert set(was["flags"]) <= set(now["flags"]), f"{command}: flags gone"
    for key in ("defaults", "choices"):
        assert {f: now[key].get(f) for f in was[key]} == was[key], f"{command}: {key} changed"
    assert now["required"] == was["required"], f"{command}: required flags changed"
    text = parser.format_help()
    for flag in now["flags"]:
        assert flag in text, f"{command} --help does not list {flag}"
    helped = {a.option_strings[-1] for a in parser._actions if a.option_strings and a.help}
    assert set(RECORDED[command]["with_help"]) <= helped, f"{command}: a flag lost its help text"
