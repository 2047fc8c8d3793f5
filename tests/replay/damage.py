"""Drives damaged on disk, for the tests of reading past damage: the KITTI frames as a drive,
a chunk overwritten in place (its index left intact), and the top-level records of a file."""

from __future__ import annotations

import struct
from pathlib import Path

from mcap.reader import SeekingReader
from mcap.summary import Summary

from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveWriter


def kitti_drive(kitti_dir: Path, path: Path) -> Path:
    """The KITTI object frames as a drive, each message logged at its stamp (a scan fills most
    of a chunk: chunk k holds frame k-1's sweep and frame k's rig and image)."""
    with DriveWriter(path) as w:
        for msg in KittiObjectFolder(kitti_dir).messages():
            w.write(msg, msg.header.stamp_ns)
    return path


def summary_of(drive: Path) -> Summary:
    with drive.open("rb") as f:
        summary = SeekingReader(f).get_summary()
    assert summary is not None
    return summary


def damage_chunk(drive: Path, k: int, out: Path | None = None) -> set[str]:
    """Overwrites 64 bytes in the middle of the drive's chunk `k` (written to `out`, default in
    place), so it no longer decompresses; the topics it held."""
    summary = summary_of(drive)
    index = summary.chunk_indexes[k]
    data = bytearray(drive.read_bytes())
    at = index.chunk_start_offset + index.chunk_length // 2
    data[at : at + 64] = bytes(64)
    (out or drive).write_bytes(bytes(data))
    return {summary.channels[i].topic for i in index.message_index_offsets}


def record_ends(data: bytes) -> list[tuple[int, int, int]]:
    """(opcode, start, end) of each top-level record of an MCAP file's bytes."""
    pos, out = 8, []
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        out.append((opcode, pos, pos + 9 + length))
        pos += 9 + length
    return out
