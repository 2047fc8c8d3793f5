"""Argument types (app.args) bound what the OS and the machine can honour: a duration whose
timer would overflow, a rate whose period would, a socket option beyond its C int, a process
count no machine runs. Each is one line from argparse and exit 2, before anything starts."""

from __future__ import annotations

import pytest

from tests.app.one_line import fails as _fails


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["play", "x.mcap", "--wait", "1e12"], "argument --wait: 1e12 s is above 1000000 s "
         "(11.6 days)"),
        (["play", "x.mcap", "--start", "1e20"], "argument --start: 1e20 s is above 1000000 s "
         "(11.6 days)"),
        (["play", "kitti-object", "D", "--rate", "1e-300"], "argument --rate: 1e-300 Hz is "
         "below 1e-06 Hz (one every 1000000 s)"),
        (["play", "x.mcap", "--hwm", "99999999999999"], "argument --hwm: 99999999999999 is "
         "above 2,147,483,647"),
        (["record", "--out", "x.mcap", "--stop-timeout", "1e12"], "argument --stop-timeout: "
         "1e12 s is above 1000000 s (11.6 days)"),
        (["record", "--out", "x.mcap", "--queue-size", "99999999999999999999"],
         "argument --queue-size: 99999999999999999999 is above 10,000,000"),
        (["bench", "--duration", "1e300"], "argument --duration: 1e300 s is above 1000000 s "
         "(11.6 days)"),
        (["bench", "--rate", "1e-9"], "argument --rate: 1e-9 Hz is below 1e-06 Hz (one every "
         "1000000 s)"),
        (["bench", "--rate", "1e9"], "argument --rate: 1e9 Hz is above 1000 Hz"),
        (["demo", "--seconds", "1e12"], "argument --seconds: 1e12 s is above 1000000 s "
         "(11.6 days)"),
        (["train", "c.yaml", "--workers", "1000000"], "argument --workers: 1000000 is above "
         "256"),
        (["train", "c.yaml", "--prepare-workers", "0"], "argument --prepare-workers: 0 is not "
         ">= 1"),
        (["eval", "d.jsonl", "--max-distance", "1e308"], "argument --max-distance: 1e308 m is "
         "above 1000 m"),
        (["eval", "d.jsonl", "--max-range", "1001"], "argument --max-range: 1001 m is above "
         "1000 m"),
    ],
)  # fmt: skip
def test_values_beyond_what_can_be_honoured_are_refused_when_parsed(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert _fails(capsys, *argv) == f"perception {argv[0]}: error: {message}"


@pytest.mark.parametrize(
    ("argv", "option", "value"),
    [
        (["calib", "check", "--frames", "K", "--perturb", "-1,0,0,0,0,0"], "--perturb",
         "-1,0,0,0,0,0"),
        (["import", "nuscenes", "D", "--out", "x.mcap", "--origin", "-1,2,3"], "--origin",
         "-1,2,3"),
        # argparse's abbreviation of a long option, named as it was written.
        (["calib", "check", "--frames", "K", "--pert", "-1,0,0,0,0,0"], "--pert", "-1,0,0,0,0,0"),
    ],
)  # fmt: skip
def test_a_value_that_starts_with_a_dash_is_shown_joined_to_its_option(
    capsys: pytest.CaptureFixture[str], argv: list[str], option: str, value: str
) -> None:
    """argparse reads `-1,0,0` as an option and said only that the option had no value."""
    full = "--perturb" if option == "--pert" else option
    assert _fails(capsys, *argv).endswith(
        f": error: argument {full}: expected one argument (a value that starts with '-' is "
        f"joined to its option: {option}={value})"
    )


def test_an_option_without_a_value_is_said_as_argparse_says_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _fails(capsys, "calib", "check", "--frames", "K", "--out") == (
        "perception calib check: error: argument --out: expected one argument"
    )
    # The value joined to its option is taken.
    assert _fails(capsys, "calib", "check", "--perturb=-1,0,0,0,0,0") == (
        "perception calib check: error: --perturb: only with --drive or --frames"
    )
