"""Latency of the fusion engine: a real KITTI frame (000003, two cars) and a synthetic frame of
30 camera boxes, as the node runs it (ONNX Runtime on the smallest bucket shape that holds the
call) and at the full padded shape (what every call ran at before #17); torch CPU.

Run: `python -m pytest benchmarks/test_fusion_engine_bench.py --benchmark-enable`. Each benchmark
first checks that what it times is correct: both cars within 0.8 m of their reference boxes, and
the bucketed engine's outputs bitwise those of the full shape. `test_fusion_targets` reports
the medians against the targets of #17 (KITTI 000003 <= 5 ms, 30 boxes <= 10 ms); like the other
target reports it never fails on timing (a shared 2-core machine is too noisy for that): a missed
target is printed and raised as a warning.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from calibration import load_kitti_object_calib
from engines.factory import EngineFactory
from engines.fusion.config import FusionEngineConfig
from engines.fusion.graph import export_fusion_engine_onnx
from engines.fusion.runner import FusionEngineResult, FusionEngineRunner
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings
from perception.pipeline.ground import estimate_ground
from replay.evaluation import filter_references, project_box, read_pointpillars_boxes
from tests.conftest import png_size

FRAME = "000003"
#: #17's targets: the fusion engine's median on KITTI 000003, and on a frame of 30 boxes (ms).
KITTI_TARGET_MS = 5.0
CROWDED_TARGET_MS = 10.0
#: The synthetic drive and its frame with ~30 camera boxes (the synthetic detector's, at the
#: demo's score threshold); the fusion engine gets the 16 best, as the pipeline gives them.
SYNTH_SEED, SYNTH_SECONDS, CROWDED_BOXES = 3, 4.0, 30
TARGET_RUNS = 60

Args = tuple[object, ...]


@pytest.fixture(scope="module")
def frame_inputs(kitti_dir: Path, data_dir: Path):
    calib = kitti_dir / "calib" / f"{FRAME}.txt"
    image = kitti_dir / "image_2" / f"{FRAME}.png"
    scan = kitti_dir / "velodyne_reduced" / f"{FRAME}.bin"
    reference = data_dir / "kitti_pointpillars" / "reference_pred_velo" / f"{FRAME}.txt"
    for path in (calib, image, scan, reference):
        if not path.exists():
            pytest.skip(f"real data not found: {path}")
    width, height = png_size(image)
    rig = load_kitti_object_calib(calib, width, height)
    camera = rig.cameras["front"]
    camera_from_vehicle = rig.transform("camera/front", "vehicle")
    points = np.fromfile(scan, dtype="<f4").reshape(-1, 4)
    refs = filter_references(
        read_pointpillars_boxes(reference),
        classes=["Car"],
        camera=camera,
        camera_from_vehicle=camera_from_vehicle,
    )
    car = FusionEngineConfig().class_index("Car")
    boxes = []
    for ref in refs:
        projected = project_box(ref, camera, camera_from_vehicle)
        assert projected is not None
        boxes.append([*projected, ref.score, car])
    plane = estimate_ground(points)
    args = (
        points,
        np.asarray(boxes, np.float32),
        camera_from_vehicle.matrix,
        camera.k,
        (float(camera.width), float(camera.height)),
        (*plane.normal, plane.offset),
    )
    return args, refs


@pytest.fixture(scope="module")
def crowded_inputs(tmp_path_factory: pytest.TempPathFactory) -> Args:
    """The fusion engine's inputs of the synthetic frame with the camera box count nearest 30
    (31: frame 36), captured from the pipeline as it runs the drive (the points in the camera's
    view, the 16 best boxes)."""
    from engines.camera.detector import CameraDetector
    from perception.config import NodeConfig, SyncConfig
    from perception.pipeline import Pipeline
    from replay.drive import DriveReader
    from replay.offline import run_records
    from replay.synth.demo import SYNTH_DETECTOR_PATH
    from replay.synth.world import CAMERA_OFFSET_NS, CAMERA_STREAM, generate_drive

    path = tmp_path_factory.mktemp("synth") / f"seed{SYNTH_SEED}.mcap"
    generate_drive(path, seed=SYNTH_SEED, seconds=SYNTH_SECONDS)
    detector = CameraDetector(
        OnnxRuntimeEngine(SYNTH_DETECTOR_PATH), kind="yolox", score_threshold=0.15
    )
    pipeline = Pipeline(detector)
    # Each frame's camera box count (from the detector's decode) and the fusion engine call
    # that follows it.
    calls: list[tuple[int, Args]] = []
    counts: list[int] = [0]
    runner, detect = pipeline.fusion, pipeline.detector.decode

    def decode(*args: object, **kwargs: object) -> object:
        boxes = detect(*args, **kwargs)  # type: ignore[arg-type]
        counts[0] = len(boxes)
        return boxes

    def run(*args: object) -> FusionEngineResult:
        calls.append((counts[0], args))
        return FusionEngineRunner.run(runner, *args)  # type: ignore[arg-type]

    pipeline.detector.decode = decode  # type: ignore[method-assign, assignment]
    runner.run = run  # type: ignore[method-assign, assignment]
    sync = SyncConfig(
        camera_offsets_ms={CAMERA_STREAM: CAMERA_OFFSET_NS / 1e6},
        camera_windows_ms={CAMERA_STREAM: 20.0},
    )
    reader = DriveReader(path)
    config = replace(NodeConfig(), sync=sync)
    list(run_records(reader.messages(), pipeline, config, default_rig=reader.rig))
    count, args = min(calls, key=lambda call: abs(call[0] - CROWDED_BOXES))
    assert abs(count - CROWDED_BOXES) <= 1, f"no frame of ~{CROWDED_BOXES} boxes: {calls}"
    return args


@pytest.fixture(scope="module")
def full_runner(tmp_path_factory: pytest.TempPathFactory) -> FusionEngineRunner:
    """The full padded shape only (a fresh export), as every call ran before the buckets."""
    path = export_fusion_engine_onnx(tmp_path_factory.mktemp("fusion") / "fusion.onnx")
    return FusionEngineRunner(OnnxRuntimeEngine(path, num_threads=1))


@pytest.fixture(scope="module")
def node_runner() -> FusionEngineRunner:
    """The fusion engine as the node builds it: bucket shapes, ONNX Runtime, one thread."""
    return FusionEngineRunner(EngineFactory().fusion_engine())


def _check(result: FusionEngineResult, refs) -> None:
    assert result.valid.all() and len(result.valid) == len(refs) == 2
    for box, ref in zip(result.boxes3d, refs, strict=True):
        assert math.hypot(box[0] - ref.center[0], box[1] - ref.center[1]) < 0.8


def _same(a: FusionEngineResult, b: FusionEngineResult) -> None:
    for name in ("boxes3d", "valid", "fused_score"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_fusion_engine_onnxruntime(benchmark, frame_inputs, node_runner, full_runner) -> None:
    args, refs = frame_inputs
    _check(node_runner.run(*args), refs)
    _same(node_runner.run(*args), full_runner.run(*args))
    benchmark.group = "fusion engine, KITTI 000003"
    benchmark.extra_info["engine"] = node_runner.describe()
    result = benchmark(node_runner.run, *args)
    benchmark.extra_info["shape"] = str(node_runner.last_shape)
    _check(result, refs)


def test_fusion_engine_onnxruntime_full_shape(benchmark, frame_inputs, full_runner) -> None:
    args, refs = frame_inputs
    _check(full_runner.run(*args), refs)
    benchmark.group = "fusion engine, KITTI 000003"
    benchmark.extra_info["engine"] = full_runner.describe()
    result = benchmark(full_runner.run, *args)
    _check(result, refs)


def test_fusion_engine_torch_cpu(benchmark, frame_inputs) -> None:
    args, refs = frame_inputs
    runner = FusionEngineRunner(EngineFactory(EngineSettings(backend="torch")).fusion_engine())
    _check(runner.run(*args), refs)
    benchmark.group = "fusion engine, KITTI 000003"
    benchmark.extra_info["engine"] = f"{runner.describe()}, {torch.get_num_threads()} threads"
    result = benchmark(runner.run, *args)
    _check(result, refs)


@pytest.mark.parametrize("shape", ["buckets", "full"])
def test_fusion_engine_30_boxes(benchmark, crowded_inputs, node_runner, full_runner, shape) -> None:
    runner = node_runner if shape == "buckets" else full_runner
    expected = full_runner.run(*crowded_inputs)
    assert expected.valid.sum() >= 5
    _same(runner.run(*crowded_inputs), expected)
    benchmark.group = f"fusion engine, synthetic frame of {CROWDED_BOXES} boxes"
    benchmark.extra_info["engine"] = runner.describe()
    result = benchmark(runner.run, *crowded_inputs)
    _same(result, expected)


def _median_ms(runner: FusionEngineRunner, args: Args) -> float:
    runner.run(*args)  # type: ignore[arg-type]
    times = []
    for _ in range(TARGET_RUNS):
        start = time.perf_counter()
        runner.run(*args)  # type: ignore[arg-type]
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def test_fusion_targets(
    request: pytest.FixtureRequest, frame_inputs, crowded_inputs, node_runner, full_runner
) -> None:
    """#17's targets on the engine as the node runs it, with the full padded shape beside it."""
    config = request.config
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        pytest.skip("a timing report: run with --benchmark-enable")
    lines, missed = [], False
    for name, args, target in (
        ("KITTI 000003", frame_inputs[0], KITTI_TARGET_MS),
        (f"synthetic frame of {CROWDED_BOXES} boxes", crowded_inputs, CROWDED_TARGET_MS),
    ):
        median = _median_ms(node_runner, args)
        shape = node_runner.last_shape
        full = _median_ms(full_runner, args)
        met = median <= target
        missed |= not met
        lines.append(
            f"{name}: fusion engine median {median:.2f} ms at shape {shape} (full padded "
            f"shape {full:.2f} ms); target <= {target} ms " + ("met" if met else "NOT met")
        )
    report = "\n".join(lines)
    print(f"\n{report}")
    if missed:
        warnings.warn(report, stacklevel=1)
