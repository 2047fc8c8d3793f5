"""Drives with damaged chunks, read chunk by chunk (replay.mcap_chunks through DriveReader): a
damaged chunk costs its own messages, named and counted, and the rest of the drive is read in
the order an intact drive is. Real files, damaged on disk."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from perception.msgs.types import GnssFix, Header
from replay.drive import DriveReader, DriveWriter
from replay.errors import DamagedDriveError, ReplayError, messages_lost
from tests.replay.damage import record_ends

CHUNK = 0x06
MESSAGE_INDEX = 0x07


def _fix(topic: str, seq: int) -> GnssFix:
    return GnssFix(Header(topic, seq, 1_000 + seq, "gnss"), 49.0 + seq * 1e-5, 8.4, 100.0)


def _chunk_data_start(data: bytes, start: int) -> int:
    """Where a chunk record's compressed records begin (after its fixed fields)."""
    compression_length = struct.unpack_from("<I", data, start + 9 + 28)[0]
    return start + 9 + 32 + compression_length + 8


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    """120 fixes on two topics, in chunks of about 2 KiB (zstd, as the recorder writes)."""
    path = tmp_path / "drive.mcap"
    with DriveWriter(path, chunk_size=2048) as w:
        for seq in range(60):
            w.write(_fix("gnss", seq), 10_000 + 2 * seq)
            w.write(_fix("gnss/rear", seq), 10_001 + 2 * seq)
    return path


def _read(path: Path) -> tuple[list[tuple[str, int]], list[ReplayError]]:
    errors: list[ReplayError] = []
    got = [
        (r.topic, r.message.header.seq) for r in DriveReader(path).messages(on_error=errors.append)
    ]
    return got, errors


def test_a_damaged_chunk_costs_its_own_messages_named_and_counted(drive: Path) -> None:
    intact, none = _read(drive)
    assert len(intact) == 120 and none == []
    data = bytearray(drive.read_bytes())
    chunks = [(s, e) for op, s, e in record_ends(bytes(data)) if op == CHUNK]
    assert len(chunks) >= 4
    start, end = chunks[1]
    at = _chunk_data_start(bytes(data), start) + 20
    data[at : at + 64] = bytes(64)  # no longer decompresses; the index is intact
    damaged = drive.with_name("damaged.mcap")
    damaged.write_bytes(bytes(data))

    got, errors = _read(damaged)
    assert len(errors) == 1 and isinstance(errors[0], DamagedDriveError)
    lost = [m for m in intact if m not in got]
    # The rest of the drive, in the order of the intact drive.
    assert got == [m for m in intact if m in got] and len(lost) > 0
    assert messages_lost(errors[0]) == len(lost)
    per_topic = {t: sum(1 for topic, _ in lost if topic == t) for t in ("gnss", "gnss/rear")}
    text = str(errors[0])
    assert text.startswith(f"{damaged}: a damaged chunk (bytes {start} to {end}, ")
    assert f"{len(lost)} message(s) lost (gnss {per_topic['gnss']}, " in text
    assert f"gnss/rear {per_topic['gnss/rear']})" in text

    # Without on_error the damage is raised, naming the drive.
    with pytest.raises(DamagedDriveError, match="a damaged chunk"):
        list(DriveReader(damaged).messages())
    # A reader of the other chunks only never meets it.
    last_lost_ns = max(10_000 + 2 * seq + (topic == "gnss/rear") for topic, seq in lost)
    later = DriveReader(damaged).messages(start_ns=last_lost_ns + 1)
    after = intact[intact.index(lost[-1]) + 1 :]
    assert [(r.topic, r.message.header.seq) for r in later] == after


def test_a_flipped_bit_that_still_reads_is_caught_by_the_chunk_crc(tmp_path: Path) -> None:
    """Uncompressed, a flipped bit in a latitude decodes to a plausible wrong fix: the chunk's
    CRC refuses it."""
    path = tmp_path / "plain.mcap"
    with DriveWriter(path, compression=None, chunk_size=2048) as w:
        for seq in range(40):
            w.write(_fix("gnss", seq), 10_000 + seq)
    data = bytearray(path.read_bytes())
    start, end = next((s, e) for op, s, e in record_ends(bytes(data)) if op == CHUNK)
    latitude = struct.pack("<d", 49.0)
    at = data.index(latitude, start, end)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    errors: list[ReplayError] = []
    fixes = [
        r.message
        for r in DriveReader(path).messages(on_error=errors.append)
        if isinstance(r.message, GnssFix)
    ]
    assert len(errors) == 1 and "CRC" in str(errors[0]).upper()
    assert len(fixes) == 40 - messages_lost(errors[0]) > 0
    # Every fix read is as written, to the bit: the damaged one is not among them.
    assert [f.latitude_deg for f in fixes] == [
        _fix("gnss", f.header.seq).latitude_deg for f in fixes
    ]


def test_a_chunk_whose_index_is_damaged_too_is_lost_uncounted(drive: Path) -> None:
    data = bytearray(drive.read_bytes())
    records = record_ends(bytes(data))
    k = next(i for i, (op, _s, _e) in enumerate(records) if op == CHUNK)
    start, _end = records[k][1], records[k][2]
    at = _chunk_data_start(bytes(data), start) + 20
    data[at : at + 64] = bytes(64)
    index_start = records[k + 1][1]
    assert records[k + 1][0] == MESSAGE_INDEX
    data[index_start] = 0xFF  # no longer a message index record
    drive.write_bytes(bytes(data))
    _got, errors = _read(drive)
    assert len(errors) == 1 and messages_lost(errors[0]) == 1
    assert "how many is unknown" in str(errors[0])


def test_a_chunk_claiming_a_huge_size_is_damaged_not_a_huge_allocation(drive: Path) -> None:
    data = bytearray(drive.read_bytes())
    start = next(s for op, s, _e in record_ends(bytes(data)) if op == CHUNK)
    struct.pack_into("<Q", data, start + 9 + 16, 1 << 50)  # its uncompressed size
    drive.write_bytes(bytes(data))
    _got, errors = _read(drive)
    assert len(errors) == 1 and "claims 1125899906842624 bytes uncompressed" in str(errors[0])
