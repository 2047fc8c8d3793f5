"""`perception bench` as a real process: a `perception run` child, real ZeroMQ sockets, the
synthetic drive and real KITTI frames; the files it writes and the node it must always stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import psutil  # type: ignore[import-untyped]
import pytest

from perception.config import parse_config
from perception.pipeline.timing import engine_ns
from replay.synth.world import generate_drive

STAGES_FIELDS = {"count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"}
TOP_FIELDS = {
    "version",
    "source",
    "rate_hz",
    "duration_s",
    "backend",
    "device",
    "node_config",
    "machine",
    "sweeps",
    "throughput_hz",
    "send_rate_hz",
    "end_to_end",
    "response",
    "stages",
    "node_overhead",
    "node_process",
    "max_rate",
    "node_diagnostics",
    "frames",
    "dropped_sent_s",
    "host_load_1m",
    "soak",
}


def _bench(cwd: Path, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", *args, "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _node_children(out: Path) -> list[Any]:
    """Live `perception run` processes started with a node config in this bench's --out folder
    (the config is written there under a temporary name, node.yaml once the run succeeded)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        configs = [a for a in cmdline if a.startswith(f"{out.resolve()}/")]
        if "run" in cmdline and configs:
            found.append(proc)
    return found


def _check_outputs(
    out: Path, stdout: str, rate_hz: float, duration_s: float, backend: str = "onnxruntime"
) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "bench.json").read_text())
    assert set(doc) >= TOP_FIELDS, TOP_FIELDS - set(doc)
    assert doc["rate_hz"] == rate_hz and doc["duration_s"] == duration_s
    assert (doc["backend"], doc["device"]) == (backend, "cpu")
    engines = parse_config(doc["node_config"]).engines
    assert (engines.backend, engines.effective_device) == (backend, "cpu")
    machine = doc["machine"]
    assert machine["cpu_model"] and machine["cpu_cores"] >= 1

    sweeps = doc["sweeps"]
    assert sweeps["sent"] == round(rate_hz * duration_s)
    assert sweeps["received"] + sweeps["dropped"] == sweeps["sent"]
    assert sweeps["received"] >= 1
    assert sweeps["unmatched"] == 0
    assert sweeps["skipped_bundles"] is not None and sweeps["skipped_bundles"] >= 0
    assert len(doc["frames"]) == sweeps["received"]
    assert len(doc["dropped_sent_s"]) == sweeps["dropped"]

    e2e = doc["end_to_end"]
    assert set(e2e) == STAGES_FIELDS and e2e["count"] == sweeps["received"]
    for stats in [e2e, *doc["stages"].values()]:
        assert 0 <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        assert stats["max_ms"] < 10_000
    assert e2e["p50_ms"] > 0
    assert {"camera_encoder", "lidar_encoder", "fusion"} <= set(doc["stages"])
    response = doc["response"]
    assert response["count"] == e2e["count"] and 0 < response["p50_ms"] <= e2e["p50_ms"]
    for frame in doc["frames"]:
        assert 0 < frame["latency_ns"] < 10e9
        assert 0 <= frame["sweep_span_ns"] < frame["latency_ns"]
        assert engine_ns(frame["timings_ns"]) < frame["latency_ns"] - frame["sweep_span_ns"]
    overhead = doc["node_overhead"]
    assert 0 < overhead["median_share"] < 1 and overhead["median_ms"] > 0
    # The yardstick: the camera encoder alone, timed in the bench before the node started.
    ratio = doc["frame_ratio"]
    assert 0 < ratio["camera_alone_ms"] < ratio["frame_median_ms"] * 2
    assert ratio["ratio"] == pytest.approx(ratio["frame_median_ms"] / ratio["camera_alone_ms"])
    assert 0 < doc["throughput_hz"] <= 2 * rate_hz
    process = doc["node_process"]
    assert process["samples"] >= 1 and process["cpu_max_pct"] >= process["cpu_mean_pct"] >= 0
    assert process["rss_max_mb"] > 50

    md = (out / "bench.md").read_text()
    assert md.startswith("| stage | p50 ms | p90 ms | p99 ms | max ms |\n| --- |")
    assert "| **end to end** (" in md and "| **response** (" in md and "| sweeps |" in md
    assert f"| backend | {backend} |" in md and "| device | cpu" in md
    assert "| stage | p50 ms |" in stdout and "| **end to end** (" in stdout
    assert "| whole frame | " in md and "x the camera encoder alone" in md

    png = out / "bench.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 600
    assert not _node_children(out)
    return doc


@pytest.fixture(scope="module")
def synth_cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose perception-demo/ holds a (short) synthetic drive, as `perception demo`
    leaves it: `perception bench` without a drive reuses it."""
    cwd = tmp_path_factory.mktemp("bench")
    (cwd / "perception-demo").mkdir()
    generate_drive(cwd / "perception-demo" / "synth_seed0.mcap", seed=0, seconds=2.0)
    return cwd


def test_bench_on_the_synthetic_drive_reports_the_run_over_time(synth_cwd: Path) -> None:
    """One run checks both the report of a run and its windows over time (a bench's start-up,
    its node's and its picture's, is most of a short run's cost). `--device auto` resolves to
    the CPU where ONNX Runtime has no CUDA."""
    from engines.onnxruntime_backend import cuda_provider_available

    device = "cpu" if cuda_provider_available() else "auto"
    done = _bench(
        synth_cwd, "--rate", "5", "--duration", "6", "--window", "2", "--out", "out",
        "--device", device,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "generating" not in done.stdout  # the demo's drive was reused
    out = synth_cwd / "out"
    doc = _check_outputs(out, done.stdout, 5.0, 6.0)
    if device == "auto":
        assert "| device | cpu (asked for auto) |" in done.stdout  # what ran, not what was asked
        assert doc["device_requested"] == "auto"
    # The node config saved beside the report is the one that ran, naming the saved rig.
    saved = (out / "node.yaml").read_text()
    assert "device: cpu" in saved and str((out / "rig.yaml").resolve()) in saved
    # The node's own output beside it: what it said while it ran.
    log = (out / "node.log").read_text()
    assert "perception run: ready" in log and "perception run: engine" in log
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert doc["source"].startswith("synthetic drive perception-demo/synth_seed0.mcap")
    assert doc["node_config"]["inputs"]["lidar_topic"] == "lidar"
    assert doc["node_config"]["camera_model"]["path"].endswith("synth_detector.onnx")
    assert doc["max_rate"] is None
    assert all(90e6 < f["sweep_span_ns"] <= 100e6 for f in doc["frames"])  # sent when complete

    soak, sweeps = doc["soak"], doc["sweeps"]
    windows = soak["windows"]
    assert soak["window_s"] == 2.0 and [w["start_s"] for w in windows] == [0.0, 2.0, 4.0]
    assert [sum(w[k] for w in windows) for k in ("sent", "received", "dropped")] == [
        sweeps["sent"],
        sweeps["received"],
        sweeps["dropped"],
    ]
    assert all(w["rss_mb"] > 50 and w["errors"] == 0 for w in windows)
    assert soak["errors"] == 0 and soak["errors_by_counter"] == {}
    # Six seconds are no soak: no RSS after the first minute, so no verdict.
    assert soak["rss"] is None and soak["passed"] is None
    assert len(soak["rss_series"]) >= 8
    md = (out / "bench.md").read_text()
    assert "| soak | no verdict: " in md and "Over time (2 s windows of send time" in md


def test_bench_on_kitti_object_frames(tmp_path: Path, kitti_dir: Path, yolox_path: Path) -> None:
    if not (kitti_dir / "image_2").is_dir() or not yolox_path.is_file():
        pytest.skip(f"real data not found: {kitti_dir}, {yolox_path}")
    done = _bench(
        tmp_path, str(kitti_dir.parent), "--model", str(yolox_path),
        "--rate", "5", "--duration", "3", "--out", "out",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    doc = _check_outputs(tmp_path / "out", done.stdout, 5.0, 3.0)
    assert doc["source"] == f"KITTI object {kitti_dir}"
    assert doc["node_config"]["inputs"]["lidar_topic"] == "lidar/top"
    assert all(f["sweep_span_ns"] == 0 for f in doc["frames"])  # KITTI scans carry no times


def test_bench_with_the_torch_backend(tmp_path: Path, kitti_dir: Path, yolox_path: Path) -> None:
    """`--backend torch` reaches the node (its config and the report say so) and the run is
    measured as with ONNX Runtime."""
    pytest.importorskip("torch")
    if not (kitti_dir / "image_2").is_dir() or not yolox_path.is_file():
        pytest.skip(f"real data not found: {kitti_dir}, {yolox_path}")
    done = _bench(
        tmp_path, str(kitti_dir), "--model", str(yolox_path), "--backend", "torch",
        "--device", "cpu", "--rate", "5", "--duration", "3", "--out", "out",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    doc = _check_outputs(tmp_path / "out", done.stdout, 5.0, 3.0, backend="torch")
    # Complete: every figure of the run is there (drops depend on the machine's load: torch's
    # first frames on the CPU take hundreds of ms).
    assert all(doc[k] is not None for k in TOP_FIELDS - {"max_rate"})
    assert set(doc["node_overhead"]) >= {"median_ms", "median_share", "meets_target"}
    assert doc["machine"]["torch_version"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.mcap"], "missing.mcap: no such drive"),
        (["--rate", "0"], "argument --rate: 0 is not > 0"),
        (["--duration", "-1"], "argument --duration: -1 is not > 0"),
        (["--out", "bench.json"], "bench.json: is a file; --out must be a folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bench.json").write_text("{}")
    done = _bench(tmp_path, *args, timeout_s=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert not (tmp_path / "perception-demo").exists()


@pytest.mark.slow
def test_find_max_rate(synth_cwd: Path) -> None:
    out = synth_cwd / "max"
    done = _bench(
        synth_cwd, "--find-max-rate", "--rate", "8", "--duration", "1.5", "--out", "max",
        timeout_s=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    search = json.loads((out / "bench.json").read_text())["max_rate"]
    assert search["trials"] and search["max_dropped_fraction"] == 0.05
    failing = [t["rate_hz"] for t in search["trials"] if not t["sustained"]]
    sustained = [
        t["rate_hz"]
        for t in search["trials"]
        if t["sustained"] and (not failing or t["rate_hz"] < min(failing))
    ]
    assert search["rate_hz"] == (max(sustained) if sustained else None)
    # The full run is made at the rate found (at the start rate when none was sustained).
    _check_outputs(out, done.stdout, search["rate_hz"] or 8.0, 1.5)
    assert "| max rate |" in done.stdout


@pytest.mark.slow
def test_sigint_stops_the_bench_and_its_node(synth_cwd: Path) -> None:
    out = synth_cwd / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "bench", "--duration", "60", "--out", str(out),
         "--quiet"],
        cwd=synth_cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _node_children(out) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not _node_children(out)
    # The folder the bench created is gone again: nothing was written into it.
    assert not out.exists()
