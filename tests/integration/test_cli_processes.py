"""`perception echo` and the node's SIGINT handling, as real processes over real sockets."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from perception.io.transport import Publisher
from perception.msgs.types import Header, LidarSweep
from tests.integration.node_harness import NodeProcess, node_config

pytestmark = pytest.mark.slow


def test_echo_prints_what_arrives_and_stops_on_sigint(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/echo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "echo", "lidar/top", "--endpoint", endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sweep = LidarSweep(Header("lidar/top", 7, 123, "lidar"), np.ones((1234, 4), np.float32))
    assert proc.stdout is not None
    with Publisher(endpoint, bind=True) as pub:
        line = ""
        deadline = time.monotonic() + 20
        # Until the subscription arrives, PUB drops; keep sending until echo prints.
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line and time.monotonic() < deadline:
            pub.send(sweep)
            if sel.select(timeout=0.1):
                line = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert line.strip() == "lidar/top seq=7 stamp_ns=123 points=1234"


def test_node_stops_cleanly_on_sigint(tmp_path: Path, yolox_path: Path) -> None:
    config, _, _ = node_config(tmp_path, yolox_path)
    node = NodeProcess(config)
    node.wait_ready()
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(timeout=15) == 0
    time.sleep(0.2)
    assert "perception run: stopped" in "".join(node.output)
