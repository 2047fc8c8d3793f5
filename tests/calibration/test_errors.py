"""`read_text`: every package's user text files, a binary one named as such."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calibration import load_rig
from calibration.errors import (
    MAX_TEXT_BYTES,
    CalibrationError,
    load_yaml,
    not_a_file,
    open_regular_file,
    read_text,
)


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


def _alias_bomb(levels: int, indent: str = "") -> str:
    """A "billion laughs": each anchored list repeats the one before nine times, so the last
    holds 9^levels strings in a few hundred bytes."""
    lines = [f'{indent}l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    """It was a MemoryError ('a bug') from `config show` and a hang from `calib show`: the
    readers walked the billion values the aliases stand for."""
    rig = tmp_path / "rig.yaml"
    rig.write_text("anchors:\n" + _alias_bomb(9, "  ") + "frames: *l8\n")
    with pytest.raises(CalibrationError) as info:
        load_rig(rig)
    assert str(info.value) == (
        f"{rig}: not valid YAML (its aliases repeat more than 1,000,000 values: an alias bomb, "
        "or anchors used far more than a file of this kind needs)"
    )


def test_anchors_used_as_files_use_them_are_read() -> None:
    # Shared intrinsics, a recursive alias (the readers refuse it by depth), and aliases up
    # to the limit: a few levels of the bomb above hold 9^6 = 531,441 values.
    text = "k: &k {fx: 1.0}\na: *k\nb: [*k, *k]\nr: &r [*r]\n"
    doc = load_yaml(text, "f.yaml", "not valid YAML", _OtherError)
    assert doc["b"] == [{"fx": 1.0}, {"fx": 1.0}] and doc["r"][0] is doc["r"]
    assert len(load_yaml(_alias_bomb(6), "f.yaml", "not valid YAML", _OtherError)["l5"]) == 9
    with pytest.raises(_OtherError, match="its aliases repeat more than 1,000,000 values"):
        load_yaml(_alias_bomb(7), "f.yaml", "not valid YAML", _OtherError)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("inputs: {high_water_mark: 1}\ninputs: {high_water_mark: 2}\n", "inputs", 2),
        ("sync:\n  window_ms: 10\n  window_ms: 20\n", "window_ms", 3),
        ("a: {b: 1, b: 2}\n", "b", 1),
    ],
)
def test_a_key_given_twice_is_refused(text: str, key: str, line: int) -> None:
    """PyYAML keeps the last of two equal keys: a config section written twice lost the first
    without a word (`config show` printed the second, exit 0)."""
    with pytest.raises(_OtherError) as info:
        load_yaml(text, "f.yaml", "not valid YAML", _OtherError)
    message = str(info.value)
    assert message.startswith("f.yaml: not valid YAML (while constructing a mapping")
    assert f'found the key {key!r} twice in "<unicode string>", line {line},' in message
    assert "\n" not in message


def test_a_merge_key_may_still_be_overridden() -> None:
    text = "base: &base {fx: 1.0, fy: 2.0}\ncam:\n  <<: *base\n  fx: 3.0\n"
    doc = load_yaml(text, "f.yaml", "not valid YAML", _OtherError)
    assert doc["cam"] == {"fx": 3.0, "fy": 2.0}


def test_a_folder_is_refused_and_its_descriptor_closed(tmp_path: Path) -> None:
    """fdopen refuses a folder without closing the descriptor it was given: each refusal left
    one open."""
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(CalibrationError) as info:
            open_regular_file(tmp_path, "lidar scan")
        assert str(info.value) == f"{tmp_path}: cannot read lidar scan (Is a directory)"
    assert len(os.listdir("/proc/self/fd")) == before


def test_not_a_file_says_why_a_path_is_no_file_to_read(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    os.mkfifo(tmp_path / "pipe")
    assert not_a_file(tmp_path / "f") is None
    assert not_a_file(tmp_path) == "is a folder"
    assert not_a_file(tmp_path / "pipe") == "is not a regular file (a device, pipe or socket)"
    assert not_a_file(tmp_path / "none") == "does not exist"
