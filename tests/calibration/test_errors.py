"""`read_text`: every package's user text files, a binary one named as such."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calibration import load_rig
from calibration.errors import MAX_TEXT_BYTES, CalibrationError, load_yaml, read_text


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


def test_a_device_or_a_pipe_is_refused_without_reading_or_blocking(tmp_path: Path) -> None:
    """/dev/zero never ends and a FIFO without a writer would block the open forever."""
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo):
        with pytest.raises(CalibrationError) as info:
            read_text(path, "config")
        assert str(info.value) == f"{path}: config is not a regular file (a device, pipe or socket)"
    with pytest.raises(CalibrationError, match="not a regular file"):
        load_rig(fifo)


def test_a_text_file_larger_than_any_of_its_kind_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "calib.txt"
    with big.open("wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)
    with pytest.raises(CalibrationError) as info:
        read_text(big, "calibration file")
    assert str(info.value) == (
        f"{big}: calibration file is {MAX_TEXT_BYTES + 1} bytes, larger than the 64 MiB a text "
        "file of this kind may be"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a: [1\n", "not valid YAML (while parsing a flow sequence"),
        ("a: " + "[" * 10_000 + "\n", "not valid YAML (nests too deep)"),
        ("a: 2001-02-30\n", "not valid YAML value (day is out of range for month)"),
    ],
)
def test_yaml_the_parser_cannot_take_is_one_line_of_the_callers_kind(text: str, why: str) -> None:
    with pytest.raises(_OtherError) as info:
        load_yaml(text, "f.yaml", "not valid YAML", _OtherError)
    assert str(info.value).startswith(f"f.yaml: {why}")
    assert "\n" not in str(info.value)


def test_a_rig_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    """It was a RecursionError, 'a bug' to the CLI (calib show, a config's rig, --topics)."""
    deep = tmp_path / "rig.yaml"
    deep.write_text("frames: " + "[" * 10_000 + "\n")
    with pytest.raises(CalibrationError) as info:
        load_rig(deep)
    assert str(info.value) == f"{deep}: not valid YAML (nests too deep)"
