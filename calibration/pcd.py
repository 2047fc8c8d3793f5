"""PCD point clouds (PCL's format) read through pypcd4, in every encoding it defines.

pypcd4 parses; this module checks the header before the data is touched and turns every
failure into a CalibrationError naming the file and the problem. pypcd4 on its own raises
pydantic, numpy, KeyError or IndexError from deep inside for a bad header, and silently returns
fewer points than stated for a truncated binary or ascii data section.
"""

from __future__ import annotations

import os
import struct
import warnings
from io import BufferedReader
from pathlib import Path

import numpy as np
import numpy.typing as npt

# pypcd4's package __init__ re-exports these implicitly (mypy strict refuses that import).
from pypcd4.pypcd4 import PCD_TYPE_TO_NUMPY_TYPE, Encoding, MetaData, PointCloud

from calibration.errors import CalibrationError, open_regular_file, parse_float

__all__ = ["read_pcd"]

# pypcd4 reads header lines (comments and blank lines aside) until DATA or this many, whichever
# comes first, so a header with an extra line never reaches its DATA line there.
_PYPCD4_HEADER_LINES = 10
_HEADER_KEYS = frozenset(
    ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")
)
#: The header keys whose values pypcd4 converts with int() or float().
_NUMBER_KEYS = frozenset(("SIZE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS"))
# The most values a point may hold (FIELDS times their COUNT): a lidar point has a handful, the
# largest of PCL's feature descriptors (a VFH histogram) 308.
_MAX_VALUES_PER_POINT = 10_000
# The longest header line read: a FIELDS line of the most values a point may hold is 200 kB.
_MAX_HEADER_LINE_BYTES = 1 << 20
# What pypcd4's data parsers raise for a data section that does not match its header: numpy's
# loadtxt/frombuffer (ValueError), lzf (ValueError, or None -> TypeError), struct (struct.error).
_DATA_ERRORS = (ValueError, TypeError, RuntimeError, struct.error)


def read_pcd(path: Path, max_points: int | None = None) -> npt.NDArray[np.float32]:
    """Read a PCD file (v0.7; DATA ascii, binary or binary_compressed) -> N x 4 float32
    (x, y, z, intensity). `max_points`: the most points its header may state (a sweep's wire
    limit), checked before the data is read; None: no limit.

    Fields of any PCD type (F4/F8, I1-I8, U1-U8) are converted to float32; a missing intensity
    field reads as 0; other fields (ring, time, ...) are ignored; points with non-finite x/y/z
    are dropped. Raises CalibrationError naming the file when it cannot be read, is not a
    regular file (`errors.open_regular_file`), is not a PCD, has a corrupt header, no x/y/z
    fields, an unsupported field type, more than `max_points` points, or a truncated or
    corrupt data section.
    """
    path = Path(path)
    try:
        with open_regular_file(path, "point cloud") as fp:
            meta, data_offset = _read_header(path, fp)
            if max_points is not None and meta.points > max_points:
                raise CalibrationError(
                    f"{path}: PCD of {meta.points} points, above the limit of {max_points} "
                    "points a sweep may hold"
                )
            size = os.fstat(fp.fileno()).st_size
            _check_data_size(path, fp, meta, size - data_offset)
            fp.seek(0)
            cloud = _read_cloud(path, fp, meta)
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read point cloud ({e.strerror or e})") from e
    columns = [_column(meta, name) for name in ("x", "y", "z")]
    if "intensity" in meta.fields:
        columns.append(_column(meta, "intensity"))
    out = np.zeros((cloud.points, 4), dtype=np.float32)
    if cloud.points:
        # Values beyond float32's range (a corrupt float64 field) become inf and are dropped
        # below with the other non-finite points; the cast need not warn about them.
        with np.errstate(over="ignore", invalid="ignore"):
            out[:, : len(columns)] = cloud.numpy(columns).astype(np.float32)
    kept: npt.NDArray[np.float32] = out[np.all(np.isfinite(out[:, :3]), axis=1)]
    return kept


def _read_header(path: Path, fp: BufferedReader) -> tuple[MetaData, int]:
    """The header as pypcd4 will parse it, checked; and the byte offset of the data section."""
    lines: list[str] = []
    # The same line walk as pypcd4's PointCloud.from_fileobj, so what is checked here is what
    # it will read.
    while len(lines) < _PYPCD4_HEADER_LINES:
        raw = fp.readline(_MAX_HEADER_LINE_BYTES + 1)
        if not raw:
            break
        if len(raw) > _MAX_HEADER_LINE_BYTES:
            # A binary file given by mistake may hold no newline for gigabytes.
            raise CalibrationError(
                f"{path}: not a PCD file (its first line is longer than 1 MiB)"
                if not lines
                else f"{path}: corrupt PCD header (line {len(lines) + 1} is longer than 1 MiB)"
            )
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise CalibrationError(
                f"{path}: not a PCD file (its header is not text)"
                if not lines
                else f"{path}: corrupt PCD header (line {len(lines) + 1} is not text)"
            ) from None
        if line and not line.startswith("#"):
            lines.append(line)
            if line.startswith("DATA"):
                break
    if not any(line.split()[0].upper() in _HEADER_KEYS for line in lines):
        raise CalibrationError(f"{path}: not a PCD file (no PCD header)")
    if not lines[-1].startswith("DATA"):
        where = "" if len(lines) < _PYPCD4_HEADER_LINES else " within its first 10 lines"
        raise CalibrationError(f"{path}: corrupt PCD header (no DATA line{where})")
    data_offset = fp.tell()
    _check_header_numbers(path, lines)
    try:
        meta = MetaData.parse_header(lines)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise CalibrationError(f"{path}: corrupt PCD header ({_header_problem(e)})") from None
    f = meta.fields
    if not len(f) == len(meta.size) == len(meta.type) == len(meta.count):
        raise CalibrationError(
            f"{path}: corrupt PCD header (FIELDS, SIZE, TYPE and COUNT list {len(f)}, "
            f"{len(meta.size)}, {len(meta.type)} and {len(meta.count)} values)"
        )
    values = sum(meta.count)
    if values > _MAX_VALUES_PER_POINT:
        # pypcd4 names every value of a point as a field of its own: COUNT 100000000 took
        # minutes and gigabytes before a byte of data was read.
        raise CalibrationError(
            f"{path}: corrupt PCD header (COUNT states {values} values per point; this reader "
            f"takes at most {_MAX_VALUES_PER_POINT})"
        )
    if len(set(f)) != len(f):
        twice = sorted({name for name in f if f.count(name) > 1})
        raise CalibrationError(f"{path}: corrupt PCD header (field {', '.join(twice)} twice)")
    for name, typ, size in zip(f, meta.type, meta.size, strict=True):
        if (typ, size) not in PCD_TYPE_TO_NUMPY_TYPE:
            raise CalibrationError(
                f"{path}: unsupported PCD field type {typ}{size} (field {name}; "
                "supported: F4 F8 I1 I2 I4 I8 U1 U2 U4 U8)"
            )
    if not {"x", "y", "z"} <= set(f):
        shown = " ".join(name for name in f if not name.startswith("#$%&~~"))  # pypcd4's "_"
        raise CalibrationError(f"{path}: PCD has no x y z fields (FIELDS {shown})")
    return meta, data_offset


def _check_header_numbers(path: Path, lines: list[str]) -> None:
    """pypcd4 converts with int() and float(), which read `WIDTH 1_000` as 1000 and digits of
    any script as ASCII ones: a damaged header read as a good one."""
    for line in lines:
        key, *values = line.split()
        if key.upper() not in _NUMBER_KEYS:
            continue
        for value in values:
            try:
                parse_float(value)
            except ValueError:
                shown = value if len(value) <= 24 else value[:24] + "..."
                raise CalibrationError(
                    f"{path}: corrupt PCD header ({key} {shown!r} is not a number)"
                ) from None


def _header_problem(e: ValueError) -> str:
    """A pydantic validation error of pypcd4's MetaData as header keys and what is wrong."""
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    problems = []
    for err in errors():
        loc = err.get("loc", ())
        key = str(loc[0]).upper() if loc else "header"
        if err.get("type") == "missing":
            problems.append(f"no {key} line")
        else:
            problems.append(f"{key} {err.get('input')!r}: {err.get('msg')}")
    return "; ".join(problems)


def _check_data_size(path: Path, fp: BufferedReader, meta: MetaData, n_bytes: int) -> None:
    """Binary data sections hold a known number of bytes; pypcd4 would read a short one as
    fewer points, or fail inside numpy."""
    if meta.points == 0:
        return
    need = meta.points * meta.build_dtype().itemsize
    if meta.data == Encoding.BINARY and n_bytes < need:
        raise CalibrationError(
            f"{path}: PCD binary data is truncated ({n_bytes} bytes; POINTS {meta.points} "
            f"needs {need})"
        )
    if meta.data in (Encoding.BINARY_COMPRESSED, Encoding.BINARYSCOMPRESSED):
        if n_bytes < 8:
            raise CalibrationError(
                f"{path}: PCD binary_compressed data is truncated (no size header)"
            )
        # The sizes as pypcd4 unpacks them (native "II"; PCL writes them the same way).
        compressed, uncompressed = struct.unpack("II", fp.read(8))
        if compressed > n_bytes - 8:
            raise CalibrationError(
                f"{path}: PCD binary_compressed data is truncated ({n_bytes - 8} bytes of "
                f"the {compressed} compressed bytes stated)"
            )
        if uncompressed != need:
            raise CalibrationError(
                f"{path}: corrupt PCD binary_compressed data (it states {uncompressed} bytes "
                f"uncompressed; POINTS {meta.points} needs {need})"
            )


def _read_cloud(path: Path, fp: BufferedReader, meta: MetaData) -> PointCloud:
    encoding = meta.data.value
    try:
        # numpy.loadtxt warns on an ascii data section without rows; that is reported below
        # as a truncated file, and library code does not print.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cloud = PointCloud.from_fileobj(fp)
    except _DATA_ERRORS as e:
        # lzf returns None for a stream that decompresses past the stated size, on which
        # pypcd4 fails with a TypeError; numpy's messages go on to advise about its own
        # arguments, so the first clause is the fact.
        detail = "LZF data does not decompress" if isinstance(e, TypeError) else str(e)
        detail = detail.split(";")[0]
        raise CalibrationError(f"{path}: corrupt PCD {encoding} data ({detail})") from None
    # numpy.loadtxt returns a 0-d array for a single row, which pypcd4 keeps as it is.
    cloud.pc_data = np.atleast_1d(cloud.pc_data)
    if len(cloud.pc_data) != meta.points:
        raise CalibrationError(
            f"{path}: PCD {encoding} data is truncated ({len(cloud.pc_data)} of the "
            f"{meta.points} points stated)"
        )
    return cloud


def _column(meta: MetaData, name: str) -> str:
    """pypcd4's column for a field: its name, or for a COUNT > 1 field its first element."""
    return name if meta.count[meta.fields.index(name)] == 1 else f"{name}__0000"
