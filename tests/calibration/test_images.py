"""Image sizes from the file's header (calibration.images): what a PNG or JPEG decodes to is
judged before it is decoded, so a small file that decodes to gigabytes is refused."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import CalibrationError
from calibration.images import check_image_pixels, encoded_image_size, image_size_of


def png_header(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR chunk (what a decompression bomb shows before its data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


@pytest.mark.parametrize("ext", [".png", ".jpg"])
@pytest.mark.parametrize("progressive", [False, True])
def test_the_size_of_real_encodings_is_read_from_their_header(ext: str, progressive: bool) -> None:
    image = np.random.default_rng(0).integers(0, 255, (375, 1242, 3), np.uint8)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)] if ext == ".jpg" else []
    ok, data = cv2.imencode(ext, image, params)
    assert ok
    assert encoded_image_size(data.tobytes()) == (1242, 375)


def test_a_header_giving_no_size_is_none() -> None:
    for data in (b"", b"not an image", b"\xff\xd8\xff\xe0\x00", b"\xff\xd8" + b"\xff\x01" * 2000):
        assert encoded_image_size(data) is None


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(30_000, 30_000))
    assert image_size_of(bomb) == (30_000, 30_000)
    with pytest.raises(CalibrationError) as info:
        check_image_pixels(bomb, 10_000_000)
    assert str(info.value) == (
        f"{bomb}: image of 30000 x 30000 = 900000000 pixels, above the limit of 10000000"
    )
    check_image_pixels(bomb, 10**9)  # within a limit: left to the decoder


def test_a_jpeg_whose_metadata_come_first_is_read_on_to_its_frame_header(tmp_path: Path) -> None:
    """An EXIF block (a thumbnail) may put the frame header past the first read."""
    image = np.zeros((20, 30, 3), np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    jpeg = data.tobytes()
    # APP1 segments of 60,000 bytes each, after the start-of-image marker.
    app1 = b"\xff\xe1" + (60_002).to_bytes(2, "big") + b"\0" * 60_000
    padded = tmp_path / "exif.jpg"
    padded.write_bytes(jpeg[:2] + app1 * 3 + jpeg[2:])
    assert image_size_of(padded) == (30, 20)
    # No decoding to fall back on here: the size must come from the header.
    with pytest.raises(CalibrationError, match="image of 30 x 20 = 600 pixels"):
        check_image_pixels(padded, 599)


def test_an_image_file_whose_name_is_not_utf8_is_read_and_written(tmp_path: Path) -> None:
    """cv2.imread and cv2.imwrite crashed the process (SIGSEGV) on such a path, which a Linux
    file name may be: a KITTI frame named so ended `replay` and `show` with exit 139. In a child
    process, so that a crash fails the test instead of ending pytest."""
    script = f"""
import os, sys
import numpy as np
from pathlib import Path
from calibration.images import decode_image_file, encode_image, image_size_of
folder = os.fsdecode({os.fsencode(tmp_path)!r})
path = Path(folder) / os.fsdecode(b"frame\\xff.png")
image = np.zeros((6, 8, 3), np.uint8)
image[2, 3] = (1, 2, 3)
path.write_bytes(encode_image(image))
back = decode_image_file(path)
assert back is not None and np.array_equal(back, image)
assert image_size_of(path) == (8, 6)
from replay.datasets.kitti_object import read_image  # a KITTI frame's image, as replay reads it
assert np.array_equal(read_image(path), image)
assert decode_image_file(Path(folder) / "missing.png") is None
(Path(folder) / "empty.png").write_bytes(b"")
assert decode_image_file(Path(folder) / "empty.png") is None
(Path(folder) / "text.png").write_bytes(b"not an image")
assert decode_image_file(Path(folder) / "text.png") is None
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
