"""Fusion engine: export, torch vs ONNX Runtime parity, and accuracy on the real KITTI frames.

The camera boxes are projected from the label / PointPillars reference boxes, as in
tests/perception/test_fusion.py, so these tests measure the 3D stage alone. The numpy fusion's
figures on the same inputs (for comparison): pedestrian 0.12-0.15 m; cars <= 40 m median centre
error 0.33 m, median yaw error 2.6 degrees.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
import torch

from calibration.kitti import kitti_label_to_velo
from engines.errors import EngineError
from engines.factory import EngineFactory
from engines.fusion.buckets import BucketedFusionEngine
from engines.fusion.config import INPUT_NAMES, OUTPUT_NAMES, PACKAGED_MODEL_PATH, FusionEngineConfig
from engines.fusion.graph import FusionEngine, cached_fusion_engine_onnx, export_fusion_engine_onnx
from engines.fusion.runner import FusionEngineResult, FusionEngineRunner
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings
from perception.msgs.types import Detection3D
from perception.pipeline.ground import estimate_ground
from replay.evaluation import (
    MatchResult,
    ReferenceBox,
    filter_references,
    format_report,
    match_detections,
    merge_results,
    project_box,
    read_pointpillars_boxes,
)
from tests.conftest import KittiFrame

CONFIG = FusionEngineConfig()
CAR = CONFIG.class_index("Car")
PEDESTRIAN = CONFIG.class_index("Pedestrian")

# torch and ONNX Runtime run the same float32 graph; they differ only by operator rounding
# (fused matmuls, atan2 written as atan + quadrant fix-up). Measured on these frames: <= 1e-5 m.
PARITY_ATOL_M = 1e-3
PARITY_ATOL_RAD = 1e-3
PARITY_ATOL_SCORE = 1e-5


@dataclass(frozen=True)
class Inputs:
    """One frame's engine inputs (unpadded)."""

    points: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float32]
    camera_from_vehicle: npt.NDArray[np.float64]
    intrinsics: npt.NDArray[np.float64]
    image_size: tuple[float, float]
    ground: tuple[float, float, float, float]

    def args(self) -> tuple[object, ...]:
        return (
            self.points,
            self.boxes,
            self.camera_from_vehicle,
            self.intrinsics,
            self.image_size,
            self.ground,
        )


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_fusion_engine_onnx(tmp_path_factory.mktemp("fusion") / "fusion.onnx")


@pytest.fixture(scope="module")
def ort_runner(onnx_path: Path) -> FusionEngineRunner:
    return FusionEngineRunner(OnnxRuntimeEngine(onnx_path))


def torch_fusion(config: FusionEngineConfig = CONFIG) -> FusionEngineRunner:
    engine = EngineFactory(EngineSettings(backend="torch")).fusion_engine(config)
    return FusionEngineRunner(engine, config)


@pytest.fixture(scope="module")
def torch_runner() -> FusionEngineRunner:
    return torch_fusion()


def _inputs(frame: KittiFrame, boxes: Sequence[Sequence[float]]) -> Inputs:
    plane = estimate_ground(frame.points)
    camera = frame.camera
    return Inputs(
        points=frame.points,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 6),
        camera_from_vehicle=frame.camera_from_vehicle.matrix,
        intrinsics=camera.k,
        image_size=(float(camera.width), float(camera.height)),
        ground=(*plane.normal, plane.offset),
    )


def _pedestrian_center(frame: KittiFrame) -> npt.NDArray[np.float64]:
    # Label: Pedestrian ... 712.40 143.00 810.73 307.92 h=1.89 w=0.48 l=1.20 x=1.84 y=1.47 z=8.41
    center: npt.NDArray[np.float64] = kitti_label_to_velo(
        frame.calib_path, [1.84, 1.47 - 1.89 / 2, 8.41]
    )
    return center


def _car_inputs(
    kitti_frame: Callable[[str], KittiFrame], reference_dir: Path, frame_id: str, max_range_m: float
) -> tuple[list[ReferenceBox], Inputs]:
    frame = kitti_frame(frame_id)
    refs = filter_references(
        read_pointpillars_boxes(reference_dir / f"{frame_id}.txt"),
        min_score=0.5,
        max_range_m=max_range_m,
        classes=["Car"],
        camera=frame.camera,
        camera_from_vehicle=frame.camera_from_vehicle,
    )
    boxes = []
    for ref in refs:
        projected = project_box(ref, frame.camera, frame.camera_from_vehicle)
        assert projected is not None
        boxes.append([*projected, ref.score, CAR])
    return refs, _inputs(frame, boxes)


def _detections(result: FusionEngineResult, label: str) -> list[Detection3D]:
    out = []
    for box, ok, score in zip(result.boxes3d, result.valid, result.fused_score, strict=True):
        if ok:
            cx, cy, cz, length, width, height, yaw = (float(v) for v in box)
            out.append(Detection3D(label, float(score), (cx, cy, cz), (length, width, height), yaw))
    return out


def _car_run(
    runner: FusionEngineRunner,
    kitti_frame: Callable[[str], KittiFrame],
    reference_dir: Path,
    frames: Sequence[str],
    max_range_m: float,
) -> tuple[list[ReferenceBox], MatchResult]:
    results = []
    all_refs: list[ReferenceBox] = []
    for frame_id in frames:
        refs, inputs = _car_inputs(kitti_frame, reference_dir, frame_id, max_range_m)
        if not refs:
            results.append(match_detections([], [], classes=["Car"]))
            continue
        dets = _detections(runner.run(*inputs.args()), "Car")  # type: ignore[arg-type]
        results.append(match_detections(dets, refs, classes=["Car"]))
        all_refs += refs
    return all_refs, merge_results(results)


# ---------------------------------------------------------------------------------------------
# Graph


def test_prior_table() -> None:
    assert CONFIG.class_index("Car") == 0
    assert CONFIG.class_index("giraffe") == len(CONFIG.priors)  # the generic prior
    assert CONFIG.prior_table().shape == (len(CONFIG.priors) + 1, 11)


def test_packaged_model_is_the_default_export(tmp_path: Path) -> None:
    # The runtime install ships the export (no torch there): it must be today's graph.
    fresh = export_fusion_engine_onnx(tmp_path / "fresh.onnx")
    assert PACKAGED_MODEL_PATH.read_bytes() == fresh.read_bytes(), (
        "engines/models/fusion_engine.onnx is stale: run `python -m engines.fusion.graph`"
    )


def test_the_factory_runs_the_packaged_model_for_the_default_config() -> None:
    runner = FusionEngineRunner(EngineFactory().fusion_engine())
    assert runner.describe().startswith("fusion engine: onnxruntime fusion_engine.onnx")


def test_other_configs_are_exported_once_and_checked(tmp_path: Path) -> None:
    small = replace(CONFIG, n_max=4096, b_max=4)
    bucketed = EngineFactory(export_dir=tmp_path).fusion_engine(small)
    assert isinstance(bucketed, BucketedFusionEngine) and bucketed.sizes == ((4096, 4),)
    engine = bucketed.full
    assert isinstance(engine, OnnxRuntimeEngine)
    assert engine.model_path == cached_fusion_engine_onnx(small, tmp_path)
    assert engine.model_path.parent == tmp_path and small.cache_key()[:24] in engine.model_path.name
    FusionEngineRunner(engine, small)
    with pytest.raises(EngineError, match=r"^fusion engine: the engine fusion_engine-\S+ has"):
        FusionEngineRunner(engine, CONFIG)


def test_exported_graph_has_static_shapes(onnx_path: Path, ort_runner: FusionEngineRunner) -> None:
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    shapes = {}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims), value.name
        shapes[value.name] = tuple(d.dim_value for d in dims)
    assert [v.name for v in model.graph.input] == list(INPUT_NAMES)
    assert [v.name for v in model.graph.output] == list(OUTPUT_NAMES)
    assert shapes["points"] == (CONFIG.n_max, 4)
    assert shapes["boxes"] == (CONFIG.b_max, 6)
    assert shapes["camera_from_vehicle"] == (4, 4)
    assert shapes["boxes3d"] == (CONFIG.b_max, 7)
    assert shapes["valid"] == (CONFIG.b_max,)
    assert shapes["fused_score"] == (CONFIG.b_max,)
    assert "onnxruntime" in ort_runner.describe()
    assert tuple(s.name for s in ort_runner.inputs) == INPUT_NAMES


def test_export_with_other_sizes(tmp_path: Path) -> None:
    path = export_fusion_engine_onnx(tmp_path / "small.onnx", n_max=4096, b_max=4)
    model = onnx.load(str(path))
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    assert dims["points"] == [4096, 4] and dims["boxes"] == [4, 6]


def _parity_cases(
    kitti_frame: Callable[[str], KittiFrame], reference_dir: Path
) -> list[tuple[str, Inputs]]:
    frame = kitti_frame("000000")
    cases = [
        (
            "000000",
            _inputs(
                frame,
                [
                    [712.40, 143.00, 810.73, 307.92, 0.82, PEDESTRIAN],
                    [520.0, 300.0, 720.0, 370.0, 0.9, CAR],  # road only
                    [100.0, 120.0, 300.0, 250.0, 0.5, 99],  # generic prior
                    [600.0, 200.0, 600.0, 250.0, 0.5, CAR],  # empty box
                ],
            ),
        )
    ]
    for frame_id in ("000003", "000004", "000005"):
        _, inputs = _car_inputs(kitti_frame, reference_dir, frame_id, 60.0)
        cases.append((frame_id, inputs))
    return cases


def test_torch_and_onnxruntime_agree(
    kitti_frame: Callable[[str], KittiFrame],
    reference_dir: Path,
    ort_runner: FusionEngineRunner,
    torch_runner: FusionEngineRunner,
) -> None:
    worst = [0.0, 0.0, 0.0]
    for name, inputs in _parity_cases(kitti_frame, reference_dir):
        a = torch_runner.run(*inputs.args())  # type: ignore[arg-type]
        b = ort_runner.run(*inputs.args())  # type: ignore[arg-type]
        assert a.boxes3d.shape == b.boxes3d.shape == (len(inputs.boxes), 7), name
        np.testing.assert_array_equal(a.valid, b.valid, err_msg=name)
        np.testing.assert_allclose(a.boxes3d[:, :6], b.boxes3d[:, :6], atol=PARITY_ATOL_M)
        yaw_diff = np.angle(np.exp(2j * (a.boxes3d[:, 6] - b.boxes3d[:, 6]))) / 2
        assert np.all(np.abs(yaw_diff) <= PARITY_ATOL_RAD), name
        np.testing.assert_allclose(a.fused_score, b.fused_score, atol=PARITY_ATOL_SCORE)
        worst[0] = max(
            worst[0], float(np.abs(a.boxes3d[:, :6] - b.boxes3d[:, :6]).max(initial=0.0))
        )
        worst[1] = max(worst[1], float(np.abs(yaw_diff).max(initial=0.0)))
        worst[2] = max(worst[2], float(np.abs(a.fused_score - b.fused_score).max(initial=0.0)))
    print(f"torch vs ONNX Runtime: max |d| {worst[0]:.2e} m, {worst[1]:.2e} rad, {worst[2]:.2e}")


# ---------------------------------------------------------------------------------------------
# Accuracy on the real frames


@pytest.mark.parametrize("box_source", ["label box", "reference projection"])
def test_pedestrian_000000_matches_label(
    kitti_frame: Callable[[str], KittiFrame], ort_runner: FusionEngineRunner, box_source: str
) -> None:
    frame = kitti_frame("000000")
    center = _pedestrian_center(frame)
    if box_source == "label box":
        box = (712.40, 143.00, 810.73, 307.92)
    else:
        ref = ReferenceBox("Pedestrian", (center[0], center[1], center[2]), (1.2, 0.48, 1.89), 0)
        projected = project_box(ref, frame.camera, frame.camera_from_vehicle)
        assert projected is not None
        box = projected
    result = ort_runner.run(*_inputs(frame, [[*box, 0.82, PEDESTRIAN]]).args())  # type: ignore[arg-type]
    assert result.valid.tolist() == [True]
    cx, cy, cz, length, width, height, _ = result.boxes3d[0]
    error = math.hypot(cx - center[0], cy - center[1])
    print(f"000000 pedestrian ({box_source}): BEV centre error {error:.2f} m (numpy: 0.12-0.15)")
    assert error < 0.5
    assert abs(cz - center[2]) < 0.3
    assert 0.0 < result.fused_score[0] <= 0.82
    assert 0.5 <= length <= 1.5 and 0.5 <= width <= 1.5 and 1.5 <= height <= 2.3


def test_cars_000003_to_000005_match_reference_boxes(
    kitti_frame: Callable[[str], KittiFrame],
    reference_dir: Path,
    ort_runner: FusionEngineRunner,
) -> None:
    refs, merged = _car_run(
        ort_runner, kitti_frame, reference_dir, ["000003", "000004", "000005"], 40.0
    )
    print(format_report(merged, title="fusion engine, cars <= 40 m"))
    print("numpy fusion on the same boxes: median centre error 0.33 m, median yaw error 2.6 deg")
    assert len(refs) == 2
    stats = merged.stats("Car")
    assert stats.true_positives == len(refs) and stats.false_positives == 0
    assert stats.median_center_error_m is not None and stats.median_center_error_m <= 0.5
    assert stats.median_yaw_error_deg is not None and stats.median_yaw_error_deg <= 15.0
    # The near car seen from behind is tight; the car cut off by the image edge is anchored at
    # its visible end (pushed the wrong way it would be ~2.4 m off).
    errors = sorted(m.center_error_m for m in merged.matches)
    assert errors[0] < 0.25 and errors[1] < 0.8


def test_cars_beyond_40_m_still_fused(
    kitti_frame: Callable[[str], KittiFrame],
    reference_dir: Path,
    ort_runner: FusionEngineRunner,
) -> None:
    # 000004's cars at 41.5 m and 53.9 m (85 and 26 points): guards the range-dependent linking.
    refs, merged = _car_run(ort_runner, kitti_frame, reference_dir, ["000004"], 60.0)
    assert len(refs) == 2
    assert merged.stats("Car").true_positives == 2
    assert max(m.center_error_m for m in merged.matches) < 0.5
    errors = [m.center_error_m for m in merged.matches]
    assert statistics.median(errors) < 0.3


def test_box_on_the_road_gives_no_detection(
    kitti_frame: Callable[[str], KittiFrame], ort_runner: FusionEngineRunner
) -> None:
    frame = kitti_frame("000003")
    result = ort_runner.run(*_inputs(frame, [[520.0, 300.0, 720.0, 370.0, 0.9, CAR]]).args())  # type: ignore[arg-type]
    assert result.valid.tolist() == [False]
    assert np.all(result.boxes3d == 0) and np.all(result.fused_score == 0)


# ---------------------------------------------------------------------------------------------
# Padding and independence


def test_padding_and_other_boxes_do_not_change_results(
    kitti_frame: Callable[[str], KittiFrame], reference_dir: Path
) -> None:
    _, inputs = _car_inputs(kitti_frame, reference_dir, "000003", 40.0)
    frame = kitti_frame("000000")
    ped = [712.40, 143.00, 810.73, 307.92, 0.82, PEDESTRIAN]
    ped_inputs = _inputs(frame, [ped])
    small = torch_fusion()
    big = torch_fusion(replace(CONFIG, n_max=CONFIG.n_max + 777, b_max=7))
    for case in (inputs, ped_inputs):
        a = small.run(*case.args())  # type: ignore[arg-type]
        b = big.run(*case.args())  # type: ignore[arg-type]
        np.testing.assert_array_equal(a.valid, b.valid)
        np.testing.assert_allclose(a.boxes3d, b.boxes3d, atol=1e-5)
    # Garbage (NaN, huge values) in the padding rows is ignored.
    feed = small.pad(*ped_inputs.args())  # type: ignore[arg-type]
    n, m = int(feed["num_points"][0]), int(feed["num_boxes"][0])
    module = FusionEngine(CONFIG).eval()
    with torch.inference_mode():
        clean = module(*(torch.from_numpy(feed[k]) for k in INPUT_NAMES))
        feed["points"][n:] = np.nan
        feed["points"][n::2] = 5.0
        feed["boxes"][m:] = [700.0, 140.0, 820.0, 310.0, 0.9, PEDESTRIAN]
        dirty = module(*(torch.from_numpy(feed[k]) for k in INPUT_NAMES))
    assert torch.equal(clean[0][:m], dirty[0][:m]) and torch.equal(clean[1][:m], dirty[1][:m])
    assert not bool(dirty[1][m:].any())
    # One box alone gives what it gives among others (per-box work is independent).
    both = small.run(*_inputs(frame, [ped, *inputs.boxes.tolist()]).args())  # type: ignore[arg-type]
    alone = small.run(*ped_inputs.args())  # type: ignore[arg-type]
    np.testing.assert_allclose(both.boxes3d[:1], alone.boxes3d, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Input validation


def test_runner_validates_inputs(
    kitti_frame: Callable[[str], KittiFrame], torch_runner: FusionEngineRunner
) -> None:
    frame = kitti_frame("000000")
    good = _inputs(frame, [[712.40, 143.00, 810.73, 307.92, 0.82, PEDESTRIAN]])
    args = list(good.args())
    bad_cases: list[tuple[int, object, str]] = [
        (0, good.points[:, :2], "points"),
        (0, np.zeros((CONFIG.n_max + 1, 4), np.float32), "n_max"),
        (1, good.boxes[:, :4], "boxes"),
        (1, np.zeros((CONFIG.b_max + 1, 6), np.float32), "b_max"),
        (2, np.eye(3), "camera_from_vehicle"),
        (3, np.eye(4), "intrinsics"),
        (4, (1242.0,), "image_size"),
        (5, (0.0, 0.0, 1.0), "ground"),
        (0, "not numbers", "points"),
    ]
    for index, value, message in bad_cases:
        call = list(args)
        call[index] = value
        with pytest.raises(ValueError, match=message):
            torch_runner.run(*call)  # type: ignore[arg-type]
    # [N, 3] points and a [3, 4] pose are accepted.
    three = torch_runner.run(
        good.points[:, :3],
        good.boxes,
        good.camera_from_vehicle[:3],
        good.intrinsics,
        good.image_size,
        good.ground,
    )
    four = torch_runner.run(*good.args())  # type: ignore[arg-type]
    np.testing.assert_allclose(three.boxes3d, four.boxes3d, atol=1e-5)
    with pytest.raises(EngineError, match=r"fusion engine: .* has inputs .*boxes:float32\[16x6\]"):
        FusionEngineRunner(torch_runner.engine, FusionEngineConfig(b_max=8))
    with pytest.raises(ValueError, match="box_shrink"):
        FusionEngineConfig(box_shrink=0.6)
