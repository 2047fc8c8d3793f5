"""Image sizes for the loaders, read without decoding the whole image where possible."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError

__all__ = [
    "IMAGE_SUFFIXES",
    "check_image_pixels",
    "decode_image_file",
    "encode_image",
    "encoded_image_size",
    "find_image",
    "image_size_of",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG's start-of-frame markers (baseline, progressive, lossless, arithmetic): they give the size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7} | set(range(0xC9, 0xD0)) - {0xCC})
# Segments read before a JPEG's frame header: a camera's file has a few dozen at most.
_JPEG_MAX_SEGMENTS = 1000
#: The bytes of an encoded image that hold its size (a JPEG's EXIF thumbnail comes first).
IMAGE_HEAD_BYTES = 1 << 20
# What is read first: a PNG's header is in its first 24 bytes, most JPEGs' in their first KiBs.
_FIRST_READ_BYTES = 1 << 16


def encoded_image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) that a PNG or JPEG file's header gives, without decoding the image: a
    small file can decode to gigabytes (a decompression bomb), so the size is judged first.
    None when the header gives none (not PNG or JPEG, or damaged).
    """
    view = memoryview(data).cast("B")
    if bytes(view[:8]) == _PNG_MAGIC and bytes(view[12:16]) == b"IHDR" and len(view) >= 24:
        width, height = struct.unpack(">II", view[16:24])
        return int(width), int(height)
    if bytes(view[:2]) != b"\xff\xd8":
        return None
    i, n = 2, len(view)
    for _ in range(_JPEG_MAX_SEGMENTS):
        if i + 4 > n or view[i] != 0xFF:
            return None
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length: TEM, RSTn, SOI
            i += 2
            continue
        length = (view[i + 2] << 8) | view[i + 3]
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            height = (view[i + 5] << 8) | view[i + 6]
            width = (view[i + 7] << 8) | view[i + 8]
            return width, height
        if length < 2:
            return None
        i += 2 + length
    return None


def _header_size(path: Path) -> tuple[int, int] | None:
    """`encoded_image_size` of an image file's first bytes: a PNG's 24, a JPEG's up to its
    frame header (read on only for a JPEG whose metadata come first)."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(_FIRST_READ_BYTES)
            size = encoded_image_size(head)
            if size is None and head[:2] == b"\xff\xd8" and len(head) == _FIRST_READ_BYTES:
                size = encoded_image_size(head + f.read(IMAGE_HEAD_BYTES - _FIRST_READ_BYTES))
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read image ({e.strerror})") from e
    return size


def check_image_pixels(path: Path, max_pixels: int) -> None:
    """Refuses an image file whose header says it decodes to more than `max_pixels` (a small
    PNG can decode to gigabytes); one whose header gives no size is left to the decoder.

    Raises:
        CalibrationError: naming the file, its size and the limit; or it cannot be read.
    """
    size = _header_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        raise CalibrationError(
            f"{path}: image of {size[0]} x {size[1]} = {size[0] * size[1]} pixels, above the "
            f"limit of {max_pixels}"
        )


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of an image file. Raises CalibrationError if unreadable."""
    size = _header_size(path)
    if size is not None:
        return size
    image = decode_image_file(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CalibrationError(f"{path}: cannot decode image")
    return int(image.shape[1]), int(image.shape[0])


def find_image(folder: Path) -> Path | None:
    """The first image (by name) in `folder`, or None."""
    images = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return images[0] if images else None


# OpenCV's own file reading and writing (cv2.imread, cv2.imwrite) crash the process (SIGSEGV) on
# a path that is not UTF-8, as a Linux file name may be: Python reads and writes the bytes, and
# OpenCV only decodes and encodes them.


def decode_image_file(path: Path, flags: int = cv2.IMREAD_COLOR) -> npt.NDArray[np.uint8] | None:
    """The image file at `path` decoded by OpenCV (`flags` as cv2.imread's), or None where it
    cannot be read or decoded (as cv2.imread)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data:
        return None
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
    return None if image is None else np.asarray(image)


def encode_image(image: npt.NDArray[np.uint8], suffix: str = ".png") -> bytes | None:
    """`image` encoded as the file type of `suffix` (".png", ".jpg"), or None where OpenCV
    cannot encode it."""
    try:
        ok, data = cv2.imencode(suffix, image)
    except cv2.error:
        return None
    return data.tobytes() if ok else None
