"""Dataset importers: KITTI object folders and KITTI raw drives -> drives (MCAP, replay.drive).

KITTI object (`import_kitti_object`)
    The frames of a `KittiObjectFolder`, stamped `period_ns` apart (default 100 ms) from
    `start_ns`, `log_time` = stamp. Each frame is a RigMessage (its own calibration), the
    camera image (the PNG file's bytes, encoding "png": lossless, decodes to exactly the image
    `KittiObjectFolder` reads) and the lidar sweep. The first rig is also the drive's rig.

KITTI raw (`import_kitti_raw`), layout `<date>/<date>_drive_NNNN_sync/`
    Every stream keeps its real timestamps (`YYYY-MM-DD HH:MM:SS.fffffffff`, read as UTC, to
    integer ns exactly, no float on the way).

    - cameras `image_02` (left colour) -> stream `camera/front`, `image_03` (right colour) ->
      `camera/cam3` (when present), and with `grey=True` `image_00` / `image_01` ->
      `camera/cam0` / `camera/cam1`; frame ids `camera/<rig camera name>`; the PNG bytes as they
      are (encoding "png"). Stamp and log time: the image's timestamp.
    - `velodyne_points` -> stream `lidar/top`, frame `lidar`: stamp = the sweep *start*
      (`timestamps_start.txt`), log time = the sweep end (`timestamps_end.txt`: a sweep is
      received when complete). Per-point time offsets come from the azimuth: the HDL-64E turns
      clockwise seen from above and a KITTI sweep starts and ends facing backwards (its
      `timestamps.txt` is the instant it faces forwards, the midpoint of start and end), so a
      point at azimuth `a = atan2(y, x)` (rad, Velodyne frame: x forward, y left) was measured
      at `start + (pi - a) / (2 pi) * (end - start)`.
    - `oxts` -> stream `gnss`, frame `gnss` (the OXTS unit): a GnssFix per packet with latitude,
      longitude, altitude, ENU velocity `(ve, vn, vu)` (m/s) and heading = `yaw` (rad, already
      ENU yaw: 0 = east, counter-clockwise positive, see `oxts/dataformat.txt`); position
      covariance diag(pos_accuracy^2) (m^2; the packet gives no separate vertical accuracy, so
      the vertical variance is taken equal to the horizontal). Stamp and log time: the packet's
      timestamp.
    - calibration files of the date folder -> the rig (calibration.load_kitti_raw_calib with
      the size of the first `image_02` image), written first, stamped at the drive's first
      stamp, and stored as the drive's rig.

Note for replays: with the sweep stamped at its start, the colour cameras (triggered when the
lidar faces forwards) are about 60 ms after their sweep's stamp. `ImportStats.camera_offsets_ms`
gives the median offset per camera stream: put it in the node config's
`sync.camera_offsets_ms` so each sweep pairs with its own frames.
"""

from __future__ import annotations

import bisect
import calendar
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration import GNSS_FRAME, CalibrationError, Rig, load_kitti_raw_calib
from calibration.errors import parse_float, read_text
from calibration.images import check_image_pixels, encoded_image_size, image_size_of
from calibration.rig import camera_frame
from perception.errors import WireError
from perception.msgs import wire
from perception.msgs.schema import DEFAULT_LIMITS, MAX_STAMP_NS, WireLimits
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep, Message, RigMessage
from replay.datasets.kitti_object import (
    CAMERA_STREAM,
    LIDAR_STREAM,
    KittiObjectFolder,
    read_kitti_scan,
)
from replay.drive import RIG_TOPIC, DriveWriter
from replay.errors import DriveStorageError, ReplayError
from replay.output import atomic_output

#: progress(steps done, steps in all): messages for KITTI raw, frames for KITTI object.
ImportProgress = Callable[[int, int], None]

__all__ = [
    "GNSS_STREAM",
    "KITTI_RAW_CAMERAS",
    "KITTI_RAW_GREY_CAMERAS",
    "ImportProgress",
    "ImportStats",
    "atomic_drive",
    "camera_offsets_ms",
    "encoded_image_fault",
    "import_kitti_object",
    "import_kitti_raw",
    "parse_kitti_timestamp",
    "read_kitti_timestamps",
    "read_oxts_packet",
    "sweep_point_offsets_ns",
]

GNSS_STREAM = "gnss"
#: KITTI raw colour camera folders -> (stream, rig camera name).
KITTI_RAW_CAMERAS: dict[str, tuple[str, str]] = {
    "image_02": (CAMERA_STREAM, "front"),
    "image_03": ("camera/cam3", "cam3"),
}
#: KITTI raw grey camera folders -> (stream, rig camera name); imported with `grey=True`.
KITTI_RAW_GREY_CAMERAS: dict[str, tuple[str, str]] = {
    "image_00": ("camera/cam0", "cam0"),
    "image_01": ("camera/cam1", "cam1"),
}

_OXTS_FIELDS = 30
# ASCII digits only: a str pattern's \d, strptime and int() take any script's (a year in
# full-width digits was read as 2011).
_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?$", re.ASCII)
#: A KITTI raw frame file's name: its index, 10 digits (the index of its timestamps line).
_FRAME_NAME = re.compile(r"^\d{10}\.")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: A PNG's last chunk (IEND, empty, fixed CRC): a file cut short has none.
_PNG_END = b"IEND\xaeB`\x82"
# JPEG's start-of-scan and end-of-image markers. Neither can occur inside the compressed data
# (a 0xFF there is followed by 0x00), so a whole JPEG has an end-of-image after its last scan.
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


@dataclass(frozen=True)
class ImportStats:
    """What an import wrote: `messages` per topic, the first and last sensor stamps (ns),
    payload `bytes` written (before compression), the wall time (s), the median offset (ms) of
    each camera stream after its sweep's stamp (for `sync.camera_offsets_ms`; empty for KITTI
    object, whose streams share stamps), and the rig's warnings."""

    path: Path
    messages: dict[str, int]
    first_stamp_ns: int
    last_stamp_ns: int
    bytes: int
    wall_s: float
    camera_offsets_ms: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def encoded_image_fault(data: bytes, encoding: str) -> str | None:
    """What makes the bytes of a PNG or JPEG image (`encoding` "png" or "jpeg") unfit to be
    imported, or None: a header that gives no size, or a file cut short (a PNG without its IEND
    chunk, a JPEG without an end-of-image marker after its last start-of-scan). Judged without
    decoding the image (a full decode of every frame costs more than the import itself):
    damage within the compressed data that keeps the file's structure is left to the decoder."""
    if encoded_image_size(data) is None:
        return f"{encoding.upper()} image gives no size in its header"
    if encoding == "png":
        if data.rfind(_PNG_END) < 0:
            return "PNG image is cut short (no IEND chunk)"
    elif data.rfind(_JPEG_EOI) < data.rfind(_JPEG_SOS):
        return "JPEG image is cut short (no end-of-image marker after its image data)"
    return None


# -- KITTI raw parsing ---------------------------------------------------------------------------


def parse_kitti_timestamp(text: str) -> int:
    """`YYYY-MM-DD HH:MM:SS[.fffffffff]` (UTC) -> ns since the Unix epoch, exactly.

    Raises ValueError for any other text."""
    m = _TIMESTAMP.match(text.strip())
    if m is None:
        raise ValueError(f"not a KITTI timestamp: {text.strip()[:40]!r}")
    struct = time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    fraction = (m.group(2) or "").ljust(9, "0")
    return calendar.timegm(struct) * 1_000_000_000 + int(fraction)


def read_kitti_timestamps(path: Path) -> list[int]:
    """The stamps (ns) of a KITTI `timestamps*.txt` file, one per non-empty line (a blank
    line is a frame lost, see `_frame_stamps`).

    Raises ReplayError naming the file (and line) when missing or malformed: a line that is
    no timestamp, one a drive cannot hold (before 1970 or after `MAX_STAMP_NS`), or one not
    after the line before it (a repeated or earlier stamp is a damaged file, and would put
    its frame at another time than the frames around it)."""
    return _frame_stamps(Path(path))[1]


def _frame_stamps(path: Path) -> tuple[list[int], list[int]]:
    """(frame indices, stamps) of a KITTI timestamps file: line i + 1 is frame i, and a blank
    line a frame lost (KITTI's own: 2011_09_26_drive_0009_sync's velodyne frames 177-180
    have blank lines and no scan files). Raises as `read_kitti_timestamps`."""
    lines = read_text(path, "timestamps", ReplayError).splitlines()
    frames: list[int] = []
    stamps: list[int] = []
    previous = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            stamp = parse_kitti_timestamp(line)
        except ValueError as e:
            raise ReplayError(f"{path}:{lineno}: {e}") from e
        if not 0 <= stamp <= MAX_STAMP_NS:
            raise ReplayError(
                f"{path}:{lineno}: {line.strip()!r} is outside the times a drive holds "
                "(1970 to 2116)"
            )
        if stamps and stamp <= stamps[-1]:
            order = "repeats" if stamp == stamps[-1] else "is before"
            raise ReplayError(
                f"{path}:{lineno}: {line.strip()!r} {order} the stamp of line {previous}; a "
                "stream's stamps must increase"
            )
        frames.append(lineno - 1)
        stamps.append(stamp)
        previous = lineno
    if not stamps:
        raise ReplayError(f"{path}: no timestamps")
    return frames, stamps


def read_oxts_packet(path: Path, stamp_ns: int, seq: int = 0) -> GnssFix:
    """A KITTI oxts packet file (30 values, see `oxts/dataformat.txt`) as a GnssFix stamped
    `stamp_ns` (see the module docstring for the fields). Raises ReplayError naming the file."""
    path = Path(path)
    text = read_text(path, "oxts packet", ReplayError)
    values: list[float] = []
    for i, token in enumerate(text.split(), start=1):
        try:
            values.append(parse_float(token))
        except ValueError:
            shown = token if len(token) <= 24 else token[:24] + "..."
            raise ReplayError(
                f"{path}: oxts packet is not numbers (value {i} is {shown!r})"
            ) from None
    if len(values) != _OXTS_FIELDS:
        raise ReplayError(f"{path}: oxts packet has {len(values)} values, expected {_OXTS_FIELDS}")
    if not all(math.isfinite(v) for v in values):
        raise ReplayError(f"{path}: oxts packet has non-finite values")
    lat, lon, alt, _roll, _pitch, yaw, vn, ve = values[:8]
    vu = values[10]
    pos_accuracy = values[23]
    if pos_accuracy < 0:
        # Squared, it would pass as a valid variance.
        raise ReplayError(f"{path}: oxts packet has a negative pos_accuracy ({pos_accuracy})")
    var = pos_accuracy * pos_accuracy
    fix = GnssFix(
        header=Header(GNSS_STREAM, seq, stamp_ns, GNSS_FRAME),
        latitude_deg=lat,
        longitude_deg=lon,
        altitude_m=alt,
        position_covariance_m2=(var, 0.0, 0.0, 0.0, var, 0.0, 0.0, 0.0, var),
        velocity_enu_mps=(ve, vn, vu),
        heading_rad=yaw,
    )
    try:
        # What the drive will check when the fix is written, said here with the packet's
        # file (a latitude of 91 was the writer's WireError, naming no file).
        wire.encode(fix)
    except WireError as e:
        raise ReplayError(f"{path}: oxts packet is no valid fix ({e})") from None
    return fix


def sweep_point_offsets_ns(
    points: npt.NDArray[np.float32], duration_ns: int
) -> npt.NDArray[np.int64]:
    """Per-point time after the sweep start (ns) of a KITTI HDL-64E sweep lasting
    `duration_ns`, from each point's azimuth (see the module docstring), in [0, duration_ns]."""
    azimuth = np.arctan2(points[:, 1].astype(np.float64), points[:, 0].astype(np.float64))
    fraction = np.clip((np.pi - azimuth) / (2.0 * np.pi), 0.0, 1.0)
    out: npt.NDArray[np.int64] = np.rint(fraction * max(duration_ns, 0)).astype(np.int64)
    return out


@dataclass(frozen=True)
class _Stream:
    """One stream of a raw drive: its data files and their stamps / log times (ns)."""

    topic: str
    files: list[Path]
    stamps: list[int]
    log_times: list[int]
    rank: int  # tie-break between streams at equal log times


def _data_files(folder: Path, suffix: str, frames: Sequence[int], ts_path: Path) -> list[Path]:
    """The files of `frames` (`_frame_stamps`), `data/<frame index, 10 digits><suffix>`.

    Frames are matched to their timestamps by name, not by position in a sorted listing: one
    misnamed or missing file would otherwise move every later frame to its neighbour's stamp.
    Other files (`._*` from macOS copies, notes) are not frames and are left alone."""
    data = folder / "data"
    if not data.is_dir():
        raise ReplayError(f"{data}: missing (the frames of {folder.name})")
    present = {
        p.name for p in data.iterdir() if _FRAME_NAME.match(p.name) and p.name.endswith(suffix)
    }
    names = [f"{i:010d}{suffix}" for i in frames]
    missing = [n for n in names if n not in present]
    if len(present) != len(names):
        first = f"; {missing[0]} is missing" if missing else ""
        raise ReplayError(
            f"{data}: {len(present)} {suffix} files but {len(names)} timestamps in {ts_path}{first}"
        )
    if missing:
        extra = sorted(present - set(names))[0]
        raise ReplayError(
            f"{data}: {missing[0]} is missing and {extra} has no timestamp in {ts_path}"
        )
    files = [data / n for n in names]
    for path in files:
        if not path.is_file():
            # A pipe would block the import for ever; a folder or a looping link fails late.
            state = "a broken or looping link" if path.is_symlink() else "not a regular file"
            raise ReplayError(f"{path}: {state}")
    return files


def _raw_camera(drive: Path, folder: str, topic: str, rank: int) -> _Stream:
    root = drive / folder
    if not root.is_dir():
        state = "a broken or looping link" if root.is_symlink() else "not a folder"
        raise ReplayError(f"{root}: {state}, so no camera images")
    ts_path = root / "timestamps.txt"
    frames, stamps = _frame_stamps(ts_path)
    return _Stream(topic, _data_files(root, ".png", frames, ts_path), stamps, stamps, rank)


def _raw_lidar(drive: Path, rank: int) -> _Stream:
    root = drive / "velodyne_points"
    if not root.is_dir():
        raise ReplayError(f"{root}: missing (the lidar sweeps)")
    start_path, end_path = root / "timestamps_start.txt", root / "timestamps_end.txt"
    frames, starts = _frame_stamps(start_path)
    end_frames, ends = _frame_stamps(end_path)
    if len(starts) != len(ends):
        raise ReplayError(f"{end_path}: {len(ends)} stamps but {len(starts)} in {start_path}")
    if end_frames != frames:
        i = next(k for k, (a, b) in enumerate(zip(frames, end_frames, strict=True)) if a != b)
        raise ReplayError(
            f"{end_path}:{end_frames[i] + 1}: the sweep of line {frames[i] + 1} of {start_path} "
            "has its end on another line (a blank line is a sweep lost)"
        )
    longest = DEFAULT_LIMITS.max_sweep_duration_ns
    for i, s, e in zip((f + 1 for f in frames), starts, ends, strict=True):
        if e < s:
            raise ReplayError(f"{end_path}:{i}: sweep ends before it starts ({start_path})")
        if e - s > longest:
            # Each point's time is read from the sweep's span: a damaged stamp of either file
            # gave an oversize sweep, named by its scan file.
            raise ReplayError(
                f"{end_path}:{i}: sweep lasts {(e - s) / 1e9:.3f} s from its start in "
                f"{start_path}, longer than the {longest / 1e9:g} s a sweep may take"
            )
    return _Stream(LIDAR_STREAM, _data_files(root, ".bin", frames, start_path), starts, ends, rank)


def _raw_oxts(drive: Path, rank: int) -> _Stream:
    root = drive / "oxts"
    if not root.is_dir():
        raise ReplayError(f"{root}: missing (the GNSS/INS packets)")
    ts_path = root / "timestamps.txt"
    frames, stamps = _frame_stamps(ts_path)
    return _Stream(GNSS_STREAM, _data_files(root, ".txt", frames, ts_path), stamps, stamps, rank)


def _load(stream: _Stream, index: int, cameras: dict[str, str], rig: Rig) -> Message:
    path, stamp = stream.files[index], stream.stamps[index]
    if stream.topic == LIDAR_STREAM:
        points = read_kitti_scan(path)
        duration = stream.log_times[index] - stamp
        return LidarSweep(
            Header(LIDAR_STREAM, index, stamp, "lidar"),
            points=points,
            point_time_offsets_ns=sweep_point_offsets_ns(points, duration),
        )
    if stream.topic == GNSS_STREAM:
        return read_oxts_packet(path, stamp, index)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReplayError(f"{path}: cannot read image ({e.strerror})") from e
    if not data.startswith(_PNG_MAGIC):
        raise ReplayError(f"{path}: not a PNG image")
    # The bytes are copied as they are, not decoded: a file cut short or of another size
    # than its camera's would pass into the drive and fail only when replayed.
    fault = encoded_image_fault(data, "png")
    if fault is not None:
        raise ReplayError(f"{path}: {fault}")
    name = cameras[stream.topic]
    camera = rig.cameras[name]
    size = encoded_image_size(data)
    if size != (camera.width, camera.height):
        got = "no size in its header" if size is None else f"{size[0]}x{size[1]}"
        raise ReplayError(
            f"{path}: image is {got}, but camera {name}'s images are {camera.width}x{camera.height}"
        )
    header = Header(stream.topic, index, stamp, camera_frame(name))
    return CameraFrame(header, data=data, encoding="png")


def _camera_offsets_ms(lidar: _Stream, cameras: Sequence[_Stream]) -> dict[str, float]:
    """Median (camera stamp - stamp of the sweep with the same index), ms, per camera."""
    out: dict[str, float] = {}
    for cam in cameras:
        n = min(len(cam.stamps), len(lidar.stamps))
        if n:
            diffs = [cam.stamps[i] - lidar.stamps[i] for i in range(n)]
            out[cam.topic] = statistics.median(diffs) / 1e6
    return out


def camera_offsets_ms(
    sweeps: Sequence[int], cameras: Mapping[str, Sequence[int]], min_ms: float = 0.0
) -> dict[str, float]:
    """Per camera stream, the median of (frame stamp - stamp of the latest sweep at or before
    it), ms, where its size is at least `min_ms` (for `sync.camera_offsets_ms`); frames before
    the first sweep are left out. Stamps in ns."""
    ordered = sorted(sweeps)
    out: dict[str, float] = {}
    for stream, stamps in cameras.items():
        diffs = [s - ordered[i - 1] for s in stamps if (i := bisect.bisect_right(ordered, s)) > 0]
        if diffs and abs(median_ms := statistics.median(diffs) / 1e6) >= min_ms:
            out[stream] = median_ms
    return out


@contextmanager
def atomic_drive(
    out_path: Path,
    compression: str | None,
    *,
    overwrite: bool = True,
    limits: WireLimits = DEFAULT_LIMITS,
) -> Iterator[DriveWriter]:
    """A DriveWriter on a temporary file beside `out_path`, renamed to `out_path` only when the
    block completes (replay.output.atomic_output): a failed import leaves no half drive and an
    existing drive as it was. Without `overwrite`, a drive that appeared at `out_path` while
    this one was written (a second import of the same new drive) is not replaced. `limits`:
    what a message may hold (`DriveWriter`)."""
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise ReplayError(f"{out_path.parent}: output folder does not exist")
    try:
        with (
            atomic_output(out_path, "the drive", replace=overwrite) as part,
            DriveWriter(part, compression=compression, limits=limits) as writer,
        ):
            yield writer
    except DriveStorageError as e:
        # The writer names its hidden temporary file, which is gone with the failure.
        cause = e.__cause__
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(e)
        raise ReplayError(
            f"{out_path}: cannot write the drive ({why}); no drive written, an existing one "
            "kept as it was"
        ) from e


def import_kitti_raw(
    drive_dir: Path,
    out_path: Path,
    *,
    grey: bool = False,
    compression: str | None = "zstd",
    progress: ImportProgress | None = None,
    overwrite: bool = True,
) -> ImportStats:
    """Import a KITTI raw drive folder (`<date>/<date>_drive_NNNN_sync/`, calibration files in
    `<date>/`) into the drive `out_path`; see the module docstring for the streams. `image_03`
    is imported when present; `grey=True` adds `image_00` and `image_01`. `progress(done,
    total)` is called after each message written. `overwrite`: see `atomic_drive`.

    The file appears only when complete (written as `<out>.part`, then renamed). Raises
    ReplayError naming the path when a folder, timestamps file, data file or calibration file
    is missing or malformed, or when a data folder's file count differs from its timestamps.
    """
    start = time.perf_counter()
    drive = Path(drive_dir)
    if not drive.is_dir():
        if drive.exists():
            raise ReplayError(f"{drive}: not a folder, so no KITTI raw drive")
        raise ReplayError(f"{drive}: KITTI raw drive folder does not exist")
    if not (drive / "image_02").is_dir():
        drives = sorted(p.name for p in drive.glob("*_drive_*_sync") if p.is_dir())
        if drives:
            # The date folder (it holds the calibration) given instead of one of its drives.
            shown = ", ".join(drives[:3]) + (
                f" and {len(drives) - 3} more" if len(drives) > 3 else ""
            )
            raise ReplayError(
                f"{drive}: a KITTI raw date folder, not a drive; give one of its drives ({shown})"
            )
        raise ReplayError(f"{drive / 'image_02'}: missing (the front colour camera)")
    folders = dict(KITTI_RAW_CAMERAS)
    if grey:
        folders |= KITTI_RAW_GREY_CAMERAS
    cameras: dict[str, str] = {}
    camera_streams: list[_Stream] = []
    for rank, (folder, (topic, name)) in enumerate(sorted(folders.items()), start=2):
        # A file or a broken link by an optional camera's name is a damaged camera, not none.
        if folder != "image_02" and not os.path.lexists(drive / folder):
            if folder in KITTI_RAW_GREY_CAMERAS:
                raise ReplayError(f"{drive / folder}: missing (grey=True asks for it)")
            continue
        camera_streams.append(_raw_camera(drive, folder, topic, rank))
        cameras[topic] = name
    lidar = _raw_lidar(drive, 1)
    oxts = _raw_oxts(drive, 0)
    streams = [oxts, lidar, *camera_streams]

    front = next(s for s in camera_streams if s.topic == CAMERA_STREAM)
    try:
        # Before the calibration, which would blame its own size limit for a huge image.
        check_image_pixels(front.files[0], DEFAULT_LIMITS.max_image_pixels)
        size = image_size_of(front.files[0])
        rig = load_kitti_raw_calib(drive.parent, size)
    except CalibrationError as e:
        raise ReplayError(str(e)) from e

    first = min(min(s.stamps) for s in streams)
    last = max(max(s.stamps) for s in streams)
    order = sorted(
        (s.log_times[i], s.rank, i, k) for k, s in enumerate(streams) for i in range(len(s.files))
    )
    counts: dict[str, int] = {RIG_TOPIC: 1}
    with atomic_drive(out_path, compression, overwrite=overwrite) as writer:
        writer.write_rig(rig, first)
        for done, (log_time, _rank, i, k) in enumerate(order, start=1):
            stream = streams[k]
            msg = _load(stream, i, cameras, rig)
            writer.write(msg, log_time, stream.topic, source=str(stream.files[i]))
            counts[stream.topic] = counts.get(stream.topic, 0) + 1
            if progress is not None:
                progress(done, len(order))
        written = writer.bytes_written
    return ImportStats(
        path=Path(out_path),
        messages=counts,
        first_stamp_ns=first,
        last_stamp_ns=last,
        bytes=written,
        wall_s=time.perf_counter() - start,
        camera_offsets_ms=_camera_offsets_ms(lidar, camera_streams),
        warnings=tuple(rig.warnings),
    )


# -- KITTI object ---------------------------------------------------------------------------------


def _object_messages(
    folder: KittiObjectFolder, start_ns: int, period_ns: int
) -> Iterator[tuple[Message, Rig | None, Path]]:
    """Each frame's messages with encoded images; the rig object alongside rig messages; the
    file each came from."""
    for i, frame in enumerate(folder.frames):
        stamp = start_ns + i * period_ns
        for msg in folder.frame_messages(i, stamp):
            if isinstance(msg, CameraFrame):
                # The PNG as it is: lossless, decodes to exactly the image read above.
                data = frame.image_path.read_bytes()
                yield CameraFrame(msg.header, data=data, encoding="png"), None, frame.image_path
            elif isinstance(msg, RigMessage):
                source = frame.calib_path
                yield msg, Rig.from_dict(msg.rig, source=str(source)), source
            else:
                yield msg, None, frame.lidar_path


def import_kitti_object(
    kitti_dir: Path,
    out_path: Path,
    *,
    lidar_dir: str | None = None,
    start_ns: int = 0,
    period_ns: int = 100_000_000,
    compression: str | None = "zstd",
    progress: ImportProgress | None = None,
    overwrite: bool = True,
) -> ImportStats:
    """Import a KITTI object folder (e.g. `training/`) into the drive `out_path`: per frame a
    RigMessage, the camera image (PNG bytes) and the lidar sweep, frames `period_ns` (ns) apart
    from `start_ns` (ns), log time = stamp. `lidar_dir` as for KittiObjectFolder.
    `progress(done, total)` is called after each frame written. `overwrite`: see
    `atomic_drive`.

    The file appears only when complete. Raises ReplayError naming the path for a missing or
    malformed folder or frame; ValueError for a non-positive `period_ns`."""
    if period_ns <= 0:
        raise ValueError(f"period_ns must be > 0, got {period_ns}")
    begin = time.perf_counter()
    folder = KittiObjectFolder(Path(kitti_dir), lidar_dir)
    counts: dict[str, int] = {}
    first_rig = True
    with atomic_drive(out_path, compression, overwrite=overwrite) as writer:
        for msg, rig, source in _object_messages(folder, start_ns, period_ns):
            if rig is not None and first_rig:
                # Also the drive's rig (metadata) so the drive is self-contained.
                writer.write_rig(rig, msg.header.stamp_ns)
                first_rig = False
            else:
                writer.write(msg, msg.header.stamp_ns, msg.header.stream, source=str(source))
            topic = RIG_TOPIC if rig is not None else msg.header.stream
            counts[topic] = counts.get(topic, 0) + 1
            if progress is not None and isinstance(msg, LidarSweep):
                # The sweep is a frame's last message.
                progress(msg.header.seq + 1, len(folder))
        written = writer.bytes_written
    return ImportStats(
        path=Path(out_path),
        messages=counts,
        first_stamp_ns=start_ns,
        last_stamp_ns=start_ns + (len(folder) - 1) * period_ns,
        bytes=written,
        wall_s=time.perf_counter() - begin,
    )
