"""An indexed MCAP file's messages in log-time order, chunk by chunk, where a chunk that cannot be
read costs its own messages only.

The mcap library's `SeekingReader.iter_messages` stops at the first chunk it cannot read (a
decompression fault, a cut or overwritten record), so one damaged chunk of an hour's drive lost
every message after it. Here each chunk is read alone, from the bytes its index gives, with its
CRC checked where the writer stored one (a flipped bit that still decompresses would otherwise
be decoded as a plausible but wrong point or pixel), in the library's order: log time, a tie
broken by position in the file. A chunk that fails is handed to `on_damage` with the messages
its message indexes say it held, and passed over.

Also the pieces `replay.drive` reads a drive from start to end with (a cut file, or one whose
summary is damaged): a record's bytes parsed strictly (`parse_record`: a length field inside a
record cannot make the parse run past it, or read short and go on), and a chunk's records with
the same bounds and CRC check as here (`chunk_records`).
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, ChunkIndex, Footer, MessageIndex, Metadata
from mcap.records import Message as McapMessage
from mcap.stream_reader import breakup_chunk
from mcap.summary import Summary

__all__ = ["DamagedChunk", "chunk_records", "indexed_messages", "parse_record", "read_record"]

_PREFIX = 1 + 8  # every record: opcode, then its length (u64)
#: A chunk claiming to decompress to more is damaged: the decompressor would size its buffer by
#: the claim (the writer's chunks are about 1 MiB; one message may make one larger).
_MAX_UNCOMPRESSED_BYTES = 1 << 30


@dataclass(frozen=True)
class DamagedChunk:
    """A chunk that could not be read: where it lies (byte offset and length of its record),
    the log times its index gives (ns), how many messages it held per channel id (from its
    message indexes; None where those cannot be read either) and what failed."""

    offset: int
    length: int
    start_ns: int
    end_ns: int
    messages: dict[int, int] | None
    error: str


def indexed_messages(
    f: IO[bytes],
    summary: Summary,
    topics: Sequence[str] | None,
    start_ns: int | None,
    on_damage: Callable[[DamagedChunk], None],
) -> Iterator[tuple[Channel, McapMessage]]:
    """(channel, message) of every message of the chunks `summary` indexes, on `topics` (all
    when None) and logged at or after `start_ns` (all when None), in log-time order. A chunk
    that cannot be read is given to `on_damage` (which may raise to stop) and skipped."""
    wanted = None if topics is None else set(topics)
    # Keys as the library orders them: log time, then the chunk's position in the file, then
    # the message's within the chunk; a chunk is opened before any message of its start time.
    queue: list[tuple[int, int, int, Any]] = []
    for index in summary.chunk_indexes:
        if start_ns is not None and index.message_end_time < start_ns:
            continue
        if wanted is not None and not _may_hold(index, summary, wanted):
            continue
        queue.append((index.message_start_time, index.chunk_start_offset, -1, index))
    heapq.heapify(queue)
    while queue:
        _time, offset, position, item = heapq.heappop(queue)
        if position >= 0:
            yield item
            continue
        try:
            records = _chunk_records(f, item)
        except Exception as e:  # the libraries raise assorted errors on damaged bytes
            on_damage(
                DamagedChunk(
                    offset=item.chunk_start_offset,
                    length=item.chunk_length,
                    start_ns=item.message_start_time,
                    end_ns=item.message_end_time,
                    messages=_indexed_counts(f, item),
                    error=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
                )
            )
            continue
        for k, record in enumerate(records):
            if not isinstance(record, McapMessage):
                continue
            channel = summary.channels.get(record.channel_id)
            if channel is None or (wanted is not None and channel.topic not in wanted):
                continue
            if start_ns is not None and record.log_time < start_ns:
                continue
            heapq.heappush(queue, (record.log_time, offset, k, (channel, record)))


def _may_hold(index: ChunkIndex, summary: Summary, topics: set[str]) -> bool:
    """Whether a chunk may hold messages of `topics`: its message indexes name one of their
    channels, or it has none (then only reading it tells)."""
    channels = index.message_index_offsets
    return not channels or any(
        c in summary.channels and summary.channels[c].topic in topics for c in channels
    )


class _Body(io.BytesIO):
    """A record's bytes that a parse cannot read past: the mcap library's streams return short
    reads silently (a damaged string length gave a cut string, not an error), and a negative
    length (a damaged message record shorter than its fixed fields) read everything."""

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            raise ValueError(f"a field of {size} bytes")
        data = super().read(size)
        if len(data) != size:
            raise EOFError(f"a field of {size} bytes runs past the record's end")
        return data


def read_record(f: IO[bytes], offset: int, length: int, opcode: Opcode) -> bytes:
    """The body of the record of `length` bytes (prefix included) at `offset`, read whole and
    checked against its own prefix: a damaged length field cannot make the read run on."""
    f.seek(offset, io.SEEK_SET)
    data = f.read(length)
    if len(data) != length:
        raise EOFError(f"{length - len(data)} of its {length} bytes are missing")
    if data[0] != opcode or int.from_bytes(data[1:_PREFIX], "little") != length - _PREFIX:
        raise ValueError(f"no {opcode.name} record at byte {offset}")
    return data[_PREFIX:]


def parse_record(opcode: int, body: bytes) -> Any:
    """The record of `opcode` whose body is `body`, parsed strictly (see `_Body`); None for an
    opcode the library does not parse.

    Raises:
        Exception: the bytes are damaged (assorted types: the library's, struct's, Unicode).
    """
    stream = ReadDataStream(_Body(body))
    if opcode == Opcode.MESSAGE:
        return McapMessage.read(stream, len(body))
    parse = _PARSERS.get(opcode)
    return None if parse is None else parse(stream)


_PARSERS: dict[int, Callable[[ReadDataStream], Any]] = {
    Opcode.CHANNEL: Channel.read,
    Opcode.CHUNK: Chunk.read,
    Opcode.FOOTER: Footer.read,
    Opcode.MESSAGE_INDEX: MessageIndex.read,
    Opcode.METADATA: Metadata.read,
}


def chunk_records(chunk: Chunk) -> list[Any]:
    """The records of `chunk`, its CRC checked where the writer stored one.

    Raises:
        Exception: the chunk is damaged (assorted types: the decompressors', the library's).
    """
    if chunk.uncompressed_size > _MAX_UNCOMPRESSED_BYTES:
        raise ValueError(f"it claims {chunk.uncompressed_size} bytes uncompressed")
    # A CRC of 0 means the writer stored none (the MCAP specification); it is then not checked.
    return breakup_chunk(chunk, validate_crc=True)


def _chunk_records(f: IO[bytes], index: ChunkIndex) -> list[Any]:
    body = read_record(f, index.chunk_start_offset, index.chunk_length, Opcode.CHUNK)
    return chunk_records(Chunk.read(ReadDataStream(_Body(body))))


def _indexed_counts(f: IO[bytes], index: ChunkIndex) -> dict[int, int] | None:
    """Messages per channel id of a chunk, from its message index records (they follow the
    chunk, so a chunk overwritten in place usually leaves them readable); None where they are
    not."""
    offsets = sorted(index.message_index_offsets.items(), key=lambda item: item[1])
    # Each index record ends where the next begins; the last where the chunk's indexes end.
    ends = [offset for _channel, offset in offsets[1:]]
    ends.append(index.chunk_start_offset + index.chunk_length + index.message_index_length)
    counts: dict[int, int] = {}
    try:
        for (channel_id, offset), end in zip(offsets, ends, strict=True):
            body = read_record(f, offset, end - offset, Opcode.MESSAGE_INDEX)
            record = MessageIndex.read(ReadDataStream(_Body(body)))
            if record.channel_id != channel_id:
                return None
            counts[channel_id] = len(record.records)
    except Exception:  # the indexes are damaged too: the count is unknown
        return None
    return counts
