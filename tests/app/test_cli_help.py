"""The help a user reads: a description for every command, help text on every option, defaults
shown, no code comments."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from app.cli import build_parser


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command parser, with its words after `perception`."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(build_parser())


def test_every_command_is_reached() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"run", "play", "record", "echo", "replay", "demo", "bench", "import", "eval",
            "calib show", "calib check", "engines build", "engines list", "models list",
            "models fetch"} <= names  # fmt: skip


@pytest.mark.parametrize(
    ("path", "parser"), COMMANDS, ids=[" ".join(p) or "-" for p, _ in COMMANDS]
)
def test_descriptions_and_option_help(path: tuple[str, ...], parser: argparse.ArgumentParser):
    assert parser.description and len(parser.description) > 30, path
    assert "library code" not in parser.description and "module" not in parser.description
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        assert action.help, f"perception {' '.join(path)}: {action.dest} has no help"
        shown = action.default not in (None, False, argparse.SUPPRESS)
        if shown and action.option_strings:
            flag = action.option_strings[-1]
            options = text[text.index("\noptions:") :]
            entry = options[options.index(f"  {flag}") :].split("\n  -")[0]
            assert f"(default: {action.default})" in " ".join(entry.split()), (path, flag)


def test_units_are_in_the_help() -> None:
    by_name = {" ".join(path): parser.format_help() for path, parser in COMMANDS}
    assert "frames per second, Hz" in by_name["play"]
    assert "seconds of playing, s" in by_name["bench"]
    assert "BEV centre match distance, m" in by_name["eval"]
    assert "length of a generated drive, s" in by_name["demo"]


def test_top_level_help_as_a_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("usage: perception")
    assert "perception demo" in done.stdout and "exit codes" in done.stdout
    for name in ("run", "replay", "bench", "models"):
        assert f"    {name} " in done.stdout
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "The on-vehicle node." in run.stdout
