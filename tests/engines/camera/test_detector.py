"""Camera encoder, COCO labels and the ONNX Runtime backend on the real KITTI images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.camera.detector import Box2D, CameraDetector, Letterbox
from engines.camera.labels import (
    BICYCLE_CLASS_ID,
    CAR_CLASS_ID,
    COCO_NAMES,
    PERSON_CLASS_ID,
    merge_cyclists,
    node_label,
)
from engines.engine import TensorSpec
from engines.errors import EngineError, ModelError
from engines.onnxruntime_backend import OnnxRuntimeEngine


def iou(a: Box2D, b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a.x2, b[2]) - max(a.x1, b[0]))
    iy = max(0.0, min(a.y2, b[3]) - max(a.y1, b[1]))
    inter = ix * iy
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def load(kitti_dir: Path, frame: str) -> np.ndarray:
    image = cv2.imread(str(kitti_dir / "image_2" / f"{frame}.png"))
    assert image is not None, frame
    return image


@pytest.fixture(scope="module")
def yolox(yolox_path: Path) -> CameraDetector:
    return CameraDetector(OnnxRuntimeEngine(yolox_path))


@pytest.fixture(scope="module")
def fastest(data_dir: Path) -> CameraDetector:
    path = data_dir / "camera_detector" / "yolo_fastestv2_coco_352.onnx"
    return CameraDetector(OnnxRuntimeEngine(path))


# --- YOLOX-Nano -------------------------------------------------------------------------------


def test_yolox_kind_and_input(yolox: CameraDetector) -> None:
    assert yolox.kind == "yolox"
    assert (yolox.input_height, yolox.input_width) == (416, 416)


def test_yolox_pedestrian_000000(yolox: CameraDetector, kitti_dir: Path) -> None:
    boxes = yolox.detect(load(kitti_dir, "000000"))
    peds = [b for b in boxes if b.label == "Pedestrian"]
    assert len(peds) == 1
    ped = peds[0]
    assert ped.class_id == PERSON_CLASS_ID
    assert ped.score == pytest.approx(0.82, abs=0.03)
    assert iou(ped, (712.4, 143.0, 810.7, 307.9)) > 0.7


def test_yolox_cars_000008(yolox: CameraDetector, kitti_dir: Path) -> None:
    image = load(kitti_dir, "000008")
    boxes = yolox.detect(image)
    cars = [b for b in boxes if b.label == "Car"]
    assert len(cars) >= 6
    h, w = image.shape[:2]
    for b in boxes:
        assert 0 <= b.x1 < b.x2 <= w and 0 <= b.y1 < b.y2 <= h
    scores = [b.score for b in boxes]
    assert scores == sorted(scores, reverse=True)
    assert all(b.score > yolox.score_threshold for b in boxes)


def test_yolox_weak_car_000003(yolox: CameraDetector, kitti_dir: Path) -> None:
    # This car sits at ~0.50: it is lost (< 0.3) if the letterbox size is rounded instead of
    # truncated like YOLOX does, so it guards the preprocessing.
    boxes = yolox.detect(load(kitti_dir, "000003"))
    near = [b for b in boxes if b.label == "Car" and iou(b, (622, 178, 719, 269)) > 0.8]
    assert len(near) == 1
    assert near[0].score == pytest.approx(0.50, abs=0.05)


def test_stages_equal_detect_and_are_deterministic(yolox: CameraDetector, kitti_dir: Path) -> None:
    image = load(kitti_dir, "000008")
    tensor, letterbox = yolox.preprocess(image)
    assert tensor.shape == (1, 3, 416, 416) and tensor.dtype == np.float32
    assert letterbox == Letterbox(scale_x=416 / 1242, scale_y=416 / 1242, width=1242, height=375)
    # Pad region carries the YOLOX fill value.
    assert np.all(tensor[0, :, -1, :] == 114.0)
    raw = yolox.infer(tensor)
    assert raw.shape == (1, 3549, 85)
    staged = yolox.decode(raw, letterbox)
    assert staged == yolox.detect(image) == yolox.detect(image.copy())


def test_preprocess_reuses_canvas_across_sizes(yolox: CameraDetector, kitti_dir: Path) -> None:
    # A smaller image after a larger one must not leave stale pixels in the padding.
    big = load(kitti_dir, "000008")
    small = np.zeros((100, 50, 3), np.uint8)
    yolox.preprocess(big)
    tensor, letterbox = yolox.preprocess(small)
    assert letterbox.scale_x == pytest.approx(416 / 100)
    assert np.all(tensor[0, :, :, int(50 * 416 / 100) :] == 114.0)
    assert np.all(tensor[0, :, :, :200] == 0.0)


def test_preprocess_returns_independent_tensors(yolox: CameraDetector, kitti_dir: Path) -> None:
    # The pipeline preprocesses every camera before inferring any: a tensor must not alias the
    # reused canvas, or the second image would overwrite the first.
    first, _ = yolox.preprocess(load(kitti_dir, "000008"))
    kept = first.copy()
    yolox.preprocess(np.zeros((375, 1242, 3), np.uint8))
    np.testing.assert_array_equal(first, kept)


def test_preprocess_extreme_aspect(yolox: CameraDetector) -> None:
    # 416/5000 * 1 truncates to 0 rows; the resize must still get at least one.
    tensor, letterbox = yolox.preprocess(np.full((1, 5000, 3), 7, np.uint8))
    assert tensor.shape == (1, 3, 416, 416)
    assert letterbox.width == 5000 and letterbox.height == 1
    assert np.all(tensor[0, :, 0, :] == 7.0) and np.all(tensor[0, :, 1:, :] == 114.0)
    assert yolox.detect(np.full((1, 5000, 3), 7, np.uint8)) == []


# --- Yolo-FastestV2 ---------------------------------------------------------------------------


def test_fastest_kind(fastest: CameraDetector) -> None:
    assert fastest.kind == "yolo_fastestv2"
    assert (fastest.input_height, fastest.input_width) == (352, 352)


def test_fastest_cars_000008(fastest: CameraDetector, kitti_dir: Path) -> None:
    cars = [b for b in fastest.detect(load(kitti_dir, "000008")) if b.label == "Car"]
    assert len(cars) >= 6
    assert cars[0].score == pytest.approx(0.91, abs=0.03)


def test_fastest_car_000003(fastest: CameraDetector, kitti_dir: Path) -> None:
    boxes = fastest.detect(load(kitti_dir, "000003"))
    near = [b for b in boxes if b.label == "Car" and iou(b, (600, 211, 724, 286)) > 0.8]
    assert len(near) == 1
    assert near[0].score == pytest.approx(0.36, abs=0.05)


def test_explicit_kind_mismatch(data_dir: Path) -> None:
    path = data_dir / "camera_detector" / "yolo_fastestv2_coco_352.onnx"
    engine = OnnxRuntimeEngine(path)
    with pytest.raises(EngineError, match="yolo_fastestv2"):
        CameraDetector(engine, kind="yolox")
    with pytest.raises(EngineError, match=r"^yolo_fastestv2_coco_352\.onnx: unknown detector kind"):
        CameraDetector(engine, kind="ssd")


# --- labels -----------------------------------------------------------------------------------


def test_coco_names_match_file(data_dir: Path) -> None:
    lines = (data_dir / "camera_detector" / "coco.names").read_text().splitlines()
    assert tuple(line for line in lines if line) == COCO_NAMES
    assert len(COCO_NAMES) == 80


def test_node_labels() -> None:
    assert node_label(PERSON_CLASS_ID) == "Pedestrian"
    assert node_label(CAR_CLASS_ID) == "Car"
    assert node_label(BICYCLE_CLASS_ID) == "Cyclist"
    assert node_label(7) == "truck"
    assert node_label(5) == "bus"
    with pytest.raises(ValueError):
        node_label(80)


def test_merge_cyclists() -> None:
    boxes = np.array(
        [
            [100, 50, 140, 150],  # rider (person) over ...
            [95, 100, 150, 170],  # ... this bicycle
            [300, 50, 340, 170],  # a pedestrian far away
            [500, 100, 560, 170],  # a parked bicycle
            [520, 150, 560, 250],  # a person *below* the parked bike: not a rider
        ],
        dtype=np.float64,
    )
    scores = np.array([0.9, 0.6, 0.8, 0.5, 0.7])
    cls = np.array([0, 1, 0, 1, 0])
    out_boxes, out_scores, out_cls = merge_cyclists(boxes, scores, cls)
    assert out_cls.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(out_boxes[0], [95, 50, 150, 170])
    assert out_scores[0] == 0.9
    np.testing.assert_allclose(out_boxes[1:], boxes[2:])
    np.testing.assert_allclose(out_scores[1:], scores[2:])
    # Nothing to merge: unchanged.
    b, s, c = merge_cyclists(boxes[2:3], scores[2:3], cls[2:3])
    np.testing.assert_array_equal(b, boxes[2:3])
    assert c.tolist() == [0]
    b, s, c = merge_cyclists(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,)


def test_decode_merges_rider(yolox: CameraDetector) -> None:
    # A synthetic raw output with one person anchor over one bicycle anchor (stride 32 grid).
    raw = np.zeros((1, 3549, 85), np.float32)
    first32 = 52 * 52 + 26 * 26
    person = first32 + 3 * 13 + 5  # cell (x=5, y=3)
    bike = first32 + 4 * 13 + 5  # cell (x=5, y=4), just below
    raw[0, person, :4] = [0.5, 0.5, np.log(1.5), np.log(3.0)]
    raw[0, person, 4], raw[0, person, 5 + PERSON_CLASS_ID] = 1.0, 0.9
    raw[0, bike, :4] = [0.5, 0.5, np.log(2.0), np.log(1.5)]
    raw[0, bike, 4], raw[0, bike, 5 + BICYCLE_CLASS_ID] = 1.0, 0.7
    boxes = yolox.decode(raw, Letterbox(1.0, 1.0, 416, 416))
    assert [(b.label, b.class_id) for b in boxes] == [("Cyclist", BICYCLE_CLASS_ID)]
    assert boxes[0].score == pytest.approx(0.9)


# --- errors -----------------------------------------------------------------------------------


def test_missing_model(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(ModelError) as info:
        OnnxRuntimeEngine(path)
    assert str(info.value) == f"{path}: model file not found"


def test_model_path_is_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a regular file") as info:
        OnnxRuntimeEngine(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_bad_thresholds(yolox_path: Path) -> None:
    engine = OnnxRuntimeEngine(yolox_path)
    with pytest.raises(EngineError, match="score_threshold"):
        CameraDetector(engine, score_threshold=1.5)
    with pytest.raises(EngineError, match="nms_iou"):
        CameraDetector(engine, nms_iou=0.0)


def test_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelError) as info:
        OnnxRuntimeEngine(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
    ],
)
def test_bad_image(yolox: CameraDetector, image: np.ndarray) -> None:
    with pytest.raises(EngineError, match="image"):
        yolox.detect(image)


# --- backend ----------------------------------------------------------------------------------


def test_backend_specs(yolox: CameraDetector) -> None:
    engine = yolox.engine
    assert isinstance(engine, OnnxRuntimeEngine)
    assert engine.inputs == (TensorSpec("images", "float32", (1, 3, 416, 416)),)
    assert engine.outputs == (TensorSpec("output", "float32", (1, 3549, 85)),)
    assert "CPUExecutionProvider" in engine.providers_in_use
    assert "yolox_nano_coco_416.onnx" in str(engine.describe())


def test_backend_run_checks(yolox_path: Path) -> None:
    engine = OnnxRuntimeEngine(yolox_path, num_threads=1)
    good = np.zeros((1, 3, 416, 416), np.float32)
    assert engine.run({"images": good})["output"].shape == (1, 3549, 85)
    with pytest.raises(EngineError, match="images"):
        engine.run({"images": good.astype(np.float64)})
    with pytest.raises(EngineError, match="images"):
        engine.run({"images": np.zeros((1, 3, 320, 320), np.float32)})
    with pytest.raises(EngineError, match="images"):
        engine.run({})
    with pytest.raises(EngineError, match="extra"):
        engine.run({"images": good, "extra": good})


def test_backend_providers(yolox_path: Path) -> None:
    # An unavailable accelerator provider is skipped; CPU remains.
    engine = OnnxRuntimeEngine(
        yolox_path, providers=("NoSuchExecutionProvider", "CPUExecutionProvider")
    )
    assert engine.providers_in_use == ("CPUExecutionProvider",)
    with pytest.raises(EngineError, match="NoSuchExecutionProvider"):
        OnnxRuntimeEngine(yolox_path, providers=("NoSuchExecutionProvider",))


def test_engines_import_boundary() -> None:
    # engines/ is reusable on its own: it must not depend on the node's packages.
    import ast

    import engines

    forbidden = {"perception", "calibration", "replay"}
    for path in Path(engines.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] in forbidden]
            assert not bad, f"{path.name} imports {bad}"


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("bad", [np.inf, np.nan, 1e30])
def test_a_model_gone_wrong_loses_its_bad_boxes_quietly(
    yolox: CameraDetector, kitti_dir: Path, bad: float
) -> None:
    """Non-finite or huge raw outputs (a broken model) overflow the decoding: those boxes are
    left out (other anchors on the same objects remain), with no RuntimeWarning on stderr
    every frame."""
    tensor, letterbox = yolox.preprocess(load(kitti_dir, "000008"))
    raw = yolox.infer(tensor)
    found = yolox.decode(raw, letterbox)
    assert len(found) >= 3
    broken = raw.copy().reshape(-1, 85)
    strong = np.flatnonzero(broken[:, 4] > yolox.score_threshold)
    broken[strong[::2], 2:4] = bad  # widths and heights of every other candidate
    kept = yolox.decode(broken.reshape(raw.shape), letterbox)
    assert kept and all(np.isfinite([b.x1, b.y1, b.x2, b.y2, b.score]).all() for b in kept)
