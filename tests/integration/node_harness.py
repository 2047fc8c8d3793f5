"""Starting `perception run` / `perception play` as real processes for integration tests."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.types import DetectionList, TrackList


def node_config(
    tmp_path: Path, model: Path, *, default_rate_hz: float = 1.0
) -> tuple[Path, str, str]:
    """A node config with ipc endpoints under tmp_path; returns (path, sensors, detections).

    Tests publish at their own, often irregular, pace (a frame, then a wait for an answer):
    their sensors' nominal rate is `default_rate_hz` (1 Hz: dead after 3 s of silence), so a
    camera is not declared dead between two of a test's frames. Tests of liveness set theirs."""
    sensors = f"ipc://{tmp_path}/sensors"
    detections = f"ipc://{tmp_path}/detections"
    doc = {
        "inputs": {"endpoints": [sensors], "default_rate_hz": default_rate_hz},
        "outputs": {"endpoint": detections},
        "camera_model": {"path": str(model), "kind": "yolox"},
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, sensors, detections


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


class NodeProcess:
    """`perception run` in a child process (`args`: more of its options); its stdout lines are
    collected on a thread."""

    def __init__(self, config: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            _cli("run", "--config", str(config), *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "ready" in line:
                return
        raise AssertionError(f"node did not become ready:\n{''.join(self.output)}")

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"node did not stop on SIGTERM:\n{''.join(self.output)}") from None


@contextmanager
def running_node(config: Path, *args: str) -> Iterator[NodeProcess]:
    node = NodeProcess(config, *args)
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()


def start_player(kitti_dir: Path, endpoint: str, rate_hz: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _cli(
            "play",
            "kitti-object",
            str(kitti_dir),
            "--endpoint",
            endpoint,
            "--rate",
            str(rate_hz),
            "--wait",
            "1.5",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def collect_outputs(
    sub: Subscriber, count: int, timeout_s: float
) -> tuple[list[DetectionList], list[TrackList]]:
    """`count` DetectionLists and `count` TrackLists from a subscriber of both topics (or what
    came before `timeout_s`)."""
    detections: list[DetectionList] = []
    tracks: list[TrackList] = []
    deadline = time.monotonic() + timeout_s
    while (len(detections) < count or len(tracks) < count) and time.monotonic() < deadline:
        frames = sub.recv(timeout_ms=100)
        if frames is None:
            continue
        _, msg = wire.decode(frames)
        if isinstance(msg, TrackList):
            tracks.append(msg)
        else:
            assert isinstance(msg, DetectionList)
            detections.append(msg)
    return detections, tracks


def collect_detections(sub: Subscriber, count: int, timeout_s: float) -> list[DetectionList]:
    out: list[DetectionList] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        frames = sub.recv(timeout_ms=100)
        if frames is None:
            continue
        _, msg = wire.decode(frames)
        assert isinstance(msg, DetectionList)
        out.append(msg)
    return out
