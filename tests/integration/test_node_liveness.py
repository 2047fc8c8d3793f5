"""Dead sensors against a real `perception run` over real sockets: the camera as a process of
its own is killed and restarted, and a player publishing everything is killed and restarted.
On main, a dead camera made every sweep wait the 300 ms timeout (all output at ~314 ms against a
100 ms budget) and nothing said the sensors were stale. Here the lidar-only output goes out at
once while the camera is dead, full bundles resume when it returns, and the diagnostics say
which sensors are alive, and `stale` when none is."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from perception.config import BudgetConfig
from perception.io.transport import Subscriber
from tests.integration.listen import Outputs
from tests.integration.node_harness import node_config, running_node

pytestmark = pytest.mark.slow

MS = 1_000_000
S = 1_000 * MS
BUDGET_NS = 100 * MS
# The default budgets (budgets.stages_ms) of the stages a lidar-only bundle goes through.
STAGE_BUDGETS_MS = {k: v for k, v in BudgetConfig().stages_ms.items() if k != "camera_encoder"}
#: The stages of a lidar-only DetectionList that are the pipeline's compute: those budgeted.
COMPUTE_STAGES = tuple(STAGE_BUDGETS_MS)


class Sensor:
    """tests.integration.sensor_process in a child process: `first_ns` is the stamp of the
    first frame it published."""

    def __init__(self, kitti_dir: Path, endpoint: str, *topics: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.sensor_process", str(kitti_dir), endpoint,
             *topics],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.first_ns = self._first()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _first(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "sensor process died"
                continue
            if line.startswith("first "):
                return int(line.split()[1])
        raise AssertionError("sensor process published nothing")

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: as a crash, nothing is closed cleanly
        self.proc.wait(10)


def _p99(values: list[int]) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 99))


# Its p99 is judged from receive times: run alone (`serial`). Beside another test's load the
# node's worker fell behind (queue wait p99 52 ms) and the p99 read 155 ms against 45.
@pytest.mark.serial
def test_a_dead_camera_is_not_waited_for(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path, record_property
) -> None:
    """Camera and lidar are processes of their own at 10 Hz. The camera process is killed for
    10 s, then restarted. While it is dead the lidar-only output goes out at once: all but
    the engines' compute takes less than the 100 ms budget leaves them (p99, from the sweep
    stamp to the DetectionList received here; the latency itself is in the figures); full
    bundles are back within 1 s of its first frame; diagnostics show it dead, then alive."""
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    config, _, detections = node_config(tmp_path, yolox_path, default_rate_hz=10.0)
    lidar_ep, camera_ep = f"ipc://{tmp_path}/lidar", f"ipc://{tmp_path}/camera"
    doc = yaml.safe_load(config.read_text())
    doc["inputs"]["endpoints"] = [lidar_ep, camera_ep]
    config.write_text(yaml.safe_dump(doc))
    with running_node(config) as node, Outputs(detections) as outputs:
        lidar = Sensor(kitti_dir, lidar_ep, "rig", "lidar/top")
        camera = Sensor(kitti_dir, camera_ep, "camera/front")
        try:
            outputs.wait_for(
                lambda o: any(not dl.degraded for _, dl in o.detections), 30.0, "full bundles"
            )
            time.sleep(2.0)
            killed_ns = time.time_ns()
            camera.kill()
            time.sleep(10.0)
            camera = Sensor(kitti_dir, camera_ep, "camera/front")
            back_ns = camera.first_ns
            time.sleep(4.0)
            dead_diag = [d for t, d in outputs.diagnostics if killed_ns + S < t < back_ns]
            back_diag = [d for t, d in outputs.diagnostics if t > back_ns + 2 * S]
        finally:
            camera.kill()
            lidar.kill()
        assert node.proc.poll() is None
    # While dead: from 1 s after the kill (dead 3 periods after its last frame; by then the
    # node has finished the full bundles it was busy with) to its return, each output is the
    # lidar alone, degraded, and goes out at once.
    dead = [(t, dl) for t, dl in outputs.detections if killed_ns + S < dl.header.stamp_ns < back_ns]
    assert len(dead) >= 80, len(dead)  # of 90 sweeps (some skipped while the node was busy)
    assert all(dl.degraded == ("camera/front",) for _, dl in dead)
    assert all(dl.timings_ns["sync_wait"] < 10 * MS for _, dl in dead)
    latencies = [t - dl.header.stamp_ns for t, dl in dead]
    node_latencies = [dl.latency_ns for _, dl in dead]
    # What is not the pipeline's compute (which this machine's load decides, and the stage
    # budgets bound): transport, decoding, waiting for the bundle and for the worker. The
    # lidar-only clusters are compute (counted as waiting before they had a budget, a slow
    # moment of the machine read as the node waiting).
    overheads = [
        t - dl.header.stamp_ns - sum(dl.timings_ns.get(s, 0) for s in COMPUTE_STAGES)
        for t, dl in dead
    ]
    # The transition: the sweeps received between the camera's last frame and its death.
    transition = [
        t - dl.header.stamp_ns
        for t, dl in outputs.detections
        if killed_ns - 200 * MS < dl.header.stamp_ns <= killed_ns + 500 * MS and dl.degraded
    ]
    # Back: the first full bundle after its first frame.
    full = [(t, dl) for t, dl in outputs.detections if dl.header.stamp_ns >= back_ns]
    first_full = next((t, dl) for t, dl in full if not dl.degraded)
    resume_ns = first_full[0] - back_ns
    after = [dl for t, dl in full if t > first_full[0]]
    stages = ("queue_wait", *COMPUTE_STAGES)
    figures = {
        "dead_outputs": len(dead),
        **{
            f"dead_{stage}_p99_ms": _p99([dl.timings_ns.get(stage, 0) for _, dl in dead]) / MS
            for stage in stages
        },
        "dead_latency_p50_ms": float(np.median(latencies)) / MS,
        "dead_latency_p99_ms": _p99(latencies) / MS,
        "dead_latency_max_ms": max(latencies) / MS,
        "dead_node_latency_p99_ms": _p99(node_latencies) / MS,
        "dead_overhead_p99_ms": _p99(overheads) / MS,
        "transition_latencies_ms": [x / MS for x in transition],
        "full_bundles_after_return_ms": resume_ns / MS,
        "degraded_after_first_full": sum(bool(dl.degraded) for dl in after),
    }
    record_property("figures", figures)
    print(figures)
    # Within the budget when the engines keep within theirs: everything else takes less
    # than what the stage budgets leave of the end-to-end one (on main: the 300 ms timeout).
    assert _p99(overheads) <= BUDGET_NS - sum(STAGE_BUDGETS_MS.values()) * MS, figures
    assert resume_ns < 1 * S, figures
    assert after and not any(dl.degraded for dl in after), figures
    # The diagnostics: dead while dead, alive again after.
    assert dead_diag and back_diag
    for d in dead_diag:
        sensors = {s.stream: s for s in d.sensors}
        assert not sensors["camera/front"].alive and sensors["camera/front"].rate_hz == 0.0
        assert sensors["lidar/top"].alive
        assert sensors["lidar/top"].rate_hz == pytest.approx(10.0, rel=0.2)
        assert d.status == "degraded"
    sensors = {s.stream: s for s in back_diag[-1].sensors}
    assert sensors["camera/front"].alive and sensors["camera/front"].outages == 1
    assert back_diag[-1].sync["dead_camera_bundles"] >= len(dead)


def test_a_publisher_killed_and_restarted(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path, record_property
) -> None:
    """`perception play kitti-object` publishing everything is killed (SIGKILL) and restarted:
    while it is gone the diagnostics say every input is stale; once it is back, output
    resumes within 1 s of its first sweep on the wire."""
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    config, sensors, detections = node_config(tmp_path, yolox_path, default_rate_hz=10.0)

    def player() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "play", "kitti-object", str(kitti_dir),
             "--endpoint", sensors, "--rate", "10", "--loop", "--wait", "0.2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    first_seen: list[int] = []
    watching = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        # What the restarted player puts on the wire, seen as the node sees it.
        with Subscriber([sensors], ["lidar/top"]) as sub:
            watching.set()
            while not stop.is_set():
                if sub.recv(timeout_ms=20) is not None and not first_seen:
                    first_seen.append(time.time_ns())

    with running_node(config) as node, Outputs(detections) as outputs:
        proc = player()
        try:
            outputs.wait_for(lambda o: len(o.detections) >= 10, 60.0, "output")
            proc.kill()
            proc.wait(10)
            killed_ns = time.time_ns()
            outputs.wait_for(
                lambda o: any(t > killed_ns and d.status == "stale" for t, d in o.diagnostics),
                5.0,
                "a stale status",
            )
            stale_ns = next(
                t for t, d in outputs.diagnostics if t > killed_ns and d.status == "stale"
            )
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            watching.wait(10)
            proc = player()
            outputs.wait_for(lambda o: bool(first_seen), 60.0, "the restarted player")
            outputs.wait_for(
                lambda o: any(t > first_seen[0] for t, _ in o.detections), 10.0, "output again"
            )
        finally:
            stop.set()
            proc.kill()
            proc.wait(10)
        assert node.proc.poll() is None
    resumed_ns = next(t for t, _ in outputs.detections if t > first_seen[0])
    stale = next(d for t, d in outputs.diagnostics if t > killed_ns and d.status == "stale")
    figures = {
        "stale_reported_after_kill_ms": (stale_ns - killed_ns) / MS,
        "output_resumed_after_first_sweep_ms": (resumed_ns - first_seen[0]) / MS,
    }
    record_property("figures", figures)
    print(figures)
    assert not any(s.alive for s in stale.sensors)
    assert resumed_ns - first_seen[0] < 1 * S, figures


def test_an_input_host_that_does_not_resolve_is_said_and_noted(
    tmp_path: Path, yolox_path: Path
) -> None:
    """A misspelt sensor host: libzmq retries it for ever in silence, and the node said only "no
    message since the node started". Now it logs the endpoint and the resolver's words, and its
    diagnostics carry them as a note, while the other inputs are served as before."""
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    config, sensors, detections = node_config(tmp_path, yolox_path)
    bad = "tcp://no-such-host.invalid:2368"
    doc = yaml.safe_load(config.read_text())
    doc["inputs"]["endpoints"] = [bad, sensors]
    config.write_text(yaml.safe_dump(doc))
    with running_node(config) as node, Outputs(detections) as outputs:
        outputs.wait_for(
            lambda o: any(any(bad in n for n in d.notes) for _, d in o.diagnostics),
            20.0,
            "the unresolved host's note",
        )
        notes = [n for n in outputs.last_diagnostics().notes if bad in n]
        assert node.proc.poll() is None
    assert len(notes) == 1 and notes[0].startswith(
        f"input {bad}: host 'no-such-host.invalid' does not resolve ("
    ), notes
    logged = [line for line in node.output if bad in line and "WARNING" in line]
    assert len(logged) == 1 and "ZeroMQ keeps trying it" in logged[0], node.output
