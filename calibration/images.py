"""Image sizes for the loaders, read without decoding the whole image where possible."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2

from calibration.errors import CalibrationError

__all__ = ["IMAGE_SUFFIXES", "find_image", "image_size_of"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of an image file. Raises CalibrationError if unreadable."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(24)
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read image ({e.strerror})") from e
    if head[:8] == _PNG_MAGIC and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CalibrationError(f"{path}: cannot decode image")
    return int(image.shape[1]), int(image.shape[0])


def find_image(folder: Path) -> Path | None:
    """The first image (by name) in `folder`, or None."""
    images = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return images[0] if images else None
