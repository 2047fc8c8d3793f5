"""KittiSource on the real KITTI object frames: label_2 boxes moved into the Velodyne frame with
the rig's transforms (checked against the raw calib file by hand and against
replay.evaluation), the camera view, PointPillars reference boxes as labels, ignored classes,
and refused frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from calibration import PinholeCamera
from replay.datasets.kitti_object import read_kitti_scan
from replay.evaluation import read_kitti_labels, read_pointpillars_boxes
from replay.training.samples import BoxLabel
from replay.training.sources import KittiSource


def _calib(path: Path) -> dict[str, np.ndarray]:
    """A KITTI object calib file read by hand: `KEY: v v v` lines."""
    fields = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip():
            fields[key.strip()] = np.array([float(v) for v in rest.split()])
    return fields


def _label_rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def source(kitti_dir: Path) -> KittiSource:
    if not (kitti_dir / "label_2" / "000000.txt").is_file():
        pytest.skip(f"real data not found: {kitti_dir}/label_2/000000.txt")
    return KittiSource(kitti_dir)


def test_label_2_boxes_equal_the_raw_calibration_by_hand(
    source: KittiSource, kitti_dir: Path
) -> None:
    assert len(source) == 1  # frames with labels: 000000 only in the corpus
    assert source.describe() == f"KITTI object {kitti_dir} (label_2 labels): 1 frame"
    sample = source[0]
    assert sample.name == "kitti:000000"
    (box,) = sample.boxes
    assert box.label == "Pedestrian"
    # By hand: velo_from_rect = (R0_rect · Tr_velo_to_cam)^-1 (4 x 4).
    calib = _calib(kitti_dir / "calib" / "000000.txt")
    r0 = np.eye(4)
    r0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    tr = np.eye(4)
    tr[:3, :] = calib["Tr_velo_to_cam"].reshape(3, 4)
    velo_from_rect = np.linalg.inv(r0 @ tr)
    (row,) = _label_rows(kitti_dir / "label_2" / "000000.txt")
    h, w, length, x, y, z, ry = (float(v) for v in row[8:15])
    centre = velo_from_rect @ np.array([x, y - h / 2, z, 1.0])
    heading = velo_from_rect[:3, :3] @ np.array([math.cos(ry), 0.0, -math.sin(ry)])
    assert box.center == pytest.approx(tuple(centre[:3]), abs=1e-6)
    assert box.size == (length, w, h)
    assert box.yaw == pytest.approx(math.atan2(heading[1], heading[0]), abs=1e-6)
    # And as replay.evaluation reads KITTI labels.
    (ref,) = read_kitti_labels(
        kitti_dir / "label_2" / "000000.txt", kitti_dir / "calib" / "000000.txt"
    )
    assert (*box.center, *box.size, box.yaw) == pytest.approx(
        (*ref.center, *ref.size, ref.yaw), abs=1e-6
    )
    assert math.isnan(box.velocity[0]) and box.track_id == -1


def test_pedestrian_projects_into_its_2d_box(source: KittiSource, kitti_dir: Path) -> None:
    sample = source[0]
    view = sample.cameras["front"]
    assert isinstance(view.model, PinholeCamera) and not view.model.has_distortion
    assert view.image.shape == (view.model.height, view.model.width, 3) == (370, 1224, 3)
    (row,) = _label_rows(kitti_dir / "label_2" / "000000.txt")
    x1, y1, x2, y2 = (float(v) for v in row[4:8])
    (box,) = sample.boxes
    cam = view.camera_from_vehicle @ np.array([*box.center, 1.0])
    uv, depth = view.model.project(cam[None, :3])
    u, v = uv[0]
    assert depth[0] > 0 and x1 <= u <= x2 and y1 <= v <= y2
    # The same pixel through P2 · R0_rect · Tr_velo_to_cam, by hand.
    calib = _calib(kitti_dir / "calib" / "000000.txt")
    r0 = np.eye(4)
    r0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    tr = np.eye(4)
    tr[:3, :] = calib["Tr_velo_to_cam"].reshape(3, 4)
    p = calib["P2"].reshape(3, 4) @ r0 @ tr @ np.array([*box.center, 1.0])
    assert (u, v) == pytest.approx((p[0] / p[2], p[1] / p[2]), abs=1e-6)
    assert np.array_equal(sample.points, read_kitti_scan(source.frames[0].lidar_path))


def test_pointpillars_reference_boxes_as_labels(kitti_dir: Path, reference_dir: Path) -> None:
    src = KittiSource(kitti_dir, labels="pointpillars")
    assert [f.frame_id for f in src.frames] == ["000000", "000003", "000004", "000005"]
    for i, frame in enumerate(src.frames):
        refs = read_pointpillars_boxes(reference_dir / f"{frame.frame_id}.txt")
        strong = [r for r in refs if r.score >= 0.5]
        assert 0 < len(strong) < len(refs)
        boxes = src[i].boxes
        assert [(b.label, b.center, b.size, b.yaw) for b in boxes] == [
            (r.label, r.center, r.size, r.yaw) for r in strong
        ]
    # Frame 000000: the reference pedestrian is the labelled one (0.06 m apart).
    (labelled,) = KittiSource(kitti_dir)[0].boxes
    peds = [b for b in src[0].boxes if b.label == "Pedestrian"]
    assert min(math.dist(b.center, labelled.center) for b in peds) < 0.1


def _frame_000000(kitti_dir: Path, tmp_path: Path) -> Path:
    """A KITTI folder of frame 000000 (links to the real files) with an empty label_2/."""
    root = tmp_path / "training"
    for sub in ("image_2", "calib", "velodyne_reduced"):
        (root / sub).mkdir(parents=True)
        src = next((kitti_dir / sub).glob("000000.*"))
        (root / sub / src.name).symlink_to(src)
    (root / "label_2").mkdir()
    return root


def test_other_classes_are_kept_out_and_recorded_to_mask(kitti_dir: Path, tmp_path: Path) -> None:
    root = _frame_000000(kitti_dir, tmp_path)
    (root / "label_2" / "000000.txt").write_text(
        "Car 0.00 0 1.5 600.0 170.0 700.0 230.0 1.50 1.60 3.90 2.00 1.60 20.00 1.57\n"
        "Van 0.00 0 1.5 300.0 170.0 400.0 230.0 2.10 1.90 5.00 -4.00 1.70 25.00 1.57\n"
        "DontCare -1 -1 -10 800.0 160.0 830.0 190.0 -1 -1 -1 -1000 -1000 -1000 -10\n"
    )
    sample = KittiSource(root)[0]
    assert [b.label for b in sample.boxes] == ["Car"]
    ignore = sample.extra["ignore"]
    assert isinstance(ignore, tuple) and [b.label for b in ignore] == ["Van"]
    assert isinstance(ignore[0], BoxLabel) and ignore[0].center[0] == pytest.approx(25.3, abs=0.1)
    assert sample.extra["ignore_2d"] == {"front": ((800.0, 160.0, 830.0, 190.0),)}


def test_frames_without_labels_or_not_in_the_folder_are_refused(kitti_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"frame 000003 has no labels .*label_2/000003\.txt"):
        KittiSource(kitti_dir, frames=["000000", "000003"])
    with pytest.raises(ValueError, match="frame 000001 is not in the folder"):
        KittiSource(kitti_dir, frames=["000001"])
    with pytest.raises(ValueError, match="unknown labels 'label_3'"):
        KittiSource(kitti_dir, labels="label_3")
    empty = kitti_dir.parent / "no-such-folder"
    with pytest.raises(ValueError, match="does not exist"):
        KittiSource(empty)


def test_a_binary_label_file_is_named(kitti_dir: Path, tmp_path: Path) -> None:
    root = _frame_000000(kitti_dir, tmp_path)
    labels = root / "label_2" / "000000.txt"
    labels.write_bytes(b"Car \xff\xfe 0 1.5\n")
    with pytest.raises(ValueError) as info:
        KittiSource(root)[0]
    assert str(info.value) == f"{labels}: not UTF-8 text (byte 0xff at offset 4)"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        # float() read "1_89" as 189: a pedestrian 189 m tall, 92 m away, to train on.
        ("1.89", "1_89", "h '1_89' is not a number"),
        ("1.89", "\uff11.89", "h '\uff11.89' is not a number"),  # a full-width 1
        # A nan position was a box of nan centre.
        ("8.41", "nan", "z nan is not finite"),
    ],
)
def test_a_label_number_float_alone_would_read_is_refused(
    kitti_dir: Path, tmp_path: Path, old: str, new: str, problem: str
) -> None:
    root = _frame_000000(kitti_dir, tmp_path)
    text = (kitti_dir / "label_2" / "000000.txt").read_text()
    assert text.count(f" {old} ") == 1
    labels = root / "label_2" / "000000.txt"
    labels.write_text(text.replace(f" {old} ", f" {new} "), encoding="utf-8")
    with pytest.raises(ValueError) as info:
        KittiSource(root)[0]
    assert str(info.value) == f"{labels}:1: {problem}"
