"""KITTI importers. The raw importer runs on the real timestamps, calibration and oxts packet of
../shared/data/kitti_raw; the images and scans (absent from the corpus) are written by the test
into a copy of the KITTI raw layout."""

from __future__ import annotations

import math
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import load_kitti_raw_calib
from perception.msgs.types import CameraFrame, GnssFix, LidarSweep, RigMessage
from replay.datasets.importers import (
    import_kitti_object,
    import_kitti_raw,
    parse_kitti_timestamp,
    read_kitti_timestamps,
    read_oxts_packet,
    sweep_point_offsets_ns,
)
from replay.datasets.kitti_object import KittiObjectFolder, read_image
from replay.drive import DriveReader
from replay.errors import ReplayError
from replay.output import OutputError

DATE = "2011_09_26"
DRIVE = f"{DATE}_drive_0001_sync"
FRAMES = 108

# Synthetic sweep: forward, left, right, back-left, back-right (Velodyne frame, metres).
SCAN = np.array(
    [
        [10.0, 0.0, -1.0, 0.5],
        [0.0, 10.0, -1.0, 0.5],
        [0.0, -10.0, -1.0, 0.5],
        [-10.0, 1e-3, -1.0, 0.5],
        [-10.0, -1e-3, -1.0, 0.5],
    ],
    dtype=np.float32,
)


def _ns(text: str) -> int:
    """Independent parse (numpy datetime64 in ns, UTC) to check the importer against."""
    return int(np.datetime64(text.strip().replace(" ", "T"), "ns").astype(np.int64))


def _real_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def raw_source(data_dir: Path) -> Path:
    root = data_dir / "kitti_raw" / DATE
    if not (root / DRIVE / "oxts" / "data" / "0000000000.txt").is_file():
        pytest.skip(f"real data not found: {root / DRIVE}")
    return root


def _packet(base: list[str], i: int) -> str:
    """The real packet for i = 0; later packets move north-east 1e-6 deg per step."""
    values = list(base)
    if i:
        values[0] = repr(float(base[0]) + i * 1e-6)
        values[1] = repr(float(base[1]) + i * 1e-6)
    return " ".join(values) + "\n"


@pytest.fixture(scope="module")
def raw_drive(raw_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real KITTI raw folder with synthetic frames for every real timestamp."""
    root = tmp_path_factory.mktemp("kitti_raw") / DATE
    shutil.copytree(raw_source, root)
    drive = root / DRIVE
    # A checkerboard, not a flat grey: the node's camera health check refuses an image with
    # nothing sharp in it (perception.pipeline.camera_health).
    rows, cols = np.indices((375, 1242))
    board = np.where((rows // 16 + cols // 16) % 2 == 0, 40, 120).astype(np.uint8)
    ok, colour = cv2.imencode(".png", np.dstack([board] * 3))
    ok2, grey = cv2.imencode(".png", board)
    assert ok and ok2
    for cam, png in (("image_00", grey), ("image_01", grey), ("image_02", colour),
                     ("image_03", colour)):  # fmt: skip
        (drive / cam / "data").mkdir()
        for i in range(FRAMES):
            (drive / cam / "data" / f"{i:010d}.png").write_bytes(png.tobytes())
    (drive / "velodyne_points" / "data").mkdir()
    for i in range(FRAMES):
        (drive / "velodyne_points" / "data" / f"{i:010d}.bin").write_bytes(SCAN.tobytes())
    base = (drive / "oxts" / "data" / "0000000000.txt").read_text().split()
    for i in range(1, FRAMES):
        (drive / "oxts" / "data" / f"{i:010d}.txt").write_text(_packet(base, i))
    return drive


@pytest.fixture(scope="module")
def raw_import(raw_drive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drives") / "raw.mcap"
    stats = import_kitti_raw(raw_drive, out)
    assert stats.messages == {
        "rig": 1,
        "camera/front": FRAMES,
        "camera/cam3": FRAMES,
        "lidar/top": FRAMES,
        "gnss": FRAMES,
    }
    assert stats.warnings == ()
    # Colour cameras trigger when the lidar faces forwards: ~62 ms after the sweep start.
    assert 55.0 < stats.camera_offsets_ms["camera/front"] < 70.0
    return out


def test_timestamp_parsing_is_exact() -> None:
    assert parse_kitti_timestamp("2011-09-26 13:02:25.951199337") == 1317042145951199337
    assert parse_kitti_timestamp("1970-01-01 00:00:01.5") == 1_500_000_000
    assert parse_kitti_timestamp("1970-01-01 00:00:01") == 1_000_000_000
    with pytest.raises(ValueError, match="not a KITTI timestamp"):
        parse_kitti_timestamp("2011-09-26T13:02:25.95")
    with pytest.raises(ValueError, match="not a KITTI timestamp"):
        parse_kitti_timestamp("2011-09-26 13:02:25.9511993371")


def test_digits_of_another_script_are_refused(raw_source: Path, tmp_path: Path) -> None:
    """A str pattern's digit class, strptime, int() and float() take full-width digits as
    ASCII ones: a year of U+FF12 U+FF10 U+FF11 U+FF11 was 2011, an oxts latitude whose first
    digit was U+FF14 was 49.01..."""
    full_width = str.maketrans("0123456789", "".join(chr(0xFF10 + i) for i in range(10)))
    stamps = tmp_path / "timestamps.txt"
    lines = _real_lines(raw_source / DRIVE / "oxts" / "timestamps.txt")
    lines[1] = lines[1][:4].translate(full_width) + lines[1][4:]
    stamps.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ReplayError) as info:
        read_kitti_timestamps(stamps)
    assert str(info.value) == f"{stamps}:2: not a KITTI timestamp: {lines[1][:40]!r}"
    packet = tmp_path / "0000000000.txt"
    shutil.copy(raw_source / DRIVE / "oxts" / "data" / "0000000000.txt", packet)
    latitude = packet.read_text().split()[0]
    bad = latitude[0].translate(full_width) + latitude[1:]
    _set_oxts(packet, 0, bad)
    with pytest.raises(ReplayError) as info:
        read_oxts_packet(packet, 0)
    assert str(info.value) == f"{packet}: oxts packet is not numbers (value 1 is {bad!r})"


def test_real_timestamp_files_parse_exactly(raw_source: Path) -> None:
    for path in sorted((raw_source / DRIVE).glob("*/timestamps*.txt")):
        lines = _real_lines(path)
        assert len(lines) == FRAMES
        assert read_kitti_timestamps(path) == [_ns(line) for line in lines]


def test_raw_counts_and_real_stamps(raw_import: Path, raw_drive: Path) -> None:
    reader = DriveReader(raw_import)
    assert reader.topics() == {
        "rig": 1,
        "camera/front": FRAMES,
        "camera/cam3": FRAMES,
        "lidar/top": FRAMES,
        "gnss": FRAMES,
    }
    by_topic: dict[str, list[tuple[int, int]]] = {}
    log_times = []
    for rec in reader.messages():
        by_topic.setdefault(rec.topic, []).append((rec.message.header.stamp_ns, rec.log_time_ns))
        log_times.append(rec.log_time_ns)
    assert log_times == sorted(log_times)

    def real(rel: str) -> list[int]:
        return [_ns(line) for line in _real_lines(raw_drive / rel)]

    assert by_topic["camera/front"] == [(t, t) for t in real("image_02/timestamps.txt")]
    assert by_topic["camera/cam3"] == [(t, t) for t in real("image_03/timestamps.txt")]
    assert by_topic["gnss"] == [(t, t) for t in real("oxts/timestamps.txt")]
    starts = real("velodyne_points/timestamps_start.txt")
    ends = real("velodyne_points/timestamps_end.txt")
    assert by_topic["lidar/top"] == list(zip(starts, ends, strict=True))
    # The rig comes first, in force from the drive's first stamp (the first sweep start).
    assert by_topic["rig"] == [(starts[0], starts[0])]


def test_raw_gnss_fixes_equal_the_packets(raw_import: Path, raw_drive: Path) -> None:
    base = (raw_drive / "oxts" / "data" / "0000000000.txt").read_text().split()
    fixes = [r.message for r in DriveReader(raw_import).messages(topics=["gnss"])]
    assert len(fixes) == FRAMES
    assert all(isinstance(f, GnssFix) for f in fixes)
    for i, fix in enumerate(fixes):
        assert isinstance(fix, GnssFix)
        values = [float(v) for v in _packet(base, i).split()]
        assert fix.latitude_deg == values[0] and fix.longitude_deg == values[1]
        assert fix.altitude_m == values[2]
        assert fix.heading_rad == values[5]  # oxts yaw: 0 = east, CCW positive = ENU yaw
        assert fix.velocity_enu_mps == (values[7], values[6], values[10])  # (ve, vn, vu)
        assert fix.position_covariance_m2[0] == pytest.approx(values[23] ** 2)
        assert fix.header.frame_id == "gnss"
    real = fixes[0]
    assert isinstance(real, GnssFix)
    assert real.latitude_deg == 49.015003823272 and real.longitude_deg == 8.4342971002335
    # Heading and velocity agree: the packet's velocity points along its yaw.
    assert real.velocity_enu_mps is not None and real.heading_rad is not None
    ve, vn, _ = real.velocity_enu_mps
    assert abs(math.remainder(math.atan2(vn, ve) - real.heading_rad, 2 * math.pi)) < 0.05


def test_raw_rig_projection_equals_the_raw_calib(raw_import: Path, raw_source: Path) -> None:
    rig = DriveReader(raw_import).rig
    assert rig is not None
    calib = load_kitti_raw_calib(raw_source)
    points = np.array([[10.0, 1.0, -0.5], [25.0, -3.0, 0.2], [6.0, 0.5, 1.0]])
    for name in ("front", "cam3", "cam0", "cam1"):
        np.testing.assert_array_equal(rig.cameras[name].k, calib.cameras[name].k)
        assert (rig.cameras[name].width, rig.cameras[name].height) == (1242, 375)
        frame = f"camera/{name}"
        a = rig.transform(frame, "vehicle").matrix
        np.testing.assert_allclose(a, calib.transform(frame, "vehicle").matrix, atol=1e-12)
        uv_rig, _ = rig.cameras[name].project(rig.transform(frame, "vehicle").apply(points))
        uv_cal, _ = calib.cameras[name].project(calib.transform(frame, "vehicle").apply(points))
        np.testing.assert_allclose(uv_rig, uv_cal, atol=1e-9)
    assert rig.gnss_lever_arm_m is not None and calib.gnss_lever_arm_m is not None
    np.testing.assert_allclose(rig.gnss_lever_arm_m, calib.gnss_lever_arm_m, atol=1e-12)


def test_raw_frames_and_point_times(raw_import: Path, raw_drive: Path) -> None:
    msgs = {r.topic: r.message for r in DriveReader(raw_import).messages()}
    cam = msgs["camera/front"]
    assert isinstance(cam, CameraFrame) and cam.encoding == "png"
    assert cam.data == (raw_drive / "image_02" / "data" / "0000000107.png").read_bytes()
    assert cam.header.frame_id == "camera/front"
    assert msgs["camera/cam3"].header.frame_id == "camera/cam3"
    sweep = msgs["lidar/top"]
    assert isinstance(sweep, LidarSweep)
    np.testing.assert_array_equal(sweep.points, SCAN)
    assert sweep.point_time_offsets_ns is not None
    duration = _ns(_real_lines(raw_drive / "velodyne_points/timestamps_end.txt")[-1]) - _ns(
        _real_lines(raw_drive / "velodyne_points/timestamps_start.txt")[-1]
    )
    offsets = sweep.point_time_offsets_ns.tolist()
    # Clockwise from the back: back-left first, then left, forward (mid-sweep), right, back-right.
    assert offsets[3] < offsets[1] < offsets[0] < offsets[2] < offsets[4]
    assert offsets[0] == round(duration / 2)
    assert offsets[3] <= duration * 1e-3 and offsets[4] >= duration * (1 - 1e-3)
    assert isinstance(msgs["rig"], RigMessage)


def test_point_offsets_span_the_sweep() -> None:
    angles = np.linspace(-math.pi, math.pi, 1001)
    pts = np.stack([np.cos(angles), np.sin(angles), 0 * angles, 0 * angles], 1).astype(np.float32)
    offsets = sweep_point_offsets_ns(pts, 100_000_000)
    assert offsets.dtype == np.int64
    assert offsets.min() >= 0 and offsets.max() <= 100_000_000
    # The real velodyne timestamps.txt (forward) is the midpoint of start and end.
    assert sweep_point_offsets_ns(np.array([[5.0, 0, 0, 0]], np.float32), 1000)[0] == 500


def test_raw_grey_cameras(raw_drive: Path, tmp_path: Path) -> None:
    stats = import_kitti_raw(raw_drive, tmp_path / "grey.mcap", grey=True, compression=None)
    assert stats.messages["camera/cam0"] == FRAMES and stats.messages["camera/cam1"] == FRAMES
    first = next(iter(DriveReader(tmp_path / "grey.mcap").messages(topics=["camera/cam0"])))
    assert isinstance(first.message, CameraFrame)
    real = _ns(_real_lines(raw_drive / "image_00" / "timestamps.txt")[0])
    assert first.message.header.stamp_ns == real


def _oversize_png(drive: Path) -> None:
    """Frame 3 as a whole PNG followed by 32 MiB (decoders stop at its end): what the KITTI raw
    importer copies as it is, above the wire's size limit."""
    frames = drive / "image_02" / "data"
    png = (frames / "0000000002.png").read_bytes()
    (frames / "0000000003.png").write_bytes(png + bytes(32 << 20))


def _set_oxts(packet: Path, index: int, value: str) -> None:
    values = packet.read_text().split()
    values[index] = value
    packet.write_text(" ".join(values) + "\n")


def _set_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _repeat_line(path: Path, lineno: int) -> None:
    _set_line(path, lineno, path.read_text().splitlines()[lineno - 2])


def _later_ends(drive: Path, seconds: int) -> None:
    """Every sweep end `seconds` later: the stamps still increase, each sweep lasts too long."""
    path = drive / "velodyne_points" / "timestamps_end.txt"
    ends = [parse_kitti_timestamp(line) + seconds * 10**9 for line in _real_lines(path)]
    text = [np.datetime_as_string(np.datetime64(t, "ns")).replace("T", " ") for t in ends]
    path.write_text("\n".join(text) + "\n")


def _replace_png(drive: Path, index: int, image: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", image)
    assert ok
    (drive / "image_02" / "data" / f"{index:010d}.png").write_bytes(png.tobytes())


def _cut_png(drive: Path, index: int) -> None:
    path = drive / "image_02" / "data" / f"{index:010d}.png"
    path.write_bytes(path.read_bytes()[:3000])


def _rename(path: Path, name: str) -> None:
    path.rename(path.with_name(name))


def _link_to_nowhere(path: Path) -> None:
    shutil.rmtree(path)
    path.symlink_to(path.name)  # itself: a loop


def _unlinked(path: Path) -> Path:
    path.unlink()
    return path


def _huge_png_header(path: Path) -> None:
    """A PNG whose header says 100000 x 100000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: shutil.rmtree(d / "oxts"), r"oxts: missing"),
        (lambda d: (d / "velodyne_points" / "data" / "0000000005.bin").unlink(),
         r"velodyne_points/data: 107 \.bin files but 108 timestamps"),
        (lambda d: (d / "velodyne_points" / "timestamps_start.txt").unlink(),
         r"timestamps_start\.txt: cannot read timestamps"),
        (lambda d: (d / "image_02" / "timestamps.txt").write_text("2011-09-26 13:02:25.9\nbad\n"),
         r"image_02/timestamps\.txt:2: not a KITTI timestamp"),
        (lambda d: (d.parent / "calib_velo_to_cam.txt").unlink(), r"calib_velo_to_cam\.txt"),
        (lambda d: (d / "oxts" / "data" / "0000000003.txt").write_text("1 2 3\n"),
         r"0000000003\.txt: oxts packet has 3 values, expected 30"),
        (lambda d: shutil.rmtree(d / "image_02"), r"image_02: missing"),
        # Out of the schema's range: it was the drive writer's WireError, naming no file.
        (lambda d: _set_oxts(d / "oxts" / "data" / "0000000003.txt", 0, "91.0"),
         r"oxts/data/0000000003\.txt: oxts packet is no valid fix \(gnss: field "
         r"'fields\.latitude_deg' is 91\.0, outside \[-90\.0, 90\.0\]\)$"),
        (lambda d: _set_oxts(d / "oxts" / "data" / "0000000003.txt", 2, "1e300"),
         r"0000000003\.txt: oxts packet is no valid fix \(gnss: field 'fields\.altitude_m'"),
        # Above the wire's size limit: it was "camera/front: oversize message", naming no file.
        (_oversize_png,
         r"image_02/data/0000000003\.png: cannot be stored in a drive \(camera/front: oversize "
         r"message: \d+ bytes, above the limit of 33554432\)$"),
        # Binary text files: named, with the byte and its offset.
        (lambda d: (d.parent / "calib_cam_to_cam.txt").write_bytes(b"\xff\xfe\x00garbage\n"),
         r"calib_cam_to_cam\.txt: not UTF-8 text \(byte 0xff at offset 0\)$"),
        (lambda d: (d / "oxts" / "data" / "0000000003.txt").write_bytes(b"1 2\xff\xfe\n"),
         r"oxts/data/0000000003\.txt: not UTF-8 text \(byte 0xff at offset 3\)$"),
        (lambda d: (d / "image_02" / "timestamps.txt").write_bytes(b"\xff\xfe\x00\n"),
         r"image_02/timestamps\.txt: not UTF-8 text \(byte 0xff at offset 0\)$"),
        # Stamps that do not increase were taken as they were: frame 50 went before frame 0.
        (lambda d: _repeat_line(d / "image_02" / "timestamps.txt", 51),
         r"image_02/timestamps\.txt:51: '[^']+' repeats the stamp of line 50; a stream's "
         r"stamps must increase$"),
        (lambda d: _set_line(d / "oxts" / "timestamps.txt", 51, "2011-09-26 13:02:20.0"),
         r"oxts/timestamps\.txt:51: '2011-09-26 13:02:20\.0' is before the stamp of line 50"),
        # A year the drive cannot hold: "rig: cannot encode the header document", no file.
        (lambda d: _set_line(d / "image_02" / "timestamps.txt", 1, "0001-01-01 00:00:00.0"),
         r"image_02/timestamps\.txt:1: '0001-01-01 00:00:00\.0' is outside the times a drive "
         r"holds \(1970 to 2116\)$"),
        (lambda d: _set_line(d / "image_02" / "timestamps.txt", 108, "9999-12-31 23:59:59.9"),
         r"image_02/timestamps\.txt:108: '9999-12-31 23:59:59\.9' is outside the times"),
        # A sweep of 5 s was the scan file's "point_time_offsets_ns has values above the limit".
        (lambda d: _later_ends(d, 5),
         r"timestamps_end\.txt:1: sweep lasts 5\.\d+ s from its start in \S+timestamps_start\.txt, "
         r"longer than the 1 s a sweep may take$"),
        # Frames were matched to the timestamps by sorted position: the misnamed frame 50 took
        # the last stamp and frames 51-107 each their neighbour's.
        (lambda d: _rename(d / "image_02" / "data" / "0000000050.png", "0000000200.png"),
         r"image_02/data: 0000000050\.png is missing and 0000000200\.png has no timestamp in "
         r"\S+image_02/timestamps\.txt$"),
        (lambda d: _rename(d / "image_02" / "data" / "0000000050.png", "frame50.png"),
         r"image_02/data: 107 \.png files but 108 timestamps in \S+; 0000000050\.png is missing$"),
        # Pipes among the frames: the import waited for a writer for ever.
        (lambda d: os.mkfifo(_unlinked(d / "velodyne_points" / "data" / "0000000050.bin")),
         r"velodyne_points/data/0000000050\.bin: not a regular file$"),
        (lambda d: os.mkfifo(_unlinked(d / "image_02" / "data" / "0000000000.png")),
         r"image_02/data/0000000000\.png: not a regular file$"),
        # An optional camera's folder as a looping link: it was left out without a word.
        (lambda d: _link_to_nowhere(d / "image_03"),
         r"image_03: a broken or looping link, so no camera images$"),
        # PNG bytes are copied as they are: a cut or resized frame went into the drive.
        (lambda d: _cut_png(d, 50),
         r"image_02/data/0000000050\.png: PNG image is cut short \(no IEND chunk\)$"),
        (lambda d: _replace_png(d, 50, np.zeros((200, 300, 3), np.uint8)),
         r"image_02/data/0000000050\.png: image is 300x200, but camera front's images are "
         r"1242x375$"),
        # It was the calibration file's "P_rect_00: image size ... above 65536 pixels a side".
        (lambda d: _huge_png_header(d / "image_02" / "data" / "0000000000.png"),
         r"image_02/data/0000000000\.png: image of 100000 x 100000 = 10000000000 pixels, above "
         r"the limit of 10000000$"),
        # The whole line was quoted; "4_9" was read as 49; a negative accuracy squared passed.
        (lambda d: _set_oxts(d / "oxts" / "data" / "0000000003.txt", 0, ",".join(["1.5"] * 30)),
         r"0000000003\.txt: oxts packet is not numbers \(value 1 is '1\.5,1\.5,1\.5,1\.5,1\.5,1\.5,"
         r"\.\.\.'\)$"),
        (lambda d: _set_oxts(d / "oxts" / "data" / "0000000003.txt", 0, "4_9"),
         r"0000000003\.txt: oxts packet is not numbers \(value 1 is '4_9'\)$"),
        (lambda d: _set_oxts(d / "oxts" / "data" / "0000000003.txt", 23, "-5"),
         r"0000000003\.txt: oxts packet has a negative pos_accuracy \(-5\.0\)$"),
    ],
)  # fmt: skip
def test_raw_errors_name_the_path(raw_drive: Path, tmp_path: Path, damage, match: str) -> None:
    copy = tmp_path / DATE
    shutil.copytree(raw_drive.parent, copy)
    damage(copy / DRIVE)
    out = tmp_path / "out.mcap"
    with pytest.raises(ReplayError, match=match):
        import_kitti_raw(copy / DRIVE, out)
    assert not out.exists() and not (tmp_path / "out.mcap.part").exists()


def test_raw_lost_frames_keep_their_stamps(raw_drive: Path, tmp_path: Path) -> None:
    """KITTI marks a lost frame with a blank line and no file (2011_09_26_drive_0009_sync's
    velodyne frames 177-180): each file keeps the stamp of its own line."""
    copy = tmp_path / DATE
    shutil.copytree(raw_drive.parent, copy)
    lidar = copy / DRIVE / "velodyne_points"
    for name in ("timestamps_start.txt", "timestamps_end.txt"):
        lines = (lidar / name).read_text().splitlines()
        lines[5] = lines[6] = ""
        (lidar / name).write_text("\n".join(lines) + "\n")
    for i in (5, 6):
        (lidar / "data" / f"{i:010d}.bin").unlink()
    (SCAN * 2).tofile(lidar / "data" / "0000000007.bin")
    out = tmp_path / "out.mcap"
    assert import_kitti_raw(copy / DRIVE, out).messages["lidar/top"] == FRAMES - 2
    sweeps = [r.message for r in DriveReader(out).messages() if r.topic == "lidar/top"]
    starts = _real_lines(raw_drive / "velodyne_points" / "timestamps_start.txt")
    assert [s.header.stamp_ns for s in sweeps] == [
        _ns(line) for i, line in enumerate(starts) if i not in (5, 6)
    ]
    assert isinstance(sweeps[5], LidarSweep)
    assert sweeps[5].header.stamp_ns == _ns(starts[7])
    np.testing.assert_array_equal(sweeps[5].points, SCAN * 2)


def test_raw_drive_replays_with_its_camera_offsets(
    raw_drive: Path, raw_import: Path, yolox_path: Path, tmp_path: Path
) -> None:
    """The imported drive runs through the pipeline: every sweep pairs with its own frame once
    the camera offset the importer reports is configured."""
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    from perception.config import NodeConfig, SyncConfig
    from perception.msgs.jsonl import read_jsonl
    from replay.distributed import replay_source

    offsets = {"camera/front": 62.0}
    config = NodeConfig(sync=SyncConfig(camera_offsets_ms=offsets, camera_windows_ms={
        "camera/front": 20.0}))  # fmt: skip
    result = replay_source(raw_import, tmp_path / "raw.jsonl", config, yolox_path)
    assert result.ok, result.error
    dls = list(read_jsonl(result.out_path))
    starts = [_ns(t) for t in _real_lines(raw_drive / "velodyne_points/timestamps_start.txt")]
    assert [dl.header.stamp_ns for dl in dls] == starts
    assert all(dl.valid and not dl.degraded for dl in dls)


def test_raw_missing_drive(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="does not exist"):
        import_kitti_raw(tmp_path / "nowhere", tmp_path / "x.mcap")
    # A file (a pipe here) was said not to exist.
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ReplayError, match=r"pipe: not a folder, so no KITTI raw drive$"):
        import_kitti_raw(tmp_path / "pipe", tmp_path / "x.mcap")


def test_raw_date_folder_names_its_drives(raw_drive: Path, tmp_path: Path) -> None:
    """The date folder (it holds the calibration) given for a drive: its drives are named."""
    with pytest.raises(ReplayError, match=rf"{DATE}: a KITTI raw date folder, not a drive; "
                       rf"give one of its drives \({DRIVE}\)$"):  # fmt: skip
        import_kitti_raw(raw_drive.parent, tmp_path / "x.mcap")
    assert not (tmp_path / "x.mcap").exists()


def test_object_import(kitti_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "kitti_object.mcap"
    stats = import_kitti_object(kitti_dir, out, start_ns=5)
    assert stats.messages == {"rig": 8, "camera/front": 8, "lidar/top": 8}
    assert (stats.first_stamp_ns, stats.last_stamp_ns) == (5, 5 + 7 * 100_000_000)
    reader = DriveReader(out)
    assert reader.topics() == {"rig": 8, "camera/front": 8, "lidar/top": 8}
    folder = KittiObjectFolder(kitti_dir)
    recs = list(reader.messages())
    assert [r.log_time_ns for r in recs] == [r.message.header.stamp_ns for r in recs]
    sweeps = [r.message for r in recs if r.topic == "lidar/top"]
    cams = [r.message for r in recs if r.topic == "camera/front"]
    rigs = [r.message for r in recs if r.topic == "rig"]
    assert [s.header.stamp_ns for s in sweeps] == [5 + i * 100_000_000 for i in range(8)]
    for i, (sweep, cam, rig) in enumerate(zip(sweeps, cams, rigs, strict=True)):
        expected = folder.frame_messages(i, 5 + i * 100_000_000)
        assert isinstance(sweep, LidarSweep) and isinstance(cam, CameraFrame)
        assert isinstance(rig, RigMessage) and isinstance(expected[0], RigMessage)
        np.testing.assert_array_equal(sweep.points, expected[2].points)  # type: ignore[union-attr]
        assert cam.data is not None
        decoded = cv2.imdecode(np.frombuffer(cam.data, np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(decoded, read_image(folder.frames[i].image_path))
        assert rig.rig == expected[0].rig
    assert reader.rig is not None and reader.rig.cameras["front"].width == 1224


#: One point more than a drive's sweep may hold, 10 m ahead of the car.
_TOO_MANY_POINTS = np.tile(np.array([10.0, 0.0, 0.0, 0.5], np.float32), (1_000_001, 1)).tobytes()


def test_object_import_errors(tmp_path: Path, kitti_dir: Path) -> None:
    with pytest.raises(ReplayError, match="does not exist"):
        import_kitti_object(tmp_path / "nowhere", tmp_path / "x.mcap")
    with pytest.raises(ReplayError, match="output folder does not exist"):
        import_kitti_object(kitti_dir, tmp_path / "no" / "x.mcap")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda k: (k / "velodyne_reduced" / "000003.bin").unlink(),
         "{k}/velodyne_reduced/000003.bin: missing for frame 000003"),
        # A link to itself was said to be missing.
        (lambda k: _unlinked(k / "velodyne_reduced" / "000003.bin").symlink_to("000003.bin"),
         "{k}/velodyne_reduced/000003.bin: a broken or looping link for frame 000003"),
        (lambda k: (k / "calib" / "000003.txt").write_bytes(b"\xff\xfe\x00garbage\n"),
         "{k}/calib/000003.txt: not UTF-8 text (byte 0xff at offset 0)"),
        # Above the wire's limit: it was "lidar/top: ... above the limit", naming no file, and
        # then refused only once read; now from its size, before it is read.
        (lambda k: (k / "velodyne_reduced" / "000003.bin").write_bytes(_TOO_MANY_POINTS),
         "{k}/velodyne_reduced/000003.bin: lidar scan of 16000016 bytes (1000001 points), "
         "above the limit of 1000000 points a sweep may hold"),
    ],
)  # fmt: skip
def test_object_import_broken_frame(tmp_path: Path, kitti_dir: Path, damage, message: str) -> None:
    """A frame without its scan, or with a binary calib file: refused, naming the file, and
    no drive written."""
    copy = tmp_path / "k"
    shutil.copytree(kitti_dir, copy)
    damage(copy)
    out = tmp_path / "x.mcap"
    with pytest.raises(ReplayError) as info:
        import_kitti_object(copy, out)
    assert str(info.value) == message.format(k=copy)
    assert not out.exists() and not (tmp_path / "x.mcap.part").exists()


def test_an_import_without_overwrite_keeps_a_drive_another_import_finished(
    tmp_path: Path, kitti_dir: Path
) -> None:
    """Two `perception import` runs to one new --out, the second finishing last: it replaced
    the first's drive without --overwrite. Here the other run's drive appears while this one
    is written (at its first frame); it is kept, and this import refused."""
    out = tmp_path / "kitti.mcap"

    def another_import_finishes(done: int, _total: int | None) -> None:
        if done == 1:
            import_kitti_object(kitti_dir, out, start_ns=7)

    with pytest.raises(OutputError, match="appeared while this command wrote it"):
        import_kitti_object(kitti_dir, out, progress=another_import_finishes, overwrite=False)
    assert DriveReader(out).topics() == {"rig": 8, "camera/front": 8, "lidar/top": 8}
    first = next(iter(DriveReader(out).messages()))
    assert first.log_time_ns == 7  # the other import's drive, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitti.mcap"]
