"""`read_pcd` / `read_scan` on PCD files written by pypcd4 in every encoding, and the errors for
broken ones (each names the file and the problem; nothing from inside pypcd4 or numpy escapes)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pypcd4.pypcd4 import NUMPY_TYPE_TO_PCD_TYPE, Encoding, MetaData, PointCloud

from calibration import CalibrationError, read_pcd, read_scan
from calibration.check import read_kitti_bin

ENCODINGS = [Encoding.ASCII, Encoding.BINARY, Encoding.BINARY_COMPRESSED]


@pytest.fixture(scope="module")
def scan(kitti_dir: Path) -> npt.NDArray[np.float32]:
    """A real KITTI sweep (x, y, z, reflectance), 20k points."""
    return read_kitti_bin(kitti_dir / "velodyne_reduced" / "000003.bin")


def _write(
    path: Path,
    columns: Sequence[np.ndarray],
    fields: Sequence[str],
    encoding: Encoding,
    count: Sequence[int] | None = None,
) -> Path:
    """Columns one per field element (a COUNT 2 field takes two)."""
    count = count or [1] * len(fields)
    types = [columns[i].dtype for i in np.cumsum([0, *count])[:-1]]
    n = len(columns[0])
    # pypcd4's from_points checks one column per field, so a COUNT > 1 field needs this.
    meta = MetaData.model_validate(
        {
            "fields": fields,
            "size": [t.itemsize for t in types],
            "type": [NUMPY_TYPE_TO_PCD_TYPE[t][0] for t in types],
            "count": count,
            "points": n,
            "width": n,
        }
    )
    cloud = PointCloud(meta, np.rec.fromarrays(list(columns), dtype=meta.build_dtype()))
    cloud.save(path, encoding=encoding)
    # pypcd4 falls back to binary where LZF cannot shrink the data; the test must see the
    # encoding it asked for.
    assert f"DATA {encoding.value}\n".encode() in path.read_bytes()[:400]
    return path


def _ring_and_time(
    scan: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float32]]:
    """Extra per-point fields as a Velodyne driver writes them: laser ring (from elevation) and
    time within the sweep (from azimuth)."""
    x, y, z = scan[:, 0], scan[:, 1], scan[:, 2]
    elevation = np.degrees(np.arctan2(z, np.hypot(x, y)))
    ring = np.clip(np.round((elevation + 24.8) / 0.4), 0, 63).astype(np.uint16)
    time = ((np.arctan2(y, x) + np.pi) / (2 * np.pi) * 0.1).astype(np.float32)
    return ring, time


def _assert_close(actual: np.ndarray, desired: np.ndarray, encoding: Encoding) -> None:
    if encoding == Encoding.ASCII:
        # ascii stores "%.10f": below 1e-4 ten decimals fall short of float32, and a float64
        # value rounded to 10 decimals, then to float32, can land one float32 step off.
        np.testing.assert_allclose(actual, desired, rtol=2.4e-7, atol=1e-9)
    else:
        np.testing.assert_array_equal(actual, desired)


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.value)
def test_every_encoding_with_extra_fields(
    tmp_path: Path, scan: npt.NDArray[np.float32], encoding: Encoding
) -> None:
    ring, time = _ring_and_time(scan)
    columns: list[np.ndarray] = [scan[:, 0], scan[:, 1], scan[:, 2], scan[:, 3], ring, time]
    fields = ["x", "y", "z", "intensity", "ring", "time"]
    path = _write(tmp_path / "s.pcd", columns, fields, encoding)
    pts = read_pcd(path)
    assert pts.dtype == np.float32 and pts.shape == scan.shape
    _assert_close(pts, scan, encoding)
    np.testing.assert_array_equal(read_scan(path), pts)
    # Field order does not matter: intensity after the extra fields.
    reordered: list[np.ndarray] = [ring, scan[:, 2], time, scan[:, 0], scan[:, 3], scan[:, 1]]
    names = ["ring", "z", "time", "x", "intensity", "y"]
    path = _write(tmp_path / "r.pcd", reordered, names, encoding)
    _assert_close(read_pcd(path), scan, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.value)
def test_without_intensity_reads_zero(
    tmp_path: Path, scan: npt.NDArray[np.float32], encoding: Encoding
) -> None:
    path = _write(tmp_path / "xyz.pcd", list(scan[:, :3].T), ["x", "y", "z"], encoding)
    pts = read_pcd(path)
    assert pts.shape == scan.shape
    _assert_close(pts[:, :3], scan[:, :3], encoding)
    assert not pts[:, 3].any()


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.value)
def test_other_field_types(
    tmp_path: Path, scan: npt.NDArray[np.float32], encoding: Encoding
) -> None:
    """float64 x/y/z (maps in UTM-sized coordinates are stored so), uint8 intensity (Ouster,
    Livox), an int16 field and a COUNT > 1 field."""
    xyz = scan[:, :3].astype(np.float64) + np.array([0.125, -0.25, 0.5])
    intensity = np.round(scan[:, 3] * 255).astype(np.uint8)
    label = np.arange(len(scan), dtype=np.int16)
    columns = [label, xyz[:, 0], xyz[:, 1], xyz[:, 2], intensity, label, label]
    fields = ["label", "x", "y", "z", "intensity", "normal"]
    path = _write(tmp_path / "t.pcd", columns, fields, encoding, count=[1, 1, 1, 1, 1, 2])
    assert b"SIZE 2 8 8 8 1 2\nTYPE I F F F U I\nCOUNT 1 1 1 1 1 2\n" in path.read_bytes()
    pts = read_pcd(path)
    _assert_close(pts[:, :3], xyz.astype(np.float32), encoding)
    np.testing.assert_array_equal(pts[:, 3], intensity)


# Too few points for LZF to shrink: pypcd4 writes those binary.
@pytest.mark.parametrize("encoding", ENCODINGS[:2], ids=lambda e: e.value)
def test_non_finite_points_are_dropped(tmp_path: Path, encoding: Encoding) -> None:
    xyz = np.array([[1, 3, 6], [np.nan, 4, 7], [2, np.inf, 8], [5, 6, 7]], dtype=np.float32)
    i = np.array([0.5, 1, 2, 3], dtype=np.float32)
    path = _write(tmp_path / "n.pcd", [*xyz.T, i], ["x", "y", "z", "intensity"], encoding)
    np.testing.assert_array_equal(read_pcd(path), [[1, 3, 6, 0.5], [5, 6, 7, 3]])
    # One point: numpy reads a single ascii row as a 0-d array.
    one = _write(tmp_path / "one.pcd", [*xyz[:1].T, i[:1]], ["x", "y", "z", "intensity"], encoding)
    np.testing.assert_array_equal(read_pcd(one), [[1, 3, 6, 0.5]])
    none = _write(tmp_path / "none.pcd", [*xyz[1:3].T], ["x", "y", "z"], encoding)
    assert read_pcd(none).shape == (0, 4)
    with pytest.raises(CalibrationError, match=r"none\.pcd: no points with finite x, y, z"):
        read_scan(none)


def test_real_pjlab_ascii_pcd(data_dir: Path) -> None:
    """A PCD from a public calibration data set (not written by pypcd4)."""
    pts = read_pcd(data_dir / "lidar_camera_calib_pjlab" / "0.pcd")
    assert pts.shape == (78238, 4) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[0], [21.647913, 0.19822195, -1.8524752, 11], rtol=1e-6)


# -- broken files ------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path: Path, scan: npt.NDArray[np.float32]) -> dict[Encoding, bytes]:
    """A sweep with a ring field written in each encoding, as bytes."""
    ring, _ = _ring_and_time(scan)
    columns = [*scan.T, ring]
    fields = ["x", "y", "z", "intensity", "ring"]
    return {
        e: _write(tmp_path / f"good_{e.value}.pcd", columns, fields, e).read_bytes()
        for e in ENCODINGS
    }


def _data_start(raw: bytes) -> int:
    return raw.index(b"\n", raw.index(b"\nDATA ") + 1) + 1


def _fails(path: Path, data: bytes, pattern: str) -> None:
    path.write_bytes(data)
    with pytest.raises(CalibrationError, match=rf"^{path}: {pattern}"):
        read_pcd(path)
    with pytest.raises(CalibrationError, match=rf"^{path}: {pattern}"):
        read_scan(path)


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.value)
def test_truncated_data(tmp_path: Path, good: dict[Encoding, bytes], encoding: Encoding) -> None:
    raw = good[encoding]
    start = _data_start(raw)
    n_bytes = len(raw) - start
    # Cut mid-point, on a point boundary (18 bytes a point), and right after the header.
    for cut in (n_bytes // 2 + 5, 18 * 500, 0):
        if encoding == Encoding.BINARY_COMPRESSED:
            problem = r"PCD binary_compressed data is truncated"
        elif encoding == Encoding.BINARY:
            problem = r"PCD binary data is truncated \(\d+ bytes; POINTS \d+ needs \d+\)"
        else:
            problem = r"(PCD ascii data is truncated|corrupt PCD ascii data)"
        _fails(tmp_path / f"cut{cut}.pcd", raw[: start + cut], problem)
    if encoding == Encoding.ASCII:
        # Whole lines missing: numpy reads the rest without a word.
        lines = raw.splitlines(keepends=True)
        _fails(
            tmp_path / "lines.pcd",
            b"".join(lines[:-100]),
            r"PCD ascii data is truncated \(\d+ of the \d+ points stated\)",
        )
        _fails(tmp_path / "header_only.pcd", raw[:start], r"PCD ascii data is truncated \(0 of")


def test_corrupt_data(tmp_path: Path, good: dict[Encoding, bytes]) -> None:
    raw = good[Encoding.BINARY_COMPRESSED]
    start = _data_start(raw)
    compressed, _ = struct.unpack("II", raw[start : start + 8])
    sizes = raw[start : start + 8]
    _fails(
        tmp_path / "zeros.pcd",
        raw[: start + 8] + bytes(len(raw) - start - 8),
        r"corrupt PCD binary_compressed data",
    )
    _fails(
        tmp_path / "flipped.pcd",
        raw[: start + 8] + bytes(b ^ 0x5A for b in raw[start + 8 :]),
        r"corrupt PCD binary_compressed data",
    )
    _fails(
        tmp_path / "size.pcd",
        raw[:start] + struct.pack("II", compressed, 1000) + raw[start + 8 :],
        r"corrupt PCD binary_compressed data \(it states 1000 bytes uncompressed; POINTS",
    )
    assert sizes != struct.pack("II", compressed, 1000)
    ascii_raw = good[Encoding.ASCII]
    start = _data_start(ascii_raw)
    _fails(
        tmp_path / "word.pcd",
        ascii_raw[:start] + b"foo" + ascii_raw[start + 3 :],
        r"corrupt PCD ascii data \(could not convert string",
    )
    _fails(
        tmp_path / "extra.pcd",
        ascii_raw.replace(b"\n", b" 7\n").replace(b" 7\n", b"\n", 11),
        r"corrupt PCD ascii data \(the dtype passed requires 5 columns but 6 were found",
    )


def test_not_a_pcd_or_corrupt_header(
    tmp_path: Path, kitti_dir: Path, good: dict[Encoding, bytes]
) -> None:
    png = (kitti_dir / "image_2" / "000003.png").read_bytes()
    _fails(tmp_path / "png.pcd", png, r"not a PCD file \(its header is not text\)")
    _fails(tmp_path / "text.pcd", b"hello\nworld\n", r"not a PCD file \(no PCD header\)")
    _fails(tmp_path / "empty.pcd", b"", r"not a PCD file \(no PCD header\)")
    kitti_bin = (kitti_dir / "velodyne_reduced" / "000003.bin").read_bytes()
    _fails(tmp_path / "bin.pcd", kitti_bin, r"not a PCD file")
    raw = good[Encoding.BINARY]
    header = raw[: _data_start(raw)]
    cases = {
        "no_data": (header.replace(b"DATA binary\n", b""), r"corrupt PCD header \(no DATA line\)"),
        "long": (
            raw.replace(b"VERSION 0.7\n", b"VERSION 0.7\nORIGIN lab\n"),
            r"corrupt PCD header \(no DATA line within its first 10 lines\)",
        ),
        "no_count": (
            raw.replace(b"COUNT 1 1 1 1 1\n", b""),
            r"corrupt PCD header \(no COUNT line\)",
        ),
        "lzma": (
            raw.replace(b"DATA binary\n", b"DATA lzma\n"),
            r"corrupt PCD header \(DATA 'lzma': Input should be 'ascii', 'binary'",
        ),
        "type_x": (
            raw.replace(b"TYPE F F F F U", b"TYPE F F F F X"),
            r"corrupt PCD header \(TYPE 'X': Input should be 'F', 'U' or 'I'\)",
        ),
        "points": (
            raw.replace(b"POINTS ", b"POINTS -"),
            r"corrupt PCD header \(POINTS -\d+: Input should be greater than or equal to 0\)",
        ),
        "version": (
            raw.replace(b"VERSION 0.7", b"VERSION 0.6"),
            r"corrupt PCD header \(VERSION '0\.6': Input should be '\.7' or '0\.7'\)",
        ),
        "lengths": (
            raw.replace(b"SIZE 4 4 4 4 2", b"SIZE 4 4 4 4"),
            r"corrupt PCD header \(FIELDS, SIZE, TYPE and COUNT list 5, 4, 5 and 5 values\)",
        ),
        "twice": (
            raw.replace(b"FIELDS x y z intensity ring", b"FIELDS x y z x ring"),
            r"corrupt PCD header \(field x twice\)",
        ),
        "no_xyz": (
            raw.replace(b"FIELDS x y z", b"FIELDS a b c"),
            r"PCD has no x y z fields \(FIELDS a b c intensity ring\)",
        ),
        # pypcd4 names each value of a point: this COUNT took minutes and gigabytes.
        "count": (
            raw.replace(b"COUNT 1 1 1 1 1", b"COUNT 1 1 1 100000000 1"),
            r"corrupt PCD header \(COUNT states 100000004 values per point; this reader takes "
            r"at most 10000\)",
        ),
        # No newline for gigabytes was read whole.
        "one_line": (b"x" * (1 << 20) + b"\n" + raw, r"not a PCD file \(its first line is longer"),
        "long_line": (
            raw.replace(b"VERSION 0.7\n", b"VERSION 0.7\n" + b"#" * (1 << 20) + b"\n"),
            r"corrupt PCD header \(line 2 is longer than 1 MiB\)",
        ),
        "float16": (
            raw.replace(b"SIZE 4 4 4 4 2\nTYPE F F F F U", b"SIZE 4 4 4 4 2\nTYPE F F F F F"),
            r"unsupported PCD field type F2 \(field ring; supported: F4 F8 I1",
        ),
    }
    for name, (data, pattern) in cases.items():
        _fails(tmp_path / f"{name}.pcd", data, pattern)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"gone\.pcd: cannot read point cloud"):
        read_pcd(tmp_path / "gone.pcd")
    with pytest.raises(CalibrationError, match=rf"^{tmp_path}: cannot read point cloud \(Is a"):
        read_pcd(tmp_path)  # a folder


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        # pypcd4's int() and float() read each of these as the number meant (78238, 4, 1, 10).
        (b"POINTS 78238", b"POINTS 78_238", "POINTS '78_238'"),
        (b"WIDTH 78238", b"WIDTH 78_238", "WIDTH '78_238'"),
        (b"SIZE 4 4 4 4", b"SIZE 4 4 4 0_4", "SIZE '0_4'"),
        (b"COUNT 1 1 1 1", "COUNT 1 1 \uff11 1".encode(), "COUNT '\uff11'"),  # a full-width 1
        (b"VIEWPOINT 0 0 0 1 ", b"VIEWPOINT 0 0 0 1_0 ", "VIEWPOINT '1_0'"),
    ],
)
def test_a_header_number_int_or_float_alone_would_read_is_refused(
    tmp_path: Path, data_dir: Path, old: bytes, new: bytes, problem: str
) -> None:
    raw = (data_dir / "lidar_camera_calib_pjlab" / "0.pcd").read_bytes()
    assert raw.count(old) == 1
    path = tmp_path / "0.pcd"
    path.write_bytes(raw.replace(old, new))
    with pytest.raises(CalibrationError) as info:
        read_pcd(path)
    assert str(info.value) == f"{path}: corrupt PCD header ({problem} is not a number)"


def test_more_points_than_a_sweep_may_hold_is_refused_before_the_data(data_dir: Path) -> None:
    path = data_dir / "lidar_camera_calib_pjlab" / "0.pcd"  # 78238 points
    with pytest.raises(CalibrationError) as info:
        read_pcd(path, 78237)
    assert str(info.value) == (
        f"{path}: PCD of 78238 points, above the limit of 78237 points a sweep may hold"
    )
    with pytest.raises(CalibrationError, match="above the limit of 78237 points"):
        read_scan(path, 78237)
    assert read_pcd(path, 78238).shape == (78238, 4)
