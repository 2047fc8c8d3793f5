"""Drives damaged on disk, read past: a damaged rig metadata record, damaged records of a drive
read from start to end (a cut file), a damaged summary section, and a complete file written
without one. Each drive is small and written here, one chunk per message."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest

from perception.msgs.types import GnssFix, Header
from replay.drive import RIG_METADATA, DriveReader, DriveWriter
from replay.errors import DamagedDriveError, ReplayError
from replay.mcap_player import check_sensor_drive
from replay.synth.world import synth_rig
from tests.replay.damage import record_ends

N = 6  # GNSS fixes in a drive


def _fix(i: int) -> GnssFix:
    return GnssFix(Header("gnss", i, 1_000 + i, "gnss"), 49.0 + i / 1000, 8.4, 100.0)


def small_drive(path: Path, *, compression: str | None = "zstd", rig_messages: bool = True) -> Path:
    """A drive of `N` GNSS fixes after a rig (its metadata record first in the file, and with
    `rig_messages` a RigMessage), each message its own chunk."""
    with DriveWriter(path, compression=compression, chunk_size=1) as w:
        if rig_messages:
            w.write_rig(synth_rig(), 0)
        else:
            w.write_metadata(RIG_METADATA, {"rig": _rig_json(), "stamp_ns": "0"})
        for i in range(N):
            w.write(_fix(i), 1_000 + i)
    return path


def _rig_json() -> str:
    return json.dumps(synth_rig().to_dict())


def _records(data: bytes, opcode: int) -> list[tuple[int, int]]:
    return [(start, end) for op, start, end in record_ends(data) if op == opcode]


def _data_end(data: bytes) -> int:
    """Where the data section ends (after its data end record): a recorder killed after its
    last chunk leaves this much."""
    ((_start, end),) = _records(data, 0x0F)
    return end


def _damage_rig_metadata(data: bytes) -> bytes:
    """The bytes with one byte of the rig JSON in the metadata record made invalid UTF-8."""
    ((start, end),) = _records(data, 0x0C)
    at = data.index(b'"version"', start, end)
    return data[:at] + b"\x91" + data[at + 1 :]


def _gnss(reader: DriveReader) -> tuple[list[float], list[ReplayError]]:
    errors: list[ReplayError] = []
    lats = [
        r.message.latitude_deg
        for r in reader.messages(on_error=errors.append)
        if isinstance(r.message, GnssFix)
    ]
    return lats, errors


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


ALL = [_fix(i).latitude_deg for i in range(N)]


@pytest.mark.parametrize("cut", [False, True])
def test_a_damaged_rig_metadata_record_gives_way_to_the_rig_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: bool
) -> None:
    """A flipped byte in the rig's metadata record was an "unexpected UnicodeDecodeError" to
    replay, calib check, eval, show and bench (and in a cut drive cost every message after it).
    The rig also travels as a RigMessage: it is taken from there, with one warning."""
    data = small_drive(tmp_path / "full.mcap").read_bytes()
    damaged = _damage_rig_metadata(data)
    path = tmp_path / "drive.mcap"
    path.write_bytes(damaged[: _data_end(damaged)] if cut else damaged)
    with caplog.at_level(logging.WARNING, logger="replay.drive"):
        reader = DriveReader(path)
        rig = reader.rig
        assert rig is not None and rig.to_dict() == synth_rig().to_dict()
        assert DriveReader(path).rig is not None
        assert _gnss(reader) == (ALL, [])
    assert reader.truncated is cut
    about_rig = [w for w in _warnings(caplog) if RIG_METADATA in w]
    assert about_rig == [
        f"{path}: the drive's perception.rig metadata cannot be read: its record (bytes 40 to "
        f"{_records(data, 0x0C)[0][1]}) is damaged (UnicodeDecodeError: 'utf-8' codec can't "
        f"decode byte 0x91 in position 1: invalid start byte); the rig is taken from its first "
        "RigMessage (topic rig)"
    ]
    with pytest.raises(ReplayError, match=rf"^{path}: the drive's perception.rig metadata cannot"):
        reader.metadata(RIG_METADATA)


def test_a_damaged_rig_metadata_record_without_rig_messages_is_refused(tmp_path: Path) -> None:
    data = small_drive(tmp_path / "full.mcap", rig_messages=False).read_bytes()
    path = tmp_path / "drive.mcap"
    path.write_bytes(_damage_rig_metadata(data))
    with pytest.raises(ReplayError) as info:
        _ = DriveReader(path).rig
    text = str(info.value)
    assert text.startswith(f"{path}: the drive's perception.rig metadata cannot be read: its ")
    assert text.endswith(", and the drive holds no RigMessage to take it from")
    assert "\n" not in text
    # The messages are intact.
    assert _gnss(DriveReader(path)) == (ALL, [])


def test_a_cut_drive_checks_the_crc_of_each_chunk(tmp_path: Path) -> None:
    """A drive read from start to end took a flipped byte in a chunk for good data: a wrong
    latitude, silently."""
    data = bytearray(small_drive(tmp_path / "full.mcap", compression=None).read_bytes())
    at = data.index(b"49.003,")  # the companion document of fix 3 (no compression)
    data[at + 5] ^= 0x01  # "49.002": plausible, and wrong
    path = tmp_path / "cut.mcap"
    path.write_bytes(bytes(data[: _data_end(bytes(data))]))
    lats, errors = _gnss(DriveReader(path))
    assert lats == ALL[:3] + ALL[4:]
    (error,) = errors
    assert isinstance(error, DamagedDriveError) and error.messages_lost == 1
    assert str(error).startswith(f"{path}: a damaged chunk record (bytes ")
    assert "CRCValidationError" in str(error) and str(error).endswith("1 message(s) lost (gnss 1)")


def test_a_damaged_chunk_in_a_cut_drive_costs_its_own_messages(tmp_path: Path) -> None:
    """Any fault decoding a record ended a drive read from start to end: every intact message
    after it was lost ("the drive holds no messages")."""
    data = bytearray(small_drive(tmp_path / "full.mcap").read_bytes())
    chunks = _records(bytes(data), 0x06)
    start, end = chunks[2]  # fix 1 (chunk 0 holds the rig)
    data[(start + end) // 2 : (start + end) // 2 + 16] = bytes(16)
    path = tmp_path / "cut.mcap"
    path.write_bytes(bytes(data[: _data_end(bytes(data))]))
    reader = DriveReader(path)
    lats, errors = _gnss(reader)
    assert lats == [ALL[0], *ALL[2:]]
    assert len(errors) == 1 and str(errors[0]).startswith(
        f"{path}: a damaged chunk record (bytes {start} to {end}) could not be read ("
    )
    assert str(errors[0]).endswith(": 1 message(s) lost (gnss 1)")
    assert reader.topics() == {"rig": 1, "gnss": N - 1}
    # A read of other topics loses nothing to it (the chunk's message indexes say what it held).
    assert [r.topic for r in reader.messages(topics=["rig"])] == ["rig"]
    assert reader.ground_truth() == []
    # Without on_error it is raised, as for a drive read through its index.
    with pytest.raises(DamagedDriveError):
        list(DriveReader(path).messages())


def test_a_length_past_the_end_is_read_past_to_the_next_chunk_without_allocating_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged length field running past the end of a cut drive ended the read there, with
    no error and a warning that the data "ends in an incomplete record": every intact chunk
    after it was lost, uncounted (a killed recording of an hour lost all but its first minutes
    to one damaged length). The read goes on at the next chunk, and the damage is reported."""
    data = bytearray(small_drive(tmp_path / "full.mcap").read_bytes())
    data_end = _data_end(bytes(data))
    start, _end = _records(bytes(data), 0x06)[3]  # fix 2
    next_chunk = _records(bytes(data), 0x06)[4][0]
    data[start + 1 : start + 9] = struct.pack("<Q", 1 << 62)
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(bytes(data[:data_end]))
    with caplog.at_level(logging.WARNING, logger="replay.drive"):
        reader = DriveReader(cut)
        lats, errors = _gnss(reader)
    assert reader.truncated
    assert lats == ALL[:2] + ALL[3:]
    (error,) = errors
    assert isinstance(error, DamagedDriveError) and error.messages_lost == 1
    assert str(error) == (
        f"{cut}: a damaged record length (the chunk record at byte {start} claims {1 << 62} "
        f"bytes, {data_end - start - 9} remain): the {next_chunk - start} bytes up to the next "
        f"chunk (at byte {next_chunk}) cannot be read; how many messages they held is unknown"
    )
    assert "ends in an incomplete record" not in caplog.text
    # A complete file: its index says where each chunk lies, so the damage costs one chunk.
    complete = tmp_path / "complete.mcap"
    complete.write_bytes(bytes(data))
    lats, errors = _gnss(DriveReader(complete))
    assert lats == ALL[:2] + ALL[3:]
    assert len(errors) == 1 and isinstance(errors[0], DamagedDriveError)
    # A complete file without an index: the same read past the damaged length.
    unindexed = tmp_path / "unindexed.mcap"
    unindexed.write_bytes(_without_summary(bytes(data), data_end))
    lats, errors = _gnss(DriveReader(unindexed))
    assert lats == ALL[:2] + ALL[3:]
    (error,) = errors
    assert str(error).startswith(
        f"{unindexed}: a damaged record length (the chunk record at byte {start} claims "
        f"{1 << 62} bytes, "
    )
    # The last chunk's length damaged: nothing follows it, so that is where the read ends.
    data = bytearray(small_drive(tmp_path / "full.mcap").read_bytes())
    last, _end = _records(bytes(data), 0x06)[-1]
    data[last + 1 : last + 9] = struct.pack("<Q", 1 << 62)
    cut.write_bytes(bytes(data[:data_end]))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="replay.drive"):
        assert _gnss(DriveReader(cut)) == (ALL[:-1], [])
    # One line: that the drive is truncated, and where its data ends.
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        f"{cut}: the drive is truncated (no footer: the recorder did not finish it); read up to "
        f"its last complete record: its data ends in an incomplete record (the chunk record at "
        f"byte {last} "
    ), line


def _without_summary(data: bytes, data_end: int | None = None) -> bytes:
    """The drive as a writer that leaves the summary out writes it: the data section (up to
    `data_end`, default where it ends), then a footer whose summary start is 0."""
    footer = struct.pack("<BQQQI", 0x02, 20, 0, 0, 0)
    return data[: _data_end(data) if data_end is None else data_end] + footer + data[:8]


def _damage_chunk_index(data: bytes, *, keep_crc: bool) -> bytes:
    """The bytes with the chunk length in the summary's first chunk index made huge (and
    with `keep_crc` False the footer's summary CRC set to 0: none stored)."""
    out = bytearray(data)
    index, _end = _records(data, 0x08)[0]
    # prefix 9, message start and end time 8 + 8, chunk start offset 8, then the chunk length
    out[index + 9 + 24 + 7] = 0xFF
    if not keep_crc:
        out[-8 - 4 : -8] = bytes(4)
    return bytes(out)


@pytest.mark.parametrize("keep_crc", [True, False])
def test_a_damaged_summary_falls_back_to_reading_from_start_to_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, keep_crc: bool
) -> None:
    """A damaged chunk index cost an intact chunk ("a damaged chunk (bytes 84247178 to
    18374686479755904173 ...) could not be read (OverflowError ...)")."""
    data = small_drive(tmp_path / "full.mcap").read_bytes()
    path = tmp_path / "drive.mcap"
    path.write_bytes(_damage_chunk_index(data, keep_crc=keep_crc))
    with caplog.at_level(logging.WARNING, logger="replay.drive"):
        reader = DriveReader(path)
        assert _gnss(reader) == (ALL, [])
        assert reader.topics() == {"rig": 1, "gnss": N}
        assert reader.rig is not None
    assert not reader.truncated and not reader.indexed
    why = "its CRC" if keep_crc else "a chunk index points outside the data"
    (warning,) = _warnings(caplog)
    assert warning.startswith(f"{path}: the drive's summary section (its index) is damaged (")
    assert why in warning and warning.endswith("); reading the drive from start to end")


def test_a_complete_drive_without_a_summary_is_not_called_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Some MCAP writers leave the summary out (footer summary start 0): it was warned about
    as "truncated (no footer: the recorder did not finish it)"."""
    data = small_drive(tmp_path / "full.mcap").read_bytes()
    path = tmp_path / "drive.mcap"
    path.write_bytes(_without_summary(data))
    with caplog.at_level(logging.INFO, logger="replay.drive"):
        reader = DriveReader(path)
        assert _gnss(reader) == (ALL, [])
        assert reader.rig is not None
    assert not reader.truncated and not reader.indexed
    assert _warnings(caplog) == []
    assert "truncated" not in caplog.text
    assert f"{path}: the drive has no summary section (no index); reading it from start to end" in (
        caplog.text
    )


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("between two chunks", "cut between two records"),
        ("inside a chunk", "its data ends in an incomplete record (the chunk record at byte "),
        ("after the data section", "its summary is cut"),
    ],
)
def test_a_truncated_drive_is_said_once_with_where_its_data_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str, said: str
) -> None:
    """A cut drive gave two warnings (that it is truncated, as it was opened; then, at the cut,
    that its data ends in an incomplete record). Now one, naming where the data ends."""
    data = small_drive(tmp_path / "full.mcap").read_bytes()
    chunks = _records(data, 0x06)
    index = 3
    keep = {
        "between two chunks": chunks[index][1],
        "inside a chunk": chunks[index][1] - 5,
        "after the data section": _data_end(data) + 20,
    }[where]
    path = tmp_path / "cut.mcap"
    path.write_bytes(data[:keep])
    with caplog.at_level(logging.WARNING, logger="replay.drive"):
        reader = DriveReader(path)
        lats, errors = _gnss(reader)
        _gnss(reader)  # a second pass says nothing more
    assert reader.truncated and errors == []
    # Chunk 0 holds the rig, then each fix is a chunk of its own: chunk 3 holds fix 2.
    assert (
        lats
        == {
            "between two chunks": ALL[:3],
            "inside a chunk": ALL[:2],
            "after the data section": ALL,
        }[where]
    )
    (line,) = _warnings(caplog)
    assert line.startswith(
        f"{path}: the drive is truncated (no footer: the recorder did not finish it); read up to "
        f"its last complete record: {said}"
    ), line


def test_a_drive_cut_before_its_first_chunk_says_so(tmp_path: Path) -> None:
    """Cut inside its first chunk, a drive read as "the drive holds no messages", as if empty."""
    data = small_drive(tmp_path / "full.mcap").read_bytes()
    path = tmp_path / "cut.mcap"
    path.write_bytes(data[: _records(data, 0x06)[0][1] - 5])
    with pytest.raises(ReplayError) as info:
        check_sensor_drive(DriveReader(path), command="play")
    assert str(info.value) == (
        f"{path}: the drive is truncated before its first complete chunk (the recorder did not "
        "finish it): it holds no messages to play"
    )
