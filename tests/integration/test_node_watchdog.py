"""The node's watchdog over real sockets: a receiver whose sockets fail is replaced and output
resumes; a worker that hangs ends the process with exit code 70 for the service manager."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from app.models import build_pipeline
from perception.config import load_config
from perception.errors import TransportError
from perception.io.transport import Publisher, ReceivedFrame, Subscriber
from perception.msgs import wire
from perception.msgs.types import DetectionList, Diagnostics
from perception.node import Node
from perception.node.node import EXIT_STALLED
from replay.datasets.kitti_object import KittiObjectFolder
from tests.integration.node_harness import node_config

pytestmark = pytest.mark.slow


class _FailingOnce(Subscriber):
    """A real subscriber whose sockets fail once, after its first message (as a broken socket
    or a terminated context would)."""

    failures = 1

    def recv(self, timeout_ms: int) -> list[ReceivedFrame] | None:
        frames = super().recv(timeout_ms)
        if frames is not None and _FailingOnce.failures:
            _FailingOnce.failures -= 1
            raise TransportError("the sockets failed")
        return frames


def _config(tmp_path: Path, yolox_path: Path, stall_s: float) -> tuple[Path, str, str]:
    path, sensors, detections = node_config(tmp_path, yolox_path)
    doc = yaml.safe_load(path.read_text())
    doc["watchdog"] = {"stall_timeout_s": stall_s}
    path.write_text(yaml.safe_dump(doc))
    return path, sensors, detections


def test_a_receiver_whose_sockets_fail_is_replaced(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    config_path, sensors, detections = _config(tmp_path, yolox_path, stall_s=1.0)
    config = load_config(config_path)
    node = Node(config, build_pipeline(config), subscriber_factory=_FailingOnce)
    stop = threading.Event()
    runner = threading.Thread(target=node.run, args=(stop,), daemon=True)
    runner.start()
    frame = KittiObjectFolder(kitti_dir).frame_messages(0, 0)
    published: list[DetectionList] = []
    last: Diagnostics | None = None
    try:
        assert node.ready.wait(60)
        with (
            Publisher(sensors, bind=True) as pub,
            Subscriber([detections], ["detections", "diagnostics"]) as sub,
        ):
            deadline = time.monotonic() + 30
            restarts_reported = False
            while time.monotonic() < deadline and not (len(published) >= 3 and restarts_reported):
                stamp = time.time_ns()
                for msg in frame:
                    pub.send(replace(msg, header=replace(msg.header, stamp_ns=stamp)))
                end = time.monotonic() + 0.5
                while time.monotonic() < end:
                    got = sub.recv(timeout_ms=50)
                    if got is None:
                        continue
                    _, out = wire.decode(got)
                    if isinstance(out, DetectionList):
                        published.append(out)
                    elif isinstance(out, Diagnostics):
                        last = out
                        restarts_reported = out.counters["receiver_restarts"] == 1
    finally:
        stop.set()
        runner.join(timeout=10)
    assert len(published) >= 3, "output did not resume after the receiver was replaced"
    assert node.counters.receiver_restarts == 1
    assert node.counters.loop_errors == 0
    # Diagnostics report it.
    assert last is not None and last.counters["receiver_restarts"] == 1


_HANGING_NODE = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from app.models import build_pipeline
    from perception.config import load_config
    from perception.node import Node

    config = load_config(Path(sys.argv[1]))
    pipeline = build_pipeline(config)
    # An engine that never returns (a hung GPU driver, a deadlock in a runtime).
    pipeline.step = lambda bundle, seq, ahead=None: threading.Event().wait()
    node = Node(config, pipeline)
    threading.Thread(target=lambda: node.ready.wait() and print("ready", flush=True)).start()
    node.run(threading.Event())
    """
)


def test_a_worker_that_hangs_ends_the_process_for_its_service_manager(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    config_path, sensors, _ = _config(tmp_path, yolox_path, stall_s=1.0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _HANGING_NODE, str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    frame = KittiObjectFolder(kitti_dir).frame_messages(0, 0)
    try:
        with Publisher(sensors, bind=True) as pub:
            deadline = time.monotonic() + 60
            while child.poll() is None and time.monotonic() < deadline:
                stamp = time.time_ns()
                for msg in frame:
                    pub.send(replace(msg, header=replace(msg.header, stamp_ns=stamp)))
                time.sleep(0.2)
        output, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == EXIT_STALLED, output
    assert "the worker stalled for" in output and "exiting with 70" in output
