"""Shared memory for large payloads between processes of one host; ZeroMQ carries a descriptor.

A `Publisher` on an `ipc://` endpoint (perception.io.transport) copies every buffer frame of at
least `ShmConfig.threshold_bytes` of a message into a slot of a ring of POSIX shared-memory
segments, one ring per topic, and sends in their place a small descriptor frame::

    [topic, descriptor, header document, inline buffers...]

The descriptor (`pack_descriptors`) starts with `MAGIC`, whose first byte (0x00) no header
document (a msgpack map) can start with, so a receiver tells the two kinds of message apart
without any other marking; it lists, per moved frame, its position in the original message,
the segment's name, the slot's generation, the offset and the length. The receiver
(`ShmReader`, inside `Subscriber.recv`) maps the segment read-only (the mapping is cached),
checks the generation, and hands the frame on as a `ShmFrame` viewing the mapping: no copy.
`wire.decode` then makes its arrays from those views as it does from ZeroMQ frames.

Slots and generations. Each segment is one slot: a 64-byte header (`MAGIC`, the generation as
a uint64, the payload capacity) and the payload area. A writer makes the generation odd before
it writes a slot and even (a new value) once written; the descriptor names the even value.
A reader checks the generation before it makes a frame usable and again after (seqlock): in
`ShmReader.resolve` around the views, and `payload_intact` after `wire.decode` has validated
the arrays (the node checks it there). A slot the writer recycled meanwhile is detected,
counted (`StalePayloadError`, `Subscriber.stale_payloads`, the node's `stale_payloads`) and the
message dropped; a recycled slot is never read as if it were the message.

The contract (zero copy, so a reader's arrays are the writer's memory): a slot is written
again at the earliest by the `ShmConfig.slots`-th (8th) message of its topic after it, and not
before it has been published for `ShmConfig.hold_ns` (500 ms). Until then the arrays a reader
got are stable; after that they may change under it, which `payload_intact` detects but
cannot undo. A ring whose oldest slot is too young grows, up to `max_slots`; when that is
reached the message goes inline (counted: `Publisher.shm_fallbacks`), so a fast topic costs
memory, never safety.
A holder that keeps messages longer than that (a recorder queueing them for the disk) asks for
copies (`Subscriber(shm_copy=True)`: copied out, then the generation checked again).
Copying out instead by default was measured: a cold copy of a 6 MB camera frame alone takes
~0.6 ms on the development machine (2 MB: ~0.17 ms), twice the 0.3 ms target for the whole
hand-over, so the zero-copy view with its checked lifetime is the default.

Loans. The same cold copy into a slot costs the writer as much; `ShmWriter.loan`
(`Publisher.loan`) hands the producer a writable array inside the next slot instead (a camera
driver decodes into it), and a message whose arrays are loaned ones is published without any
copy. Loans of a topic end
with the next send on that topic: used ones are published, unused ones go back to the ring, and
all of them become read-only (a write after the send would change a published message).

Memory order. The generation is an aligned 8-byte store, single-copy atomic on x86-64 and
AArch64. x86-64 keeps stores in order, so a reader that sees the data of a new message also
sees the odd generation; AArch64 does not promise that for plain stores, and Python has no
fence, so on a Jetson the after-check is best effort for a reader that races the writer within
microseconds. The hold time above is what makes such a race impossible in operation: a slot
is not written while a reader that keeps up can still be using it.

Cleanup. Segments live in `SHM_DIR` (/dev/shm, Linux), named
`pn.<uid>.<pid>.<start>.<token>.<n>`: the writer's user, process id and start time (clock
ticks after boot, /proc/<pid>/stat, so a recycled pid is not mistaken for the writer), a random
token per writer and a counter. A writer unlinks its segments when it is closed (and at
interpreter exit if it was not). After a kill -9 they stay until the next sweep
(`sweep_dead_segments`): every new Publisher and Subscriber sweeps at start and close, and a
connecting Subscriber sweeps whenever a publisher's connection drops (a killed writer's
connection drops at once), unlinking the segments of every writer of this user that is no
longer alive. A reader never creates a segment (it maps them read-only and cannot write them),
so a killed reader leaves nothing behind; the pages of an unlinked segment are freed once the
last mapping of it is gone. Segments are reserved when they are made (posix_fallocate), so a
full /dev/shm is an error at creation (the message goes inline, counted) rather than a SIGBUS
while writing.

Hostile descriptors (only a process of this user can reach an ipc endpoint in the runtime
folder, but a bug is as bad): a malformed descriptor, a name that is not a segment name of
this user, a segment that does not exist or is not this user's, an offset or length outside
the segment, more frames or bytes than `WireLimits` allows, a generation that is not the
slot's: each raises `WireError` naming the topic and the problem, which the Subscriber counts
and reports (`on_refused`), and the message is dropped. A segment is only ever mapped
read-only with its size checked first, and the writer never shrinks one, so a reader's access
stays inside the file (no SIGBUS). A segment cut short afterwards by another process of this
user (reading past its end would be a SIGBUS) is caught by its size, checked again on the
mapping's own descriptor for every message, and refused likewise; only a cut made while a
message it holds is being worked on is not (a process of this user can stop the node anyway).

Performance (benchmarks/test_transport_bench.py, `test_shm_targets`: publish -> a usable array,
paced at 10 Hz, medians on the 2-core shared development machine): 2 MB scan 0.9 ms loaned,
1.2 ms copied, 1.8 ms inline; 6 MB frame 0.7-0.85 ms loaned, 1.4 ms copied, 3.2-3.5 ms inline.
A small inline message through the same sockets at that pace takes 0.54 ms there: ZeroMQ's
hand-over of the descriptor (three thread wake-ups) is the floor, and the issue's 0.2 / 0.3 ms
targets lie below it on that machine; the scan adds the encoder's validation (its 0.5 M floats
checked finite, 0.15-0.45 ms).
"""

from __future__ import annotations

import collections
import contextlib
import math
import mmap
import os
import re
import secrets
import stat
import struct
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from perception.errors import StalePayloadError, TransportError, WireError
from perception.msgs.schema import WireLimits

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "SHM_DIR",
    "Descriptor",
    "ShmConfig",
    "ShmFrame",
    "ShmReader",
    "ShmWriter",
    "is_descriptor",
    "owned_segments",
    "pack_descriptors",
    "payload_intact",
    "shm_available",
    "sweep_dead_segments",
    "unpack_descriptors",
]

#: Where POSIX shared-memory segments live (Linux: shm_open(name) is this folder's file).
SHM_DIR = Path("/dev/shm")
#: The first bytes of a descriptor frame and of every segment (0x00: not a msgpack map).
MAGIC = b"\x00PNSHM1\x00"
#: The slot header before the payload: MAGIC, generation (uint64), capacity (uint64), spare.
HEADER_BYTES = 64
_GENERATION = 1  # the header's uint64 words: 0 magic, 1 generation, 2 capacity
_CAPACITY = 2
# Payloads sit at this alignment inside a slot (numpy's and the cache line's).
_ALIGN = 64
# Segments grow in these steps, with an eighth spare: a lidar's point count varies by a few
# percent from sweep to sweep, which must not remake a segment every time.
_GRANULE = 64 * 1024
_DESC_HEAD = struct.Struct("<8sH")  # MAGIC, entry count
_DESC_ENTRY = struct.Struct("<HHQQQ")  # frame index, name length, generation, offset, length
_MAX_ENTRIES = 64
_MAX_NAME = 128
_NAME = re.compile(r"pn\.(\d{1,10})\.(\d{1,10})\.(\d{1,20})\.([0-9a-f]{16})\.(\d{1,10})")
# Mappings a reader keeps (a few rings of a few topics); older ones are let go.
_MAX_MAPPINGS = 256


@dataclass(frozen=True)
class ShmConfig:
    """How a Publisher uses shared memory.

    `enabled`: None (default) for `ipc://` endpoints only (inline bytes for tcp and the rest),
    False never, True always (an error for endpoints other than ipc: another host cannot see
    this host's memory). Frames of at least `threshold_bytes` go through shared memory (below it
    ZeroMQ's own copy is cheaper than a descriptor), up to `max_frame_bytes` (above it inline).
    Each topic's ring has `slots` slots, and grows up to `max_slots` while its oldest slot was
    published less than `hold_ns` ago (see the module docstring for the contract).

    Raises (constructor):
        ValueError: a value out of range.
    """

    enabled: bool | None = None
    threshold_bytes: int = 65536
    max_frame_bytes: int = 256 * 1024 * 1024
    slots: int = 8
    max_slots: int = 32
    hold_ns: int = 500_000_000

    def __post_init__(self) -> None:
        if self.threshold_bytes < 1:
            raise ValueError(f"shm threshold_bytes: must be positive, got {self.threshold_bytes}")
        if self.max_frame_bytes < self.threshold_bytes:
            raise ValueError("shm max_frame_bytes: must be at least threshold_bytes")
        if self.slots < 1 or self.max_slots < self.slots:
            raise ValueError(
                f"shm slots: need 1 <= slots <= max_slots, got {self.slots}, {self.max_slots}"
            )
        if self.hold_ns < 0:
            raise ValueError(f"shm hold_ns: must not be negative, got {self.hold_ns}")

    def applies(self, endpoint: str) -> bool:
        """Whether a publisher on `endpoint` (resolved) uses shared memory.

        Raises:
            ValueError: `enabled` is True for an endpoint other than ipc.
        """
        ipc = endpoint.startswith("ipc://")
        if self.enabled is None:
            return ipc and shm_available()
        if self.enabled and not ipc:
            raise ValueError(f"{endpoint}: shared memory is for ipc:// endpoints (same host) only")
        return self.enabled


def shm_available() -> bool:
    """Whether this host has POSIX shared memory where this module looks for it."""
    return SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK | os.X_OK)


# -- descriptors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """One frame moved to shared memory: its position in the message (`index`, 2 or more), the
    segment's name, the slot's generation when written, and the payload's place in the slot's
    payload area (`offset`, `length`, bytes)."""

    index: int
    segment: str
    generation: int
    offset: int
    length: int


def pack_descriptors(entries: Sequence[Descriptor]) -> bytes:
    """The descriptor frame for `entries`."""
    parts = [_DESC_HEAD.pack(MAGIC, len(entries))]
    for e in entries:
        name = e.segment.encode("ascii")
        parts.append(_DESC_ENTRY.pack(e.index, len(name), e.generation, e.offset, e.length))
        parts.append(name)
    return b"".join(parts)


def is_descriptor(frame: Any) -> bool:
    """Whether `frame` (a buffer or a zmq.Frame) is a descriptor frame (starts with MAGIC)."""
    view = memoryview(frame.buffer if hasattr(frame, "buffer") else frame)
    return view.nbytes >= len(MAGIC) and view.cast("B")[: len(MAGIC)] == MAGIC


def unpack_descriptors(data: Any) -> list[Descriptor]:
    """The entries of a descriptor frame, checked for form (not against any segment).

    Raises:
        ValueError: naming what is malformed.
    """
    view = memoryview(data).cast("B")
    if view.nbytes < _DESC_HEAD.size:
        raise ValueError(f"{view.nbytes} bytes, shorter than its fixed part")
    magic, count = _DESC_HEAD.unpack_from(view)
    if magic != MAGIC:
        raise ValueError("it does not start with the descriptor marker")
    if not 1 <= count <= _MAX_ENTRIES:
        raise ValueError(f"{count} entries (1 to {_MAX_ENTRIES} allowed)")
    entries = []
    pos = _DESC_HEAD.size
    for i in range(count):
        if pos + _DESC_ENTRY.size > view.nbytes:
            raise ValueError(f"entry {i} is truncated")
        index, name_len, generation, offset, length = _DESC_ENTRY.unpack_from(view, pos)
        pos += _DESC_ENTRY.size
        if not 1 <= name_len <= _MAX_NAME or pos + name_len > view.nbytes:
            raise ValueError(f"entry {i} has a segment name of {name_len} bytes, or is truncated")
        try:
            name = bytes(view[pos : pos + name_len]).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"entry {i} has a segment name that is not ASCII") from None
        pos += name_len
        entries.append(Descriptor(index, name, generation, offset, length))
    if pos != view.nbytes:
        raise ValueError(f"{view.nbytes - pos} bytes after the last entry")
    return entries


# -- processes and their segments ----------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks after boot), or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold anything: parse after it.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int) -> bool:
    """Whether the process that made a segment (`pid`, started at `start`) still runs."""
    now = _start_time(pid)
    if now is not None:
        return now == start  # another start time: the pid was reused, the writer is gone
    try:
        os.kill(pid, 0)  # no /proc entry: only whether some process has the pid
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _segment_owner(name: str) -> tuple[int, int, int] | None:
    """(uid, pid, start time) of a segment name, or None when it is not a segment name."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def owned_segments(pid: int | None = None, directory: Path | None = None) -> list[str]:
    """The names of this user's segments in `directory` (default `SHM_DIR`), of process `pid`
    only when given (for tests and diagnostics)."""
    folder = SHM_DIR if directory is None else directory
    uid = os.getuid()
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        owner = _segment_owner(name)
        if owner is not None and owner[0] == uid and (pid is None or owner[1] == pid):
            found.append(name)
    return sorted(found)


def sweep_dead_segments(directory: Path | None = None) -> int:
    """Unlink this user's segments whose writer is no longer alive (killed, or exited without
    closing); returns how many. Never raises: a segment that cannot be inspected is left."""
    folder = SHM_DIR if directory is None else directory
    uid = os.getuid()
    removed = 0
    for name in owned_segments(directory=folder):
        owner = _segment_owner(name)
        assert owner is not None  # owned_segments matched it
        _, pid, start = owner
        if _alive(pid, start):
            continue
        path = folder / name
        try:
            if path.lstat().st_uid != uid:
                continue
            path.unlink()
            removed += 1
        except OSError:
            continue  # another sweeper was first, or it cannot be touched: not ours to force
    return removed


# -- the writer ----------------------------------------------------------------------------------


class _State(Enum):
    FREE = 0  # never published, or given back unused
    LOANED = 1  # handed to the producer: being written
    PUBLISHED = 2


class _Slot:
    """One segment of a ring, mapped read-write."""

    def __init__(self, name: str, path: Path, capacity: int) -> None:
        self.name = name
        self.path = path
        self.capacity = capacity
        size = HEADER_BYTES + capacity
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                # Reserve the pages now: on a full /dev/shm, writing would be a SIGBUS.
                os.posix_fallocate(fd, 0, size)
                self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except BaseException:
                os.unlink(path)
                raise
        finally:
            os.close(fd)
        self.header: npt.NDArray[np.uint64] = np.frombuffer(self._mmap, "<u8", count=8)
        self.payload: npt.NDArray[np.uint8] = np.frombuffer(
            self._mmap, np.uint8, count=capacity, offset=HEADER_BYTES
        )
        self.base = int(self.payload.__array_interface__["data"][0])
        self._mmap[: len(MAGIC)] = MAGIC
        self.header[_CAPACITY] = capacity
        self.generation = 0
        self.state = _State.FREE
        self.published_ns = 0
        self.loans: list[npt.NDArray[Any]] = []

    def begin(self) -> None:
        """Mark the slot as being written (odd generation): readers of its last message see
        from here on that it is gone."""
        self.generation += 1 if self.generation % 2 == 0 else 2
        self.header[_GENERATION] = self.generation

    def publish(self, now_ns: int) -> int:
        """Mark the slot as written (a new even generation); returns it."""
        self.generation += 1
        self.header[_GENERATION] = self.generation
        self.state = _State.PUBLISHED
        self.published_ns = now_ns
        self._freeze_loans()
        return self.generation

    def give_back(self) -> None:
        """An unused loan: the slot is free again (nothing names its generation)."""
        self.generation += 1
        self.header[_GENERATION] = self.generation
        self.state = _State.FREE
        self.published_ns = 0
        self._freeze_loans()

    def _freeze_loans(self) -> None:
        for arr in self.loans:
            arr.flags.writeable = False
        self.loans.clear()

    def contains(self, address: int, nbytes: int) -> bool:
        return self.base <= address and address + nbytes <= self.base + self.capacity

    def release(self) -> None:
        """Unlink the segment; the mapping goes once nothing views it (loans may)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self._freeze_loans()
        self.header = np.empty(0, np.uint64)
        self.payload = np.empty(0, np.uint8)
        with contextlib.suppress(BufferError):  # a loaned or sent array still views it
            self._mmap.close()


class _Ring:
    """One topic's slots; `slots[next]` is the oldest (the next to reuse)."""

    def __init__(self) -> None:
        self.slots: list[_Slot] = []
        self.next = 0


def _unlink_all(paths: set[Path], owner: int) -> None:
    if os.getpid() != owner:
        return  # a forked child exiting: the segments are its parent's
    for path in list(paths):
        with contextlib.suppress(OSError):
            os.unlink(path)
    paths.clear()


def _capacity_for(nbytes: int) -> int:
    return math.ceil((nbytes + nbytes // 8) / _GRANULE) * _GRANULE


def _address(frame: Any) -> int:
    arr = np.frombuffer(frame, np.uint8)
    return int(arr.__array_interface__["data"][0])


def _nbytes(frame: Any) -> int:
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


class ShmWriter:
    """The writing end: rings of slots per topic, owned by one Publisher (one thread).

    `directory` is where segments are made (default `SHM_DIR`; tests only). Making one sweeps
    the segments of writers that died (`sweep_dead_segments`).

    Counters: `fallbacks` (messages sent inline: the ring full of young slots, or a segment
    that could not be made; `last_error` says why), `copied_bytes` (payload bytes copied into
    slots) and `loaned_bytes` (payload bytes published from loans, without a copy).
    """

    def __init__(self, config: ShmConfig, directory: Path | None = None) -> None:
        self.config = config
        self.directory = SHM_DIR if directory is None else directory
        self._prefix = (
            f"pn.{os.getuid()}.{os.getpid()}.{_start_time(os.getpid()) or 0}."
            f"{secrets.token_hex(8)}."
        )
        self._count = 0
        self._rings: dict[str, _Ring] = {}
        self._paths: set[Path] = set()
        self._closed = False
        self.fallbacks = 0
        self.copied_bytes = 0
        self.loaned_bytes = 0
        self.last_error = ""
        # Segments of a writer never closed go at interpreter exit (not after a kill -9: the
        # sweeps handle that).
        self._finalizer = weakref.finalize(self, _unlink_all, self._paths, os.getpid())
        sweep_dead_segments(self.directory)

    @property
    def segments(self) -> list[str]:
        """The names of the segments this writer holds."""
        return sorted(p.name for p in self._paths)

    def _new_slot(self, nbytes: int) -> _Slot:
        name = f"{self._prefix}{self._count}"
        self._count += 1
        path = self.directory / name
        slot = _Slot(name, path, _capacity_for(nbytes))
        self._paths.add(path)
        return slot

    def _drop_slot(self, slot: _Slot) -> None:
        self._paths.discard(slot.path)
        slot.release()

    def _acquire(self, topic: str, nbytes: int, now_ns: int) -> _Slot | None:
        """A slot of `topic`'s ring for `nbytes`, marked as being written; None when none may be
        written now (the message goes inline). Raises OSError when a segment cannot be made."""
        ring = self._rings.setdefault(topic, _Ring())
        cfg = self.config
        slots = ring.slots
        if len(slots) >= cfg.slots:
            oldest = slots[ring.next]
            reusable = oldest.state is _State.FREE or (
                oldest.state is _State.PUBLISHED and now_ns - oldest.published_ns >= cfg.hold_ns
            )
            if reusable:
                if oldest.capacity < nbytes:
                    # A new, larger segment; the old one stays intact for whoever maps it.
                    bigger = self._new_slot(nbytes)
                    self._drop_slot(oldest)
                    slots[ring.next] = oldest = bigger
                ring.next = (ring.next + 1) % len(slots)
                oldest.begin()
                return oldest
            if len(slots) >= cfg.max_slots:
                return None
        # Inserted where the oldest is, which stays next: the ring's order is its age order.
        slot = self._new_slot(nbytes)
        slots.insert(ring.next, slot)
        ring.next = (ring.next + 1) % len(slots)
        slot.begin()
        return slot

    def loan(self, topic: str, shape: Sequence[int], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """A writable C-contiguous array of `shape` and `dtype` inside the next slot of `topic`
        (a plain array when no slot may be used now: counted in `fallbacks`). A message sent on
        `topic` whose array is this one is published without a copy. The loan ends with the
        next `pack` on `topic`: the array is then read-only.

        Raises:
            TransportError: the writer is closed.
            ValueError: a negative dimension, or a size above `max_frame_bytes`.
        """
        if self._closed:
            raise TransportError("shared-memory writer is closed")
        dt = np.dtype(dtype)
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise ValueError(f"loan shape {list(dims)}: negative dimension")
        nbytes = math.prod(dims) * dt.itemsize
        if nbytes > self.config.max_frame_bytes:
            raise ValueError(f"loan of {nbytes} bytes, above max_frame_bytes")
        if nbytes < self.config.threshold_bytes:
            return np.empty(dims, dt)
        try:
            slot = self._acquire(topic, nbytes, time.monotonic_ns())
        except OSError as e:
            slot = None
            self.last_error = f"cannot make a shared-memory segment: {e}"
        if slot is None:
            self.fallbacks += 1
            return np.empty(dims, dt)
        slot.state = _State.LOANED
        arr: npt.NDArray[Any] = np.ndarray(dims, dt, buffer=slot.payload, offset=0)
        slot.loans.append(arr)
        return arr

    def pack(self, frames: Sequence[bytes | memoryview], topic: str) -> list[bytes | memoryview]:
        """The frames to send for the encoded message `frames` (`[topic, header, buffers...]`):
        the large buffers in shared memory and a descriptor in their place, or `frames`
        unchanged when none is large or no slot may be used (then counted in `fallbacks`).

        Raises:
            TransportError: the writer is closed.
        """
        if self._closed:
            raise TransportError("shared-memory writer is closed")
        ring = self._rings.get(topic)
        loaned = [s for s in ring.slots if s.state is _State.LOANED] if ring is not None else []
        cfg = self.config
        now_ns = time.monotonic_ns()
        # (frame index, slot or None to copy, offset in the slot, length)
        places: list[tuple[int, _Slot | None, int, int]] = []
        for i in range(2, len(frames)):
            n = _nbytes(frames[i])
            if not cfg.threshold_bytes <= n <= cfg.max_frame_bytes:
                continue
            address = _address(frames[i]) if loaned else 0
            home = next((s for s in loaned if s.contains(address, n)), None)
            places.append((i, home, address - home.base if home is not None else 0, n))
        to_copy = [(i, n) for i, home, _, n in places if home is None]
        slot = None
        if to_copy:
            try:
                slot = self._acquire(topic, sum(_aligned(n) for _, n in to_copy), now_ns)
            except OSError as e:
                self.last_error = f"cannot make a shared-memory segment: {e}"
            if slot is None:
                # Its loaned frames could still go by descriptor, but one path per message
                # keeps the receiver's view simple: all of it inline.
                self.fallbacks += 1
                places = []
        if not places:
            for s in loaned:
                s.give_back()
            return list(frames)
        entries: list[tuple[int, _Slot, int, int]] = []
        offset = 0
        for i, home, at, n in places:
            if home is None:
                assert slot is not None
                slot.payload[offset : offset + n] = np.frombuffer(frames[i], np.uint8)
                entries.append((i, slot, offset, n))
                offset += _aligned(n)
                self.copied_bytes += n
            else:
                entries.append((i, home, at, n))
                self.loaned_bytes += n
        # Published (even generation) only now that every byte is in place.
        for s in loaned:
            if any(home is s for _, home, _, _ in entries):
                s.publish(now_ns)
            else:
                s.give_back()
        if slot is not None:
            slot.publish(now_ns)
        descriptor = pack_descriptors(
            [Descriptor(i, s.name, s.generation, at, n) for i, s, at, n in entries]
        )
        moved = {i for i, _, _, _ in entries}
        kept = [f for i, f in enumerate(frames) if i not in moved]
        return [kept[0], descriptor, *kept[1:]]

    def close(self) -> None:
        """Unlink every segment of this writer. Idempotent. Arrays that still view a slot (a
        loan, a sent message's) stay valid; the memory goes with the last of them."""
        if self._closed:
            return
        self._closed = True
        for ring in self._rings.values():
            for slot in ring.slots:
                slot.release()
        self._rings.clear()
        self._finalizer()


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


# -- the reader ----------------------------------------------------------------------------------


class ShmFrame:
    """A frame of a received message that lies in shared memory: `buffer` is a read-only view
    of the writer's slot (no copy), `valid()` whether the slot still holds this message.
    With `copy=True` in `ShmReader`, `buffer` views a private copy and `valid()` is True."""

    __slots__ = ("_generation", "_header", "buffer")

    def __init__(
        self, buffer: memoryview, header: npt.NDArray[np.uint64] | None, generation: int
    ) -> None:
        self.buffer = buffer
        self._header = header
        self._generation = generation

    @property
    def bytes(self) -> bytes:
        """A copy of the payload."""
        return self.buffer.tobytes()

    def __len__(self) -> int:
        return self.buffer.nbytes

    def valid(self) -> bool:
        """Whether the payload is still the message's (the writer has not recycled the slot)."""
        return self._header is None or int(self._header[_GENERATION]) == self._generation


def payload_intact(frames: Sequence[Any]) -> bool:
    """Whether every shared-memory frame of a received message still holds its payload: call it
    after the arrays were made usable (decoded, validated) to complete the seqlock check."""
    return all(f.valid() for f in frames if type(f) is ShmFrame)


class _Mapping:
    __slots__ = ("fd", "header", "mm", "payload", "pid", "start")

    def __init__(self, mm: mmap.mmap, fd: int, capacity: int, pid: int, start: int) -> None:
        self.mm = mm
        #: The segment's file, kept open to tell its size now (`os.fstat`): the file mapped,
        #: whatever its name names since.
        self.fd = fd
        self.header: npt.NDArray[np.uint64] = np.frombuffer(mm, "<u8", count=8)
        self.payload = memoryview(mm)[HEADER_BYTES : HEADER_BYTES + capacity]
        self.pid = pid
        self.start = start

    def let_go(self) -> None:
        """Closes the file; the mapping itself lives on while arrays view it."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


class ShmReader:
    """The reading end, owned by one Subscriber (one thread): resolves descriptor messages.

    `copy`: copy payloads out of shared memory (then check the generation again), for holders
    that keep messages beyond the writer's hold time. `directory`: see `ShmWriter`.
    """

    def __init__(self, *, copy: bool = False, directory: Path | None = None) -> None:
        self.copy = copy
        self.directory = SHM_DIR if directory is None else directory
        self._uid = os.getuid()
        self._mappings: collections.OrderedDict[str, _Mapping] = collections.OrderedDict()
        sweep_dead_segments(self.directory)

    def resolve(self, frames: Sequence[Any], limits: WireLimits) -> list[Any]:
        """The frames of the message (`[topic, header, buffers...]`) that `frames` (`[topic,
        descriptor, header, inline buffers...]`) describes, the moved ones as `ShmFrame`s.

        Raises:
            StalePayloadError: a slot was recycled by its writer (before or while it was read).
            WireError: anything else wrong with the descriptor (see the module docstring).
        """
        topic = _topic_of(frames[0])
        try:
            entries = unpack_descriptors(_buffer(frames[1]))
        except ValueError as e:
            raise WireError(topic, f"malformed shared-memory descriptor: {e}") from None
        inline = [frames[0], *frames[2:]]
        total = len(inline) + len(entries)
        if total > limits.max_frames:
            raise WireError(
                topic,
                f"too many frames: {total} with the shared-memory ones, above the limit of "
                f"{limits.max_frames}",
            )
        size = sum(_buffer(f).nbytes for f in inline) + sum(e.length for e in entries)
        if size > limits.max_message_bytes:
            raise WireError(
                topic,
                f"oversize message: {size} bytes with the shared-memory ones, above the limit "
                f"of {limits.max_message_bytes}",
            )
        last = 1
        for d in entries:
            if not last < d.index < total:
                raise WireError(
                    topic,
                    f"malformed shared-memory descriptor: frame index {d.index} out of order or "
                    f"outside 2..{total - 1}",
                )
            last = d.index
        views = []
        for d in entries:
            mapping = self._map(topic, d.segment)
            capacity = mapping.payload.nbytes
            if d.offset > capacity or d.length > capacity - d.offset:
                raise WireError(
                    topic,
                    f"shared-memory payload outside its segment {d.segment}: offset {d.offset}, "
                    f"length {d.length}, segment payload {capacity} bytes",
                )
            self._check_size(topic, d, mapping)
            self._check(topic, d, mapping, "before it was read")
            views.append((d, mapping, mapping.payload[d.offset : d.offset + d.length]))
        out: list[Any] = inline
        for d, mapping, view in views:
            if self.copy:
                frame = ShmFrame(memoryview(view.tobytes()), None, d.generation)
            else:
                frame = ShmFrame(view, mapping.header, d.generation)
            out.insert(d.index, frame)
        # After: a slot recycled while the views were made (or copied) is not the message.
        for d, mapping, _ in views:
            self._check(topic, d, mapping, "while it was read")
        return out

    def _check_size(self, topic: str, e: Descriptor, mapping: _Mapping) -> None:
        """Refuses a payload the segment's file no longer holds (cut short since it was mapped:
        reading it would be a SIGBUS), and lets go of that mapping."""
        try:
            size = os.fstat(mapping.fd).st_size
        except OSError:
            size = 0
        if size < HEADER_BYTES + e.offset + e.length:
            self._forget(e.segment)
            raise WireError(
                topic,
                f"shared-memory segment {e.segment} was cut short to {size} bytes since it was "
                f"mapped: its payload (offset {e.offset}, length {e.length}) is gone",
            )

    def _forget(self, name: str) -> None:
        mapping = self._mappings.pop(name, None)
        if mapping is not None:
            mapping.let_go()

    def _check(self, topic: str, e: Descriptor, mapping: _Mapping, when: str) -> None:
        now = int(mapping.header[_GENERATION])
        if now != e.generation or e.generation % 2:
            if e.generation % 2 or e.generation > now:
                raise WireError(
                    topic,
                    f"shared-memory descriptor names generation {e.generation} of segment "
                    f"{e.segment}, which holds generation {now}: not a published one",
                )
            raise StalePayloadError(
                topic,
                f"shared-memory payload recycled by its writer {when} (segment {e.segment}, "
                f"generation {e.generation}, now {now}): dropped; the receiver is behind by more "
                "than the writer's ring holds",
            )

    def _map(self, topic: str, name: str) -> _Mapping:
        mapping = self._mappings.get(name)
        if mapping is not None:
            self._mappings.move_to_end(name)
            return mapping
        owner = _segment_owner(name)
        if owner is None:
            raise WireError(topic, f"shared-memory descriptor names {name!r}: not a segment name")
        uid, pid, start = owner
        if uid != self._uid:
            raise WireError(
                topic, f"shared-memory segment {name} belongs to uid {uid}, not to this user"
            )
        try:
            # Non-blocking: a FIFO planted under a segment's name would block the open (and the
            # receiver for good) until a writer came; a regular file is read the same either way.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(self.directory / name, flags)
        except FileNotFoundError:
            gone = "" if _alive(pid, start) else f"; its writer (pid {pid}) has exited"
            raise WireError(
                topic, f"shared-memory segment {name} does not exist (any more){gone}"
            ) from None
        except OSError as e:
            raise WireError(
                topic, f"shared-memory segment {name} cannot be opened ({e.strerror})"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != self._uid:
                raise WireError(
                    topic, f"shared-memory segment {name} is not a segment of this user"
                )
            if st.st_size < HEADER_BYTES:
                raise WireError(
                    topic, f"shared-memory segment {name} is too short ({st.st_size} bytes)"
                )
            mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
        except OSError as e:
            os.close(fd)
            raise WireError(
                topic, f"shared-memory segment {name} cannot be mapped ({e.strerror})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        capacity = struct.unpack_from("<Q", mm, 8 * _CAPACITY)[0]
        if mm[: len(MAGIC)] != MAGIC or capacity > st.st_size - HEADER_BYTES:
            mm.close()
            os.close(fd)
            raise WireError(topic, f"shared-memory segment {name} has no valid slot header")
        mapping = _Mapping(mm, fd, capacity, pid, start)
        self._mappings[name] = mapping
        if len(self._mappings) > _MAX_MAPPINGS:
            # Let go, not closed: arrays may still view it (the mapping goes with the last).
            self._mappings.popitem(last=False)[1].let_go()
        return mapping

    def forget_dead(self) -> None:
        """Let go of the mappings of writers that are gone, and sweep their segments."""
        for name, mapping in list(self._mappings.items()):
            if not _alive(mapping.pid, mapping.start):
                self._forget(name)
        sweep_dead_segments(self.directory)

    def close(self) -> None:
        """Let go of every mapping (arrays still viewing one keep it) and sweep."""
        for name in list(self._mappings):
            self._forget(name)
        sweep_dead_segments(self.directory)


def _buffer(frame: Any) -> memoryview:
    return memoryview(frame.buffer if hasattr(frame, "buffer") else frame)


def _topic_of(frame: Any) -> str:
    return bytes(_buffer(frame)[:256]).decode("utf-8", "replace") or "<empty topic>"
