"""The pure parts of `perception bench`: statistics, drop accounting, the max-rate search,
sweep grouping and restamping, the node config it writes, and its report files."""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.bench import (
    ENGINE_STAGES,
    BenchResult,
    BenchSettings,
    Frame,
    MachineInfo,
    MaxRateSearch,
    RateTrial,
    account,
    check_settings,
    config_for_sweeps,
    find_max_rate,
    format_markdown,
    frame_ratio,
    group_sweeps,
    latency_stats,
    machine_info,
    node_config_document,
    node_overhead,
    parse_nvidia_smi,
    process_usage,
    restamp_sweep,
    result_document,
    run_bench,
    sweep_span_ns,
    write_report,
)
from app.bench.node_child import Collector, NodeChild
from app.bench.settings import MAX_WINDOWS
from app.bench.sweeps import send_times, with_engines
from app.bench.yardstick import time_camera_encoder
from app.commands.bench import _bench_config, _bench_drive
from app.common import Stages
from app.models import build_detector, build_pipeline
from app.threads import BLAS_THREAD_VARIABLES, OPENMP_WAIT_VARIABLE
from engines.errors import EngineError
from engines.settings import EngineSettings
from perception.config import CameraModelConfig, NodeConfig, parse_config
from perception.errors import PerceptionError
from perception.msgs.schema import DEFAULT_LIMITS
from perception.msgs.types import (
    CameraFrame,
    Detection3D,
    DetectionList,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RigMessage,
)
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveWriter
from tests.app.one_line import fails
from tests.replay.damage import damage_chunk, kitti_drive
from tests.replay.test_drive_limits import ROOMY, big_kitti_drive

MS = 1_000_000


def _sweep(i: int, stamp: int, topic: str = "lidar") -> tuple[str, LidarSweep]:
    return topic, LidarSweep(Header(topic, i, stamp, "lidar"), np.zeros((3, 4), np.float32))


def _camera(i: int, stamp: int, topic: str = "camera/front") -> tuple[str, CameraFrame]:
    return topic, CameraFrame(Header(topic, i, stamp, topic), np.zeros((4, 4, 3), np.uint8))


def _gnss(i: int, stamp: int) -> tuple[str, GnssFix]:
    return "gnss", GnssFix(Header("gnss", i, stamp, "gnss"), 48.0, 11.0, 500.0)


def _drive(n: int) -> list[tuple[str, Message]]:
    """Log order as replay.synth.world writes it: rig, then per sweep GNSS, camera, sweep."""
    out: list[tuple[str, Message]] = [
        ("rig", RigMessage(Header("rig", 0, 1000 * MS, "vehicle"), {}))
    ]
    for i in range(n):
        s = 1000 * MS + i * 100 * MS
        out += [_gnss(i, s + 5 * MS), _camera(i, s + 62 * MS), _sweep(i, s)]
    return out


# -- statistics ------------------------------------------------------------------------------


def test_latency_stats_percentiles_in_ms() -> None:
    values = [i * MS for i in range(1, 101)]  # 1..100 ms
    s = latency_stats(values)
    assert s is not None
    assert s.count == 100
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.max_ms == 100.0
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms


def test_latency_stats_of_nothing_is_none() -> None:
    assert latency_stats([]) is None


def test_account_counts_received_dropped_and_unmatched() -> None:
    sent = [10, 20, 30, 40]
    answers = [(10, False), (30, True), (30, False), (99, False)]
    a = account(sent, answers, skipped_bundles=1)
    assert (a.sent, a.received, a.dropped) == (4, 2, 2)
    assert a.received + a.dropped == a.sent
    assert a.dropped_fraction == 0.5
    assert a.degraded == 1
    assert a.unmatched == 2  # the repeat of 30 and the stranger 99
    assert a.skipped_bundles == 1


def test_account_of_an_empty_run() -> None:
    a = account([], [], None)
    assert (a.sent, a.received, a.dropped, a.dropped_fraction) == (0, 0, 0, 0.0)


def test_node_overhead_is_the_frame_minus_the_engines() -> None:
    engines = dict.fromkeys(("camera_encoder", "lidar_encoder", "fusion"), 10 * MS)  # 30 ms
    frames = [
        Frame(0.0, 32 * MS, 0, {**engines, "decode": MS}, False),  # 2 ms overhead, 6.25 %
        Frame(0.1, 140 * MS, 100 * MS, {**engines, "queue_wait": 4 * MS}, False),  # 10 ms, 25 %
        Frame(0.2, 33 * MS, 0, engines, False),  # 3 ms, 9.1 %
    ]
    o = node_overhead(frames)
    assert o is not None
    assert o.median_ms == pytest.approx(3.0)
    assert o.median_share == pytest.approx(3 / 33)
    assert o.unstaged_median_ms == pytest.approx(3.0)  # of 32-31, 40-34, 33-30 ms
    assert o.queue_wait_median_ms == 0.0  # of 0, 4, 0 ms
    assert o.meets_target
    slow = node_overhead([Frame(0.0, 40 * MS, 0, engines, False)])
    assert slow is not None and not slow.meets_target
    assert node_overhead([]) is None


def test_node_overhead_leaves_the_transport_apart() -> None:
    """The sweep's way to the node has targets of its own: reported, not counted as overhead."""
    timings = {"transport": 3 * MS, "camera_encoder": 10 * MS, "fusion": 5 * MS, "decode": MS}
    # The previous output's publish: after this one's response ended, in no sum.
    timings["publish"] = 2 * MS
    o = node_overhead([Frame(0.0, 20 * MS, 0, timings, False)] * 3)
    assert o is not None
    assert o.median_ms == pytest.approx(2.0)  # 20 - 15 - 3
    assert o.transport_median_ms == pytest.approx(3.0)
    assert o.unstaged_median_ms == pytest.approx(1.0)  # 20 - 19


def test_node_overhead_counts_a_parallel_lidar_branch_by_its_wait() -> None:
    # The lidar encoder's 12 ms ran beside the camera's 10: the frame waited 1 ms for it.
    timings = {"camera_encoder": 10 * MS, "lidar_encoder": 12 * MS, "branch_wait": MS}
    timings |= {"fusion": 5 * MS, "preprocess": 2 * MS}
    o = node_overhead([Frame(0.0, 20 * MS, 0, timings, False)])
    assert o is not None
    assert o.median_ms == pytest.approx(4.0)  # 20 - (10 + 1 + 5)
    assert o.unstaged_median_ms == pytest.approx(2.0)  # 20 - 18


def test_the_whole_frame_against_the_camera_encoder_alone() -> None:
    timings = {"preprocess": 2 * MS, "camera_encoder": 12 * MS, "lidar_encoder": 8 * MS}
    timings |= {"branch_wait": 0, "fusion": 3 * MS, "postprocess": MS, "tracking": 2 * MS}
    frames = [Frame(0.0, 30 * MS, 0, timings, False)] * 3
    # 18 ms of the step (tracking and the hidden lidar branch left out) against 12.5 ms.
    ratio = frame_ratio(frames, 12.5, 1.4)
    assert ratio is not None
    assert ratio.frame_median_ms == pytest.approx(18.0)
    assert ratio.ratio == pytest.approx(1.44) and not ratio.meets_target
    fast = frame_ratio(frames, 13.0, 1.4)
    assert fast is not None and fast.meets_target
    assert frame_ratio(frames, None, 1.4) is None and frame_ratio([], 12.0, 1.4) is None


def test_process_usage() -> None:
    u = process_usage([(50.0, 100_000_000), (150.0, 300_000_000)], 0.5)
    assert (u.cpu_mean_pct, u.cpu_max_pct, u.rss_max_mb, u.samples) == (100.0, 150.0, 300.0, 2)
    assert process_usage([], 0.5).cpu_mean_pct is None


# -- the max-rate search ---------------------------------------------------------------------


def _capacity(hz: float, calls: list[float] | None = None):
    def measure(rate: float, edge: bool) -> float:
        if calls is not None:
            calls.append(rate)
        return 0.0 if rate <= hz else 0.5

    return measure


def test_find_max_rate_steps_up_then_bisects() -> None:
    calls: list[float] = []
    search = find_max_rate(_capacity(7.3, calls), 1.0)
    assert calls[:4] == [1.0, 2.0, 4.0, 8.0]  # step up while sustained
    assert search.rate_hz is not None
    assert 7.3 / 1.1 <= search.rate_hz <= 7.3
    assert search.trials[-1].rate_hz in calls
    best = max(t.rate_hz for t in search.trials if t.sustained)
    worst = min(t.rate_hz for t in search.trials if not t.sustained)
    assert search.rate_hz == best and worst / best <= 1.1


def test_find_max_rate_uses_long_trials_at_the_edge() -> None:
    """Short trials step; once a sustained and a failing rate are known, every trial is long,
    the first of them the best rate again; the answer was sustained in a long trial."""
    search = find_max_rate(_capacity(7.3), 1.0)
    kinds = [(t.rate_hz, t.long) for t in search.trials]
    assert kinds[:5] == [(1.0, False), (2.0, False), (4.0, False), (8.0, False), (4.0, True)]
    assert all(t.long for t in search.trials[4:])
    assert any(t.long and t.sustained and t.rate_hz == search.rate_hz for t in search.trials)


def test_find_max_rate_drops_a_rate_a_long_trial_fails() -> None:
    """A short trial passes at 8 Hz (a 10 s run cannot tell 3 % from 14 %); the long trial
    does not: the answer is below it, confirmed long."""

    def measure(rate: float, edge: bool) -> float:
        if rate <= 6.0:
            return 0.0
        return 0.14 if edge or rate > 8.0 else 0.03

    search = find_max_rate(measure, 8.0)
    assert search.trials[0] == RateTrial(8.0, 0.03, True, False)
    assert search.rate_hz is not None and 6.0 / 1.1 <= search.rate_hz <= 6.0
    assert any(t.long and t.sustained and t.rate_hz == search.rate_hz for t in search.trials)
    assert any(t.long and not t.sustained and t.rate_hz == 8.0 for t in search.trials)


def test_find_max_rate_steps_down_from_an_unsustained_start() -> None:
    calls: list[float] = []
    search = find_max_rate(_capacity(3.5, calls), 10.0)
    assert calls[:3] == [10.0, 5.0, 2.5]
    assert search.rate_hz is not None and 3.5 / 1.1 <= search.rate_hz <= 3.5
    assert all(t.sustained == (t.dropped_fraction < 0.05) for t in search.trials)


def test_find_max_rate_counts_under_five_percent_as_sustained() -> None:
    # 4.9 % dropped is sustained, 5 % is not.
    search = find_max_rate(lambda r, _e: 0.049 if r < 6 else 0.05, 4.0, rel_tol=0.01)
    assert search.rate_hz is not None and 5.9 < search.rate_hz < 6.0


def test_find_max_rate_when_nothing_is_sustained() -> None:
    search = find_max_rate(lambda _r, _e: 1.0, 1.0, min_hz=0.2)
    assert search.rate_hz is None
    assert [t.rate_hz for t in search.trials] == [1.0, 0.5, 0.25]


def test_find_max_rate_stops_at_the_ceiling_and_trial_budget() -> None:
    ceiling = find_max_rate(lambda _r, _e: 0.0, 10.0, max_hz=100.0)
    assert ceiling.rate_hz == 80.0 and not ceiling.limit_found
    limited = find_max_rate(_capacity(1000.0), 1.0, max_trials=3)
    assert len(limited.trials) == 3 and limited.rate_hz == 4.0 and not limited.limit_found
    assert find_max_rate(_capacity(7.3), 1.0).limit_found


def test_a_search_from_a_tiny_rate_starts_at_the_floor_and_says_it_found_no_limit() -> None:
    """From --rate 1e-6 the doubling spent all 16 trials below 0.03 Hz, and the report called
    0.03 Hz the node's highest rate."""
    search = find_max_rate(_capacity(1000.0), 1e-6)
    assert search.trials[0].rate_hz == 0.1
    assert search.rate_hz is not None and not search.limit_found
    md = format_markdown(replace(_result(), max_rate=search))
    best = f"{search.rate_hz:.2f} Hz"
    assert f"| max rate | at least {best} with < 5% dropped: the search stopped before any " in md
    assert "| max rate | 8.00 Hz with < 5% dropped (steps: " in format_markdown(_result())


# -- sweeps ----------------------------------------------------------------------------------


def test_group_sweeps_puts_each_input_with_its_sweep_and_the_sweep_last() -> None:
    sweeps = group_sweeps(_drive(3))
    assert len(sweeps) == 3
    assert [t for t, _ in sweeps[0]] == ["rig", "gnss", "camera/front", "lidar"]
    for i, sweep in enumerate(sweeps):
        assert isinstance(sweep[-1][1], LidarSweep) and sweep[-1][1].header.seq == i
        assert all(m.header.seq == i for t, m in sweep if t != "rig")


def test_group_sweeps_limit_and_recorded_detections() -> None:
    dl = DetectionList(Header("detections", 0, 1000 * MS, "vehicle"), (), {}, 1)
    records = [*_drive(5), ("detections", dl)]
    sweeps = group_sweeps(records, limit=2)
    assert len(sweeps) == 2
    assert not any(isinstance(m, DetectionList) for s in sweeps for _, m in s)


def test_group_sweeps_errors() -> None:
    with pytest.raises(PerceptionError, match="no lidar sweep"):
        group_sweeps([_camera(0, 5)])
    with pytest.raises(PerceptionError, match="two topics"):
        group_sweeps([_sweep(0, 0, "lidar/a"), _sweep(1, 10, "lidar/b")])


def test_restamp_sends_a_sweep_at_its_last_point() -> None:
    topic, sweep = _sweep(0, 1000 * MS)
    timed = LidarSweep(sweep.header, sweep.points, np.array([0, 40 * MS, 99 * MS], np.int64))
    assert sweep_span_ns(timed) == 99 * MS and sweep_span_ns(sweep) == 0
    out = restamp_sweep((_camera(0, 1062 * MS), (topic, timed)), 5000 * MS)
    assert out[-1][1].header.stamp_ns == 5000 * MS - 99 * MS
    assert out[0][1].header.stamp_ns - out[-1][1].header.stamp_ns == 62 * MS


def test_restamp_keeps_offsets_to_the_sweep() -> None:
    sweep = group_sweeps(_drive(1))[0]
    now = 5_000_000_000_000_000_000
    out = restamp_sweep(sweep, now)
    stamps = {t: m.header.stamp_ns for t, m in out}
    assert stamps["lidar"] == now
    assert stamps["camera/front"] - now == 62 * MS
    assert stamps["gnss"] - now == 5 * MS
    assert stamps["rig"] == now
    assert [m.header.seq for _, m in out] == [m.header.seq for _, m in sweep]


def test_each_message_is_sent_when_captured_and_none_after_its_sweep() -> None:
    """The camera exposed 62 ms into a sweep of 99 ms goes 37 ms before the sweep is complete;
    one stamped after the sweep's last point goes with the sweep, in the sweep's order."""
    topic, sweep = _sweep(0, 1000 * MS)
    timed = LidarSweep(sweep.header, sweep.points, np.array([0, 40 * MS, 99 * MS], np.int64))
    late = _camera(0, 1200 * MS)
    out = restamp_sweep(((late[0] + "/late", late[1]), _camera(0, 1062 * MS), (topic, timed)), 0)
    times = send_times(out)
    assert [t for t, _, _ in times] == [-37 * MS, 0, 0]
    assert [name for _, name, _ in times] == ["camera/front", "camera/front/late", topic]
    assert times[-1][2] is out[-1][1]
    # A sweep without per-point times: everything stamped with it goes at once, in order.
    together = send_times(restamp_sweep(group_sweeps(_drive(1))[0], 0))
    assert [(t, name) for t, name, _ in together] == [
        (0, "rig"), (0, "gnss"), (0, "camera/front"), (0, "lidar")
    ]  # fmt: skip


def test_config_for_sweeps_takes_topics_and_camera_offsets_from_the_drive() -> None:
    config = config_for_sweeps(group_sweeps(_drive(4)), NodeConfig())
    assert config.inputs.lidar_topic == "lidar"
    assert config.inputs.camera_topics == ("camera/front",)
    assert config.inputs.gnss_topic == "gnss"
    assert config.sync.camera_offsets_ms == {"camera/front": 62.0}


def test_node_config_document_round_trips_with_our_endpoints(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    base = parse_config({"camera_model": {"path": str(model)}})
    doc = node_config_document(base, "ipc:///tmp/x/sensors", "ipc:///tmp/x/detections")
    parsed = parse_config(doc)
    assert parsed.inputs.endpoints == ("ipc:///tmp/x/sensors",)
    assert parsed.outputs.endpoint == "ipc:///tmp/x/detections"
    assert parsed.camera_model.path == str(model.resolve())
    assert parsed.sync == base.sync
    assert parsed.budgets == replace(base.budgets, apply_clock_offset=False)


def test_the_bench_node_takes_its_stamps_as_host_time() -> None:
    """The bench restamps every message onto the host clock: a clock estimate would only take
    the fastest transport off the latency (and, under load, a little more)."""
    base = parse_config({"budgets": {"apply_clock_offset": True, "end_to_end_ms": 80.0}})
    doc = node_config_document(base, "ipc:///tmp/x/sensors", "ipc:///tmp/x/detections")
    budgets = parse_config(doc).budgets
    assert budgets.apply_clock_offset is False and budgets.end_to_end_ms == 80.0


def test_node_config_document_keeps_the_key_files_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node child reads its config from the output folder: key paths relative to the
    working folder would point elsewhere from there."""
    monkeypatch.chdir(tmp_path)
    security = {"curve": True, "secret_key": "keys/node.key_secret", "allowed_clients": "ok"}
    base = parse_config({"security": security})
    doc = node_config_document(base, "ipc:///tmp/x/sensors", "ipc:///tmp/x/detections")
    assert doc["security"]["secret_key"] == str(tmp_path / "keys" / "node.key_secret")
    assert doc["security"]["allowed_clients"] == str(tmp_path / "ok")
    assert doc["security"]["server_key"] is None
    assert parse_config(doc).security.curve


def test_settings_are_checked() -> None:
    check_settings(BenchSettings(rate_hz=5.0, duration_s=3.0))
    for bad in (BenchSettings(rate_hz=0.0), BenchSettings(rate_hz=-1.0),
                BenchSettings(duration_s=0.0), BenchSettings(rate_hz=float("nan"))):  # fmt: skip
        with pytest.raises(PerceptionError):
            check_settings(bad)
    for backend in ("onnxruntime", "tensorrt", "torch"):
        check_settings(BenchSettings(backend=backend, device="cuda"))
    with pytest.raises(PerceptionError, match="--backend must be one of"):
        check_settings(BenchSettings(backend="tflite"))
    with pytest.raises(PerceptionError, match="--device must be one of"):
        check_settings(BenchSettings(device="tpu"))


def test_a_window_that_cuts_the_run_into_too_many_is_refused() -> None:
    """--window 1e-9 over 3 s: three billion windows of the report, made after the run, which
    then never ended."""
    check_settings(BenchSettings(duration_s=3.0, window_s=3.0 / MAX_WINDOWS))
    with pytest.raises(PerceptionError) as info:
        check_settings(BenchSettings(duration_s=3.0, window_s=1e-9))
    assert str(info.value) == (
        "--window 1e-09 s cuts --duration 3 s into more than 100,000 windows; give at least 3e-05 s"
    )


def test_with_engines_sets_the_backend_and_device_the_node_reads() -> None:
    base = parse_config({"engines": {"backend": "tensorrt", "device": "auto"}})
    assert with_engines(base, None, None).engines == base.engines  # None: the config's
    config = with_engines(base, "torch", None)
    assert (config.engines.backend, config.engines.device) == ("torch", "auto")
    doc = node_config_document(with_engines(NodeConfig(), "torch", "cuda"), "ipc://a", "ipc://b")
    assert (doc["engines"]["backend"], doc["engines"]["device"]) == ("torch", "cuda")
    assert parse_config(doc).engines == with_engines(NodeConfig(), "torch", "cuda").engines


# -- machine and outputs ---------------------------------------------------------------------


def test_parse_nvidia_smi() -> None:
    text = (
        "NVIDIA H100 80GB HBM3, 550.54.15, 81559, 1, 1980, 1980, 2619, 2619\n"
        "Orin (nvgpu), [N/A], [N/A], [N/A], 1300, [N/A], [N/A], [N/A]\n"
    )
    h100, orin = parse_nvidia_smi(text)
    assert h100.name == "NVIDIA H100 80GB HBM3" and h100.driver_version == "550.54.15"
    assert (h100.memory_total_mib, h100.sm_clock_mhz, h100.memory_clock_max_mhz) == (
        81559.0,
        1980.0,
        2619.0,
    )
    assert orin.driver_version is None and orin.memory_total_mib is None
    assert orin.sm_clock_mhz == 1300.0
    assert parse_nvidia_smi("") == ()


def _result() -> BenchResult:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(40):
        timings = {"decode": MS // 3, "sync_wait": 0, "preprocess": 8 * MS}
        timings |= {s: int(rng.uniform(5, 30) * MS) for s in ENGINE_STAGES}
        timings |= {"postprocess": MS, "publish": MS // 2}
        frames.append(Frame(i * 0.1, sum(timings.values()) + 101 * MS, 100 * MS, timings, False))
    stats = {
        name: latency_stats([f.timings_ns[name] for f in frames]) for name in frames[0].timings_ns
    }
    return BenchResult(
        source="synthetic drive test.mcap",
        rate_hz=10.0,
        duration_s=4.2,
        backend="torch",
        device="cpu",
        node_config={"inputs": {"lidar_topic": "lidar"}},
        machine=MachineInfo("Test CPU", 2, 2, 8000.0, "Linux", "3.11.7", "1.20.0"),
        sweeps=account([int(f.sent_s * 1e9) for f in frames] + [42], [], 2),
        throughput_hz=9.5,
        send_rate_hz=10.0,
        end_to_end=latency_stats([f.latency_ns for f in frames]),
        response=latency_stats([f.response_ns for f in frames]),
        stages={k: v for k, v in stats.items() if v is not None},
        node_overhead=node_overhead(frames),
        node_process=process_usage([(120.0, 200_000_000)], 0.5),
        max_rate=MaxRateSearch(8.0, 0.05, (RateTrial(8.0, 0.0, True), RateTrial(16.0, 0.4, False))),
        node_diagnostics={"counters": {"skipped_bundles": 2}},
        frames=tuple(frames),
        dropped_sent_s=(4.1,),
        host_load_1m=(0.5, 1.5),
    )


def test_markdown_has_the_latency_table_and_the_figures() -> None:
    md = format_markdown(_result())
    lines = md.splitlines()
    assert lines[0] == "| stage | p50 ms | p90 ms | p99 ms | max ms |"
    assert any(line.startswith("| **end to end** (sweep stamp -> published) |") for line in lines)
    assert any(line.startswith("| **response** (sweep sent -> published) |") for line in lines)
    assert any(line.startswith("| camera_encoder |") for line in lines)
    assert "| max rate | 8.00 Hz" in md
    assert "| node overhead |" in md and "| node CPU |" in md
    assert "| backend | torch |" in md and "| device | cpu |" in md
    assert "| calibration monitor | off |" in md


def test_the_machine_line_names_the_nodes_blas_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # The node inherits the bench's environment: what it holds there is what the node runs with.
    for name in BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert machine_info().blas_threads is None
    ort_run = replace(_result(), backend="onnxruntime")
    md = format_markdown(ort_run)
    assert "; BLAS threads unset (one per core) |" in md
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert machine_info().blas_threads == "OMP_NUM_THREADS=4"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    held = machine_info()
    assert held.blas_threads == "1"
    md = format_markdown(replace(ort_run, machine=held))
    assert "; BLAS threads 1 |" in md


def test_the_machine_line_names_the_openmp_policy_with_the_torch_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torch's idle OpenMP threads spin or sleep as the environment the node inherits says.
    monkeypatch.delenv(OPENMP_WAIT_VARIABLE, raising=False)
    assert machine_info().openmp_wait_policy is None
    torch_run = replace(_result(), backend="torch")
    assert "; OMP_WAIT_POLICY unset (spin, then sleep) |" in format_markdown(torch_run)
    monkeypatch.setenv(OPENMP_WAIT_VARIABLE, "PASSIVE")
    held = machine_info()
    assert held.openmp_wait_policy == "PASSIVE"
    assert "; OMP_WAIT_POLICY PASSIVE |" in format_markdown(replace(torch_run, machine=held))
    # ONNX Runtime has pools of its own: the policy is not part of its setup.
    ort_run = replace(_result(), backend="onnxruntime", machine=held)
    assert "OMP_WAIT_POLICY" not in format_markdown(ort_run)


def test_the_calibration_monitors_cost_is_per_published_sweep() -> None:
    counters = {
        "published": 400,
        "calibration_sweeps": 100,
        "calibration_ns": 900_000_000,
        "calibration_cpu_ns": 600_000_000,
    }
    md = format_markdown(replace(_result(), node_diagnostics={"counters": counters}))
    assert (
        "| calibration monitor | 1.50 ms of CPU per sweep on average (6.0 ms on each of the 100 "
        "of 400 sweeps it used since the node started, its warm-up included; wall time 2.25 ms "
        "per sweep)" in md
    )


def test_the_throughput_is_a_rate_between_answers_and_none_of_one() -> None:
    """A run of one sweep at 0.01 Hz reported 7.2 DetectionLists a second: one answer over the
    time from its send to its answer."""
    from app.bench.node_child import Answer
    from app.bench.runner import _Run

    def run(received_ms: list[int]) -> _Run:
        answers = tuple(Answer(i, t * 1_000_000, 0, {}, False) for i, t in enumerate(received_ms))
        return _Run(10.0, tuple(range(len(received_ms))), (), answers, 0, (), None)

    assert run([139]).throughput_hz() is None
    assert run([]).throughput_hz() is None
    assert run([130, 230, 330, 430]).throughput_hz() == pytest.approx(10.0)
    md = format_markdown(replace(_result(), throughput_hz=None))
    assert "| throughput | n/a (fewer than two answers) |" in md


def test_the_sensor_clocks_row_counts_stamp_faults_and_jumps() -> None:
    assert "| sensor clocks | n/a |" in format_markdown(_result())
    quiet = {"counters": {"stamp_faults": 0, "clock_jumps": 0}}
    md = format_markdown(replace(_result(), node_diagnostics=quiet))
    assert "| sensor clocks | stamp faults 0, clock jumps 0, since the node started |" in md
    faulty = {"counters": {"stamp_faults": 20, "clock_jumps": 1}}
    md = format_markdown(replace(_result(), node_diagnostics=faulty))
    row = "| sensor clocks | stamp faults 20, clock jumps 1, since the node started (node.log"
    assert row in md


def test_write_report_writes_json_markdown_and_png(tmp_path: Path) -> None:
    json_path, md_path, png_path = write_report(_result(), tmp_path)
    doc = json.loads(json_path.read_text())
    assert doc["version"] == 1
    assert (doc["backend"], doc["device"]) == ("torch", "cpu")
    assert doc["sweeps"]["sent"] == 41 and doc["max_rate"]["rate_hz"] == 8.0
    assert "gpus" not in doc["machine"] and "tensorrt_version" not in doc["machine"]
    assert doc == json.loads(json.dumps(result_document(_result())))
    assert md_path.read_text().startswith("| stage |")
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_detection_list_fields_the_bench_reads_exist() -> None:
    # The bench reads only these public fields of a DetectionList.
    dl = DetectionList(
        Header("detections", 0, 1, "vehicle"),
        (Detection3D("Car", 0.9, (1.0, 0.0, 0.0), (4.0, 2.0, 1.5), 0.0),),
        {"fusion": 1},
        5,
        degraded=("camera/front",),
    )
    assert (dl.header.stamp_ns, dl.timings_ns, dl.latency_ns, dl.degraded) == (
        1,
        {"fusion": 1},
        5,
        ("camera/front",),
    )


def test_write_report_replaces_the_previous_report_only_whole(tmp_path: Path) -> None:
    previous = {p: f"previous {p}\n" for p in ("bench.json", "bench.md", "bench.png")}
    for name, text in previous.items():
        (tmp_path / name).write_text(text)
    broken = dataclasses.replace(_result(), rate_hz=float("nan"))  # JSON without NaN refuses it
    with pytest.raises(ValueError, match="JSON"):
        write_report(broken, tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == previous  # nor temporaries
    write_report(_result(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(previous)
    assert json.loads((tmp_path / "bench.json").read_text())["rate_hz"] == 10.0


def test_report_says_what_the_device_was_asked_for() -> None:
    md = format_markdown(dataclasses.replace(_result(), device_requested="auto"))
    assert "| device | cpu (asked for auto) |" in md
    doc = result_document(dataclasses.replace(_result(), device_requested="auto"))
    assert (doc["device"], doc["device_requested"]) == ("cpu", "auto")


# -- the device the engines run on ------------------------------------------------------------


def _cuda_usable() -> bool:
    from engines.onnxruntime_backend import cuda_provider_available

    return cuda_provider_available()


def test_device_is_resolved_before_the_node_starts() -> None:
    from app.bench.device import resolve_engines

    cpu = resolve_engines(EngineSettings("onnxruntime", "cpu"))
    assert (cpu.engines.device, cpu.description, cpu.requested) == ("cpu", "cpu", "cpu")
    auto = resolve_engines(EngineSettings("onnxruntime", "auto"))
    expected = "cuda" if _cuda_usable() else "cpu"
    assert (auto.engines.device, auto.description, auto.requested) == (expected, expected, "auto")


def test_cuda_without_a_usable_gpu_is_refused() -> None:
    from app.bench.device import resolve_engines

    if _cuda_usable():
        pytest.skip("a CUDA device is usable here")
    with pytest.raises(EngineError, match=r"engines.device cuda \(onnxruntime\): this ONNX"):
        resolve_engines(EngineSettings("onnxruntime", "cuda"))
    with pytest.raises(EngineError, match=r"engines.backend tensorrt: "):
        resolve_engines(EngineSettings("tensorrt", "auto"))
    fallback = resolve_engines(EngineSettings("tensorrt", "auto", fallback="onnxruntime"))
    assert fallback.description.endswith("running onnxruntime on cpu")


def test_the_camera_encoder_alone_is_the_pipelines(kitti_dir: Path, yolox_path: Path) -> None:
    """The bench's yardstick builds only the camera encoder, as the node's pipeline builds it:
    the same boxes on a real KITTI image, and a median time over the sweeps' images."""
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    config = NodeConfig(camera_model=CameraModelConfig(path=str(yolox_path), kind="yolox"))
    image = cv2.imread(str(kitti_dir / "image_2" / "000003.png"))
    assert image is not None
    boxes = build_detector(config).detect(image)
    assert boxes == build_pipeline(config).detector.detect(image) and boxes
    folder = KittiObjectFolder(kitti_dir, lidar_dir="velodyne")
    messages = [m for i in range(len(folder.frames)) for m in folder.frame_messages(i, i * MS)]
    records = [(m.header.stream, m) for m in messages]
    timed = time_camera_encoder(config, group_sweeps(records), rounds=3)
    assert timed is not None and timed.rounds == 3 and timed.median_ms > 0


def test_a_damaged_drive_is_benched_on_what_it_holds(
    kitti_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chunk of the drive whose bytes are damaged is left out, and said, once."""
    drive = kitti_drive(kitti_dir, tmp_path / "drive.mcap")
    damage_chunk(drive, 3)
    with Stages("sweep", True) as stages:
        _what, sweeps, _rig, _synthetic, _limits = _bench_drive(str(drive), 100, stages)
    assert len(sweeps) == 7
    out = capsys.readouterr().out
    assert out == f"perception bench: {drive}: 3 unreadable message(s) left out\n"


def test_a_drive_is_benched_under_the_limits_it_was_recorded_under(
    kitti_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 12 MP camera recorded from a node whose limits were raised: without a config the
    bench reads, sends and collects under the drive's limits (its camera frames were refused
    on sending); with a config, the config's, and the frames above them are left out, said."""
    drive = big_kitti_drive(kitti_dir, tmp_path / "big.mcap")
    with Stages("sweep", True) as stages:
        _what, sweeps, _rig, _synthetic, limits = _bench_drive(str(drive), 100, stages)
        assert limits == ROOMY
        assert sum(isinstance(m, CameraFrame) for sweep in sweeps for _t, m in sweep) == 8
        args = argparse.Namespace(model=None, config=None)
        assert _bench_config(args, None, sweeps, False, limits).limits == ROOMY
        assert capsys.readouterr().out == ""
        *_, held = _bench_drive(str(drive), 100, stages, limits=DEFAULT_LIMITS)
    assert held == DEFAULT_LIMITS
    assert (
        capsys.readouterr().out == f"perception bench: {drive}: 8 unreadable message(s) left out\n"
    )


def test_a_node_killed_by_a_signal_is_said_so(tmp_path: Path) -> None:
    """`kill -9` of the node was "the node exited with code -9"."""
    child = NodeChild(tmp_path / "node.yaml")  # killed before it reads its config
    child.proc.kill()
    child.proc.wait()
    try:
        with pytest.raises(PerceptionError) as info:
            child.check_alive()
    finally:
        child.close()
    assert str(info.value).startswith("the node was killed by signal 9 (SIGKILL) during the bench")


def test_waiting_for_a_dead_nodes_diagnostics_fails_at_once(tmp_path: Path) -> None:
    """A node killed after its last answer, while the bench waited for its diagnostics: the
    wait ran out after 2.5 s and the bench wrote a report as if the run had been whole (the
    node's counters missing), exit 0."""
    child = NodeChild(tmp_path / "node.yaml")
    child.proc.kill()
    child.proc.wait()
    try:
        with Collector(f"ipc://{tmp_path}/detections", "detections", "diagnostics") as collector:
            start = time.monotonic()
            with pytest.raises(PerceptionError, match="killed by signal 9"):
                collector.diagnostics_after(
                    time.time_ns(), 30.0, threading.Event(), alive=child.check_alive
                )
            assert time.monotonic() - start < 5.0
    finally:
        child.close()


def _without_rigs(kitti_dir: Path, path: Path) -> Path:
    with DriveWriter(path) as w:
        for msg in KittiObjectFolder(kitti_dir).messages():
            if not isinstance(msg, RigMessage):
                w.write(msg, msg.header.stamp_ns)
    return path


def test_what_the_node_would_wait_for_in_vain_is_refused_before_it_starts(
    capsys: pytest.CaptureFixture[str], kitti_dir: Path, tmp_path: Path, yolox_path: Path
) -> None:
    """A config whose lidar topic is not the drive's, and a drive with no rig: each was a
    minute of waiting, then "the node answered none of 60 sweeps in 60 s", naming neither."""
    out = tmp_path / "report"
    bench = ["bench", "--duration", "1", "--out", str(out), "--model", str(yolox_path), "--quiet"]
    drive = kitti_drive(kitti_dir, tmp_path / "kitti.mcap")
    config = tmp_path / "node.yaml"
    config.write_text("inputs:\n  lidar_topic: lidar/roof\n")
    err = fails(capsys, *bench, str(drive), "--config", str(config))
    assert err == (
        f"perception bench: error: drive {drive}: no lidar sweeps on lidar/roof "
        f"(inputs.lidar_topic of --config {config}); its sweeps are on lidar/top"
    )
    bare = _without_rigs(kitti_dir, tmp_path / "bare.mcap")
    err = fails(capsys, *bench, str(bare))
    assert err == (
        f"perception bench: error: drive {bare}: holds no rig (calibration); give one with "
        "--config (its `rig`)"
    )
    assert not out.exists()


class _FailingNode:
    """A node child that exits before it is ready (a busy metrics port, a broken model)."""

    def __init__(self, config_path: Path, log_path: Path | None = None) -> None:
        del config_path, log_path

    def __enter__(self) -> _FailingNode:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def wait_ready(self, timeout_s: float, stop: threading.Event) -> None:
        raise PerceptionError("the node exited with code 2 during the bench: no output")


def test_a_failed_bench_leaves_no_empty_output_folder_it_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bench whose node failed left the empty --out folder (and its parents) it had created;
    a folder that was there before is kept."""
    monkeypatch.setattr("app.bench.runner.NodeChild", _FailingNode)
    # No images: no camera encoder to time before the node starts.
    sweeps = group_sweeps([r for r in _drive(3) if not isinstance(r[1], CameraFrame)])
    settings = BenchSettings(duration_s=1.0)
    new = tmp_path / "new" / "report"
    with pytest.raises(PerceptionError, match="the node exited"):
        run_bench(sweeps, NodeConfig(), settings, new, source="drive")
    assert not (tmp_path / "new").exists()
    had = tmp_path / "had"
    had.mkdir()
    with pytest.raises(PerceptionError, match="the node exited"):
        run_bench(sweeps, NodeConfig(), settings, had / "report", source="drive")
    assert had.is_dir() and not (had / "report").exists()
    with pytest.raises(PerceptionError, match="the node exited"):
        run_bench(sweeps, NodeConfig(), settings, had, source="drive")
    assert had.is_dir()
