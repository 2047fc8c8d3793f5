"""`read_text`: every package's user text files, a binary one named as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibration.errors import CalibrationError, read_text


class _OtherError(Exception):
    pass


def test_read_text_returns_the_text(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("P2: 1 2 3\nname: Zürich\n".encode())
    assert read_text(path, "calibration file") == "P2: 1 2 3\nname: Zürich\n"


def test_binary_file_is_named_with_the_byte_and_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"P2:\xff\xfe\x00garbage\n")
    with pytest.raises(CalibrationError) as info:
        read_text(path, "calibration file")
    assert str(info.value) == f"{path}: not UTF-8 text (byte 0xff at offset 3)"


def test_error_type_is_the_callers(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xff")
    with pytest.raises(_OtherError, match=r"a\.txt: not UTF-8 text \(byte 0xff at offset 0\)$"):
        read_text(path, "config", _OtherError)
    with pytest.raises(_OtherError, match=r"none\.txt: cannot read config \(No such file"):
        read_text(tmp_path / "none.txt", "config", _OtherError)
