"""`perception echo` and the node's SIGINT handling, as real processes over real sockets."""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

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
        # Refused while receiving (too many frames): it printed nothing for it.
        pub.send_frames([b"lidar/top", *[b"x"] * 9])
        refused = proc.stdout.readline() if sel.select(timeout=10) else ""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert line.strip() == "lidar/top seq=7 stamp_ns=123 points=1234"
    assert refused.startswith("lidar/top: refused: lidar/top: too many frames: 10"), refused


def test_the_node_says_the_port_it_bound_for_tcp_star(tmp_path: Path, yolox_path: Path) -> None:
    """It said `detections on tcp://127.0.0.1:*`, which no client can connect to."""
    config, _, _ = node_config(tmp_path, yolox_path)
    doc = yaml.safe_load(config.read_text())
    doc["outputs"]["endpoint"] = "tcp://127.0.0.1:*"
    config.write_text(yaml.safe_dump(doc))
    node = NodeProcess(config)
    try:
        node.wait_ready()
        ready = next(line for line in node.output if "ready" in line)
    finally:
        node.stop()
    assert re.search(r"detections on tcp://127\.0\.0\.1:\d+ \[detections\]", ready), ready


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_node_stops_cleanly_on_sigint(tmp_path: Path, yolox_path: Path, signum: int) -> None:
    """SIGHUP (a closed terminal) killed the node, leaving its ipc socket files behind."""
    config, _, _ = node_config(tmp_path, yolox_path)
    outputs = yaml.safe_load(config.read_text())["outputs"]["endpoint"]
    node = NodeProcess(config)
    node.wait_ready()
    assert Path(outputs.removeprefix("ipc://")).exists()
    node.proc.send_signal(signum)
    assert node.proc.wait(timeout=15) == 0
    time.sleep(0.2)
    assert "perception run: stopped" in "".join(node.output)
    assert not Path(outputs.removeprefix("ipc://")).exists()


def test_echo_subscribes_a_sensor_topic_at_the_sensors_endpoint(tmp_path: Path) -> None:
    """No --endpoint: a sensor topic is read where sensors publish (the config's inputs), not
    at the node's outputs endpoint."""
    sensors = f"ipc://{tmp_path}/sensors"
    config = tmp_path / "node.yaml"
    config.write_text(
        f"inputs: {{endpoints: ['{sensors}']}}\noutputs: {{endpoint: 'ipc://{tmp_path}/out'}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "echo", "lidar/top", "--config", str(config),
         "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    sweep = LidarSweep(Header("lidar/top", 3, 456, "lidar"), np.ones((10, 4), np.float32))
    with Publisher(sensors, bind=True) as pub:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            pub.send(sweep)
            time.sleep(0.1)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert out.strip() == "lidar/top seq=3 stamp_ns=456 points=10"


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGHUP, 129, "hung up")],
)
def test_sigterm_leaves_no_partial_output(
    tmp_path: Path, synth_drive, signum: int, code: int, said: str
) -> None:
    """SIGTERM (systemd, `timeout`, a cancelled CI job) and SIGHUP (a closed terminal) ended
    the process at once and left the hidden partial file of the output; they now stop it like
    SIGINT: exit 128 + the signal, nothing left."""
    out = tmp_path / "out" / "run.jsonl"
    out.parent.mkdir()
    drive = synth_drive(0, 1.0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "replay", str(drive), "--out", str(out), "--realtime",
         "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    # Once a DetectionList is in the partial file the replay is well within its writing: the
    # file alone could be seen an instant after it was made (a loaded machine).
    while not any(p.stat().st_size for p in out.parent.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert next(p.name for p in out.parent.iterdir()).startswith(".run."), "no partial file"
    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == code, output
    assert output.strip().endswith(f"perception replay: {said}"), output
    assert list(out.parent.iterdir()) == []
