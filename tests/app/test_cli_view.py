"""`perception run --foxglove/--metrics` and `perception view`: flags, and the mistakes (a port
in use, a port out of range) as one line and exit code 2, before any model loads."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import app.commands.view as view_command
from app.cli import build_parser, main
from app.commands.run import _with_flags
from perception.config import NodeConfig, parse_config
from tests.app.one_line import fails as _fails


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "node.yaml"
    doc = {
        "inputs": {"endpoints": [f"ipc://{tmp_path}/sensors"]},
        "outputs": {"endpoint": f"ipc://{tmp_path}/detections"},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_flags_turn_the_view_and_the_metrics_on() -> None:
    parser = build_parser()
    base = parse_config({"view": {"port": 9001}, "metrics": {"port": 9002}})
    assert not base.view.foxglove and not base.metrics.enabled
    on = _with_flags(base, parser.parse_args(["run", "--foxglove", "--metrics"]))
    assert (on.view.foxglove, on.view.port, on.metrics.enabled, on.metrics.port) == (
        True, 9001, True, 9002,
    )  # fmt: skip
    ports = _with_flags(base, parser.parse_args(["run", "--foxglove", "0", "--metrics", "9100"]))
    assert (ports.view.port, ports.metrics.port) == (0, 9100)
    off = _with_flags(NodeConfig(), parser.parse_args(["run"]))
    assert off == NodeConfig()


def test_run_with_the_view_port_in_use(capsys, config: Path, taken_port: int) -> None:
    err = _fails(capsys, "run", "--config", str(config), "--foxglove", str(taken_port))
    assert err.startswith(
        f"perception run: error: view: cannot serve Foxglove WebSocket on 127.0.0.1:{taken_port}"
    )
    assert "in use" in err


def test_run_with_the_metrics_port_in_use(capsys, config: Path, taken_port: int) -> None:
    err = _fails(capsys, "run", "--config", str(config), "--metrics", str(taken_port))
    assert err == (
        f"perception run: error: metrics: cannot serve on 127.0.0.1:{taken_port}: "
        "Address already in use"
    )


def test_run_with_the_view_and_the_metrics_on_one_port(capsys, config: Path) -> None:
    """The second to bind was refused as "Address already in use", taken by its own view."""
    err = _fails(
        capsys, "run", "--config", str(config), "--foxglove", "18767", "--metrics", "18767"
    )
    assert err == (
        "perception run: error: the live view (127.0.0.1) and the metrics (127.0.0.1) would "
        "both serve on port 18767: give them different ports (--foxglove PORT and --metrics "
        "PORT, or view.port and metrics.port)"
    )


def test_view_with_its_port_in_use(capsys, config: Path, taken_port: int) -> None:
    err = _fails(capsys, "view", "--config", str(config), "--port", str(taken_port))
    assert err.startswith("perception view: error: view: cannot serve Foxglove WebSocket")


@pytest.mark.parametrize("argv", [["run", "--foxglove", "70000"], ["run", "--metrics", "x"],
                                  ["view", "--port", "-1"]])  # fmt: skip
def test_a_port_out_of_range(capsys, argv: list[str]) -> None:
    err = _fails(capsys, *argv)
    assert "is not" in err and argv[-1] in err


def test_config_keys_are_checked(capsys, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"view": {"queue_size": 0}}))
    err = _fails(capsys, "run", "--config", str(path))
    assert err == f"perception run: error: {path}: view.queue_size: must be >= 1, got 0"
    path.write_text(yaml.safe_dump({"metrics": {"port": 65536}}))
    err = _fails(capsys, "run", "--config", str(path))
    assert err.endswith("metrics.port: must be in [0, 65535], got 65536")


def test_view_says_when_nothing_arrives(
    capsys, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no node on the endpoints (or something that is not one), the view waited without
    a word, as if the node had nothing to show: once, it says so on stderr and goes on."""
    stop = threading.Event()
    monkeypatch.setattr(view_command, "_QUIET_NOTE_S", 0.2, raising=False)
    monkeypatch.setattr(view_command, "stop_on_signals", lambda: stop)
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    try:
        assert main(["view", "--config", str(config), "--port", "0"]) == 0
    finally:
        timer.cancel()
    out, err = capsys.readouterr()
    assert "perception view: stopped; 0 received" in out
    assert err.count("\n") == 1
    assert err.startswith("perception view: warning: nothing received in 0.2 s from ipc://")
    assert "is a node running there" in err
