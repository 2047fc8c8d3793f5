"""Rig model, rig files (YAML) and their validation messages."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from calibration import (
    CalibrationError,
    FisheyeCamera,
    PinholeCamera,
    Rig,
    RigidTransform,
    describe_rig,
    load_rig,
    load_rig_yaml,
    save_rig_yaml,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "calibration" / "examples" / "kitti_rig.yaml"


def _rot(deg: float, axis: int) -> np.ndarray:
    v = np.zeros(3)
    v[axis] = np.radians(deg)
    return RigidTransform.from_rotvec(v).rotation


def _tree_rig() -> Rig:
    return Rig(
        {"lidar": RigidTransform.from_rotvec([0, 0, 0.3], [1.0, 0.0, 1.8])},
        {
            "front": PinholeCamera(np.diag([500.0, 500.0, 1.0]) + _pp(320, 240), (), 640, 480),
            "fish": FisheyeCamera(
                np.diag([300.0, 300.0, 1.0]) + _pp(640, 400), (0.1, -0.02, 0.003, 0.0), 1280, 800
            ),
        },
        {"lidar": 0, "camera/front": -5_000_000},
        source="test",
        edges={
            "camera/front": ("lidar", RigidTransform.from_rotvec([1.2, -1.2, 1.2], [0.1, 0, -0.2])),
            "camera/fish": ("camera/front", RigidTransform.from_rotvec([0, 0.5, 0], [0.3, 0, 0])),
        },
        gnss_lever_arm_m=[-0.5, 0.2, 1.5],
    )


def _pp(cx: float, cy: float) -> np.ndarray:
    m = np.zeros((3, 3))
    m[0, 2], m[1, 2] = cx, cy
    return m


def test_lookup_through_the_tree() -> None:
    rig = _tree_rig()
    assert rig.frames == ("vehicle", "lidar", "camera/front", "camera/fish", "gnss")
    assert rig.parent("camera/fish") == "camera/front"
    v_from_fish = rig.transform("vehicle", "camera/fish")
    expected = (
        rig.edges["lidar"].parent_from_frame
        @ rig.edges["camera/front"].parent_from_frame
        @ rig.edges["camera/fish"].parent_from_frame
    )
    assert v_from_fish.almost_equal(expected, 1e-12)
    # Any pair, both ways, composes consistently.
    frames = rig.frames
    for a in frames:
        for b in frames:
            ab = rig.transform(a, b)
            assert (ab @ rig.transform(b, a)).almost_equal(RigidTransform.identity(), 1e-12)
            for c in frames:
                assert (ab @ rig.transform(b, c)).almost_equal(rig.transform(a, c), 1e-12)
    arm = rig.gnss_lever_arm_m
    assert arm is not None
    np.testing.assert_allclose(arm, np.array([-0.5, 0.2, 1.5]))
    assert rig.time_offset_ns("camera/front") == -5_000_000
    assert rig.time_offset_ns("imu") == 0
    with pytest.raises(CalibrationError, match=r"test: unknown frame 'radar' \(frames: vehicle, "):
        rig.transform("radar", "lidar")


def test_the_calibration_digest_ignores_the_source_only() -> None:
    doc = _tree_rig().to_dict()
    a = Rig.from_dict(doc, source="rig message 1")
    b = Rig.from_dict({**doc, "source": "another drive"}, source="rig message 2")
    assert a.calibration_digest == b.calibration_digest
    moved = copy.deepcopy(doc)
    moved["frames"]["lidar"]["translation"][2] += 1e-9
    assert Rig.from_dict(moved).calibration_digest != a.calibration_digest


def test_rig_yaml_round_trip(tmp_path: Path) -> None:
    rig = _tree_rig()
    path = tmp_path / "rig.yaml"
    save_rig_yaml(rig, path, comment="a test rig")
    back = load_rig(path)
    assert path.read_text().startswith("# a test rig\n")
    assert back.frames == rig.frames
    for name in rig.frames:
        np.testing.assert_array_equal(
            back.transform("vehicle", name).matrix, rig.transform("vehicle", name).matrix
        )
    for name, cam in rig.cameras.items():
        other = back.cameras[name]
        assert type(other) is type(cam)
        np.testing.assert_array_equal(other.k, cam.k)
        assert other.distortion == cam.distortion
        assert other.size == cam.size
    assert dict(back.time_offsets_ns) == dict(rig.time_offsets_ns)
    np.testing.assert_array_equal(back.gnss_lever_arm_m, rig.gnss_lever_arm_m)
    assert back.source == "test"
    assert back.to_dict() == rig.to_dict()


def test_example_rig_file_is_the_kitti_raw_calibration(data_dir: Path) -> None:
    example = load_rig_yaml(EXAMPLE)
    raw = load_rig(data_dir / "kitti_raw" / "2011_09_26")
    assert set(example.cameras) == {"cam0", "cam1", "front", "cam3"}
    for name in example.frames:
        # The YAML holds the composed transforms; composing them again may differ in the last
        # bit (numpy's matmul kernels vary by version and CPU).
        np.testing.assert_allclose(
            example.transform(name, "lidar").matrix,
            raw.transform(name, "lidar").matrix,
            rtol=0,
            atol=1e-15,
        )
    assert "camera/front" in describe_rig(example)


def test_describe_rig_shows_tree_and_parameters(data_dir: Path) -> None:
    text = describe_rig(load_rig(data_dir / "lidar_camera_calib_pjlab"))
    assert "└── lidar" in text
    assert "camera/center" in text
    assert "fx=2109.7500 fy=2071.7200 cx=949.8280 cy=576.2370" in text
    assert "img_dist_w/img_dist_h state 1920x1080 but the image is 1920x1200" in text


# -- validation: one test per failure, each asserting file, field and problem ---------------


def _example_doc() -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(doc, dict)
    return doc


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split("|")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()

CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "non-orthonormal rotation",
        _set("frames|lidar|rotation|0", [1.1, 0.0, 0.0]),
        r"frames\.lidar\.rotation: rotation is not orthonormal with det \+1 \(det=1\.100000",
    ),
    (
        "reflection (det -1)",
        _set("frames|lidar|rotation|2", [0.0, 0.0, -1.0]),
        r"frames\.lidar\.rotation: rotation is not orthonormal with det \+1 \(det=-1\.000000",
    ),
    (
        "non-finite rotation",
        _set("frames|rect|rotation|1", [float("nan"), 0.0, 0.0]),
        r"frames\.rect\.rotation: rotation has non-finite values",
    ),
    (
        "non-finite translation",
        _set("frames|imu|translation", [0.0, float("inf"), 0.0]),
        r"frames\.imu\.translation: non-finite values \[0\.0, inf, 0\.0\]",
    ),
    (
        "translation of the wrong size",
        _set("frames|imu|translation", [0.0, 1.0]),
        r"frames\.imu\.translation: expected 3 numbers",
    ),
    (
        "missing rotation",
        _set("frames|imu|rotation", _DELETE),
        r"frames\.imu: missing field 'rotation'",
    ),
    (
        "matrix with a bad last row",
        _set("frames|imu", {"parent": "lidar", "matrix": [*np.eye(4).tolist()[:3], [0, 0, 1, 1]]}),
        r"frames\.imu\.matrix: last row must be \[0, 0, 0, 1\]",
    ),
    (
        "frame with an unknown parent",
        _set("frames|imu|parent", "nowhere"),
        r"frames\.imu: not connected to 'vehicle' \(parent chain imu -> nowhere: 'nowhere' is "
        r"not a frame\)",
    ),
    (
        "frames forming a cycle",
        _set("frames|lidar|parent", "rect"),
        r"frames\.\S+: not connected to 'vehicle' \(parent chain .* is a cycle\)",
    ),
    (
        "zero focal length",
        _set("cameras|front|k|0", [0.0, 0.0, 609.5593]),
        r"cameras\.front\.k: focal lengths must be positive, got fx=0\.0",
    ),
    (
        "negative focal length",
        _set("cameras|cam3|k|1", [0.0, -721.5, 172.854]),
        r"cameras\.cam3\.k: focal lengths must be positive, got fx=721\.5377, fy=-721\.5",
    ),
    (
        # A unit slip: projected, it was a camera seeing 0.06 degrees (or an overflow).
        "focal length a thousand times too long",
        _set("cameras|front|k|0", [721537.7, 0.0, 609.5593]),
        r"cameras\.front\.k: fx=721538 px is no focal length of a 1242x375 camera \(from 12\.42 "
        r"to 124200 px: 0\.01 to 100 times its longer side, a fisheye to a half-degree telephoto\)",
    ),
    (
        "focal length of a pinhole",
        _set("cameras|cam3|k|1", [0.0, 1e-300, 172.854]),
        r"cameras\.cam3\.k: fy=1e-300 px is no focal length of a 1242x375 camera",
    ),
    (
        # Monotonic, but the camera it made saw 1e-100 radians: 0 points in the image.
        "distortion that stretches the corners",
        _set("cameras|front|distortion", [1e300, 0.0, 0.0, 0.0]),
        r"cameras\.front\.distortion: \[1e\+300, 0\.0, 0\.0, 0\.0\] stretches the image's "
        r"corners 1e\+292 times \(a lens at most 10\): no lens distorts so",
    ),
    (
        "distortion that folds back at the centre",
        _set("cameras|front|distortion", [-1e10, 0.0, 0.0, 0.0]),
        r"cameras\.front\.distortion: \[-10000000000\.0, 0\.0, 0\.0, 0\.0\] folds back 0 px "
        r"from the principal point, short of a tenth of the way to the image's farthest corner "
        r"\(664 px\): no lens distorts so",
    ),
    (
        "principal point outside the image",
        _set("cameras|front|k|0", [721.5377, 0.0, 1300.0]),
        r"cameras\.front\.k: principal point \(1300\.0, 172\.854\) lies outside the 1242x375 image",
    ),
    (
        "non-finite intrinsics",
        _set("cameras|front|k|1", [0.0, float("nan"), 172.854]),
        r"cameras\.front\.k: non-finite values",
    ),
    (
        "k not 3x3",
        _set("cameras|front|k", [[721.5, 0.0, 609.5], [0.0, 721.5, 172.8]]),
        r"cameras\.front\.k: expected a 3x3 matrix, got shape \(2, 3\)",
    ),
    (
        "non-positive image size",
        _set("cameras|front|width", 0),
        r"cameras\.front: image size must be positive integers, got 0x375",
    ),
    (
        "non-integer image size",
        _set("cameras|front|height", 375.5),
        r"cameras\.front\.height: expected an integer, got 375\.5",
    ),
    (
        "distortion of the wrong length",
        _set("cameras|front|distortion", [0.1, 0.2, 0.3]),
        r"cameras\.front\.distortion: pinhole model takes 0, 4, 5, 8 coefficients .* got 3",
    ),
    (
        "fisheye distortion of the wrong length",
        _set(
            "cameras|front",
            {
                "model": "fisheye",
                "width": 100,
                "height": 100,
                "k": [[50, 0, 50], [0, 50, 50], [0, 0, 1]],
                "distortion": [0.1],
            },
        ),
        r"cameras\.front\.distortion: fisheye model takes 4 coefficients \(k1 k2 k3 k4\), got 1",
    ),
    (
        "non-finite distortion",
        _set("cameras|front|distortion", [0.1, float("nan"), 0.0, 0.0]),
        r"cameras\.front\.distortion: non-finite values",
    ),
    (
        "unknown camera model",
        _set("cameras|front|model", "orthographic"),
        r"cameras\.front\.model: unknown camera model 'orthographic' \(known: pinhole, fisheye\)",
    ),
    (
        "missing intrinsics",
        _set("cameras|front|k", _DELETE),
        r"cameras\.front: missing field 'k'",
    ),
    (
        "camera without its frame",
        _set("frames|camera/cam3", _DELETE),
        r"cameras\.cam3: camera 'cam3' has no extrinsics \(no frame 'camera/cam3'\)",
    ),
    (
        "non-finite lever arm",
        _set("gnss|lever_arm_m", [0.0, float("nan"), 1.0]),
        r"gnss\.lever_arm_m: non-finite values",
    ),
    (
        "non-integer time offset",
        _set("time_offsets_ns", {"lidar": 0.5}),
        r"time_offsets_ns\.lidar: expected integer nanoseconds, got 0\.5",
    ),
    (
        "unsupported version",
        _set("version", 7),
        r"version: unsupported rig file version 7",
    ),
    (
        "unknown top-level field",
        _set("camera", {}),
        r"unknown top-level field\(s\) \['camera'\]",
    ),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_failure_names_file_field_and_problem(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = copy.deepcopy(_example_doc())
    edit(doc)
    path = tmp_path / "bad_rig.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(CalibrationError) as info:
        load_rig(path)
    assert re.search(re.escape(str(path)) + ": " + message, str(info.value)), str(info.value)


def test_invalid_yaml_and_missing_file_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "rig.yaml"
    bad.write_text("frames: [unclosed\n")
    with pytest.raises(CalibrationError, match=r"rig\.yaml: not valid YAML") as info:
        load_rig_yaml(bad)
    assert "\n" not in str(info.value)  # the parser's message spans several lines
    with pytest.raises(CalibrationError, match=r"missing\.yaml: no such calibration file"):
        load_rig(tmp_path / "missing.yaml")
    with pytest.raises(CalibrationError, match=r"nothing\.yaml: cannot read rig file"):
        load_rig_yaml(tmp_path / "nothing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"frames:\n\xff\xfe\x00")
    with pytest.raises(CalibrationError) as info:
        load_rig(binary)
    assert str(info.value) == f"{binary}: not UTF-8 text (byte 0xff at offset 8)"
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(CalibrationError, match=r"empty\.yaml: empty rig file"):
        load_rig_yaml(empty)


def test_constructor_validation_messages() -> None:
    k = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    with pytest.raises(CalibrationError, match=r"camera\.k: focal lengths must be positive"):
        PinholeCamera(k * np.array([[-1], [1], [1]]), (), 100, 100)
    with pytest.raises(CalibrationError, match=r"r: frames\.gnss: frame defined twice"):
        Rig(
            {"gnss": RigidTransform.identity()},
            {},
            source="r",
            edges={"gnss": ("vehicle", RigidTransform.identity())},
        )
    with pytest.raises(CalibrationError, match=r"r: gnss\.lever_arm_m: frame 'gnss' is also"):
        Rig({"gnss": RigidTransform.identity()}, {}, source="r", gnss_lever_arm_m=[0, 0, 0])
    with pytest.raises(CalibrationError, match=r"r: frames\.vehicle: the root frame has no parent"):
        Rig({"vehicle": RigidTransform.identity()}, {}, source="r")


def test_apply_rows_is_apply_as_rows() -> None:
    """The very same values as `apply`, laid out 3 x N, for N x 3 and N x 4 points (float32 and
    float64), and for none."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        t = RigidTransform.from_rotvec(rng.normal(size=3), rng.normal(size=3) * 5)
        for columns, dtype in ((3, np.float64), (4, np.float32)):
            pts = (rng.normal(size=(int(rng.integers(0, 5000)), columns)) * 40).astype(dtype)
            rows = t.apply_rows(pts)
            assert rows.shape == (3, len(pts)) and rows.flags.c_contiguous
            assert np.array_equal(rows.T, t.apply(pts))


def test_a_frame_farther_than_a_sensor_on_a_vehicle_can_be_is_refused(tmp_path: Path) -> None:
    """1e300 m loaded, then overflowed float32 in every sweep's deskew (warnings, no output)."""
    path = tmp_path / "rig.yaml"
    path.write_text(
        "version: 1\nframes:\n  lidar: {parent: vehicle, rotation: [[1, 0, 0], [0, 1, 0], "
        "[0, 0, 1]], translation: [1.0e+300, 0, 0]}\n"
    )
    with pytest.raises(CalibrationError) as info:
        load_rig_yaml(path)
    assert str(info.value) == (
        f"{path}: frames.lidar: [1e+300, 0.0, 0.0] m from the vehicle origin, beyond the 1000 m "
        "a sensor on a vehicle can be"
    )
