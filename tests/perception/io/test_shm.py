"""Shared-memory transport (perception.io.shm) over real ZeroMQ sockets, real POSIX shared memory
and real processes killed with SIGKILL; no mocks.

PUB/SUB drops what is sent before a subscription reaches the publisher (slow joiner), so tests
send until the first message arrives, then work with one message in flight at a time.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.errors import StalePayloadError, WireError
from perception.io import shm
from perception.io.shm import Descriptor, ShmConfig, ShmFrame, pack_descriptors
from perception.io.transport import Publisher, ReceivedFrame, Subscriber
from perception.msgs import wire
from perception.msgs.schema import WireLimits
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep, Message

REPO = Path(__file__).resolve().parents[3]
TRIES = 200  # x 25 ms: 5 s at most for a connection to come up
WAIT_S = 10.0  # for a child process to get going, or the sweeps to happen

pytestmark = pytest.mark.skipif(not shm.shm_available(), reason="no POSIX shared memory")


def sweep(points: np.ndarray, seq: int = 1, stream: str = "lidar/top") -> LidarSweep:
    return LidarSweep(Header(stream, seq, 1_000 + seq, "lidar"), points)


def random_points(n: int = 131_072, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


def fix(stream: str = "lidar/top", seq: int = 0) -> GnssFix:
    return GnssFix(Header(stream, seq, 1, "gnss"), 49.0, 8.4, 100.0)


class Refusals:
    def __init__(self) -> None:
        self.errors: list[WireError] = []

    def __call__(self, error: WireError) -> None:
        self.errors.append(error)


def connect(
    pub: Publisher,
    topics: list[str],
    *,
    limits: WireLimits = WireLimits(),  # noqa: B008 (frozen)
    shm_copy: bool = False,
) -> tuple[Subscriber, Refusals]:
    seen = Refusals()
    sub = Subscriber(
        [pub.last_endpoint], topics, hwm=1000, limits=limits, on_refused=seen, shm_copy=shm_copy
    )
    # Live once a probe (small: inline, no slot used) arrives; the rest drained.
    for _ in range(TRIES):
        pub.send(fix(topics[0]))
        if sub.recv(timeout_ms=25) is not None:
            while sub.recv(timeout_ms=50) is not None:
                pass
            return sub, seen
    sub.close()
    pytest.fail(f"nothing arrived on {pub.last_endpoint} after {TRIES} sends")


def recv(sub: Subscriber, timeout_ms: int = 2_000) -> list[ReceivedFrame]:
    frames = sub.recv(timeout_ms)
    assert frames is not None, "no message"
    return frames


def trip(pub: Publisher, sub: Subscriber, msg: Message) -> tuple[list[ReceivedFrame], Message]:
    pub.send(msg)
    frames = recv(sub)
    return frames, wire.decode(frames)[1]


@pytest.fixture
def endpoint(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/shm.sock"


@pytest.fixture
def kitti_sweep(kitti_dir: Path) -> LidarSweep:
    """KITTI object frame 000000's Velodyne scan: 115,384 points, 1.8 MB."""
    points = np.fromfile(kitti_dir / "velodyne" / "000000.bin", np.float32).reshape(-1, 4)
    offsets = np.linspace(0, 99_000_000, len(points)).astype(np.int64)
    return LidarSweep(Header("lidar/top", 3, 1_000_000, "lidar"), points, offsets)


@pytest.fixture
def camera_6mb(kitti_dir: Path) -> CameraFrame:
    """KITTI frame 000000's left image scaled to 1920 x 1080 BGR: 6.2 MB."""
    image = cv2.imread(str(kitti_dir / "image_2" / "000000.png"), cv2.IMREAD_COLOR)
    assert image is not None
    big = np.empty((1080, 1920, 3), np.uint8)
    big[:] = cv2.resize(image, (1920, 1080))
    return CameraFrame(Header("camera/front", 3, 1_000_000, "camera/front"), image=big)


def same(a: Message, b: Message) -> None:
    assert type(a) is type(b) and a.header == b.header
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y, field.name


# -- the path --------------------------------------------------------------------------------------


def test_real_sweep_and_camera_frame_arrive_through_shared_memory_as_inline(
    endpoint: str, kitti_sweep: LidarSweep, camera_6mb: CameraFrame
) -> None:
    topics = ["lidar/top", "camera/front"]
    with Publisher("tcp://127.0.0.1:*") as tcp_pub, Publisher(endpoint) as ipc_pub:
        assert tcp_pub.shm is None and ipc_pub.shm is not None
        tcp_sub, _ = connect(tcp_pub, topics)
        ipc_sub, seen = connect(ipc_pub, topics)
        with tcp_sub, ipc_sub:
            for msg in (kitti_sweep, camera_6mb):
                inline_frames, inline = trip(tcp_pub, tcp_sub, msg)
                shm_frames, shared = trip(ipc_pub, ipc_sub, msg)
                same(inline, msg)
                same(shared, inline)
                assert not any(isinstance(f, ShmFrame) for f in inline_frames)
                moved = [f for f in shm_frames if isinstance(f, ShmFrame)]
                # Every buffer of 64 KB and more, zero-copy: the arrays view the slot.
                assert len(moved) == len(shm_frames) - 2
                arrays = [getattr(shared, f.name) for f in dataclasses.fields(shared)]
                for arr in (a for a in arrays if isinstance(a, np.ndarray)):
                    assert any(
                        np.shares_memory(arr, np.frombuffer(f.buffer, np.uint8)) for f in moved
                    )
                    assert not arr.flags.writeable
                assert shm.payload_intact(shm_frames)
            # A small message on the same publisher stays inline.
            ipc_pub.send(fix())
            assert not any(isinstance(f, ShmFrame) for f in recv(ipc_sub))
        assert seen.errors == [] and ipc_sub.stale_payloads == ipc_sub.refused_payloads == 0
        assert ipc_pub.shm.copied_bytes >= kitti_sweep.points.nbytes + camera_6mb.image.nbytes  # type: ignore[union-attr]


def test_segments_are_private_named_after_their_writer_and_gone_at_close(endpoint: str) -> None:
    with Publisher(endpoint) as pub:
        sub, _ = connect(pub, ["lidar/top"])
        with sub:
            trip(pub, sub, sweep(random_points()))
        assert pub.shm is not None
        names = pub.shm.segments
        assert len(names) == 1 and names == shm.owned_segments(os.getpid())
        st = (shm.SHM_DIR / names[0]).stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    assert not (shm.SHM_DIR / names[0]).exists()
    assert shm.owned_segments(os.getpid()) == []


def test_shared_memory_is_forced_inline_or_refused_off_ipc(endpoint: str) -> None:
    with Publisher(endpoint, shm=ShmConfig(enabled=False)) as pub:
        assert pub.shm is None
    with pytest.raises(ValueError, match="ipc:// endpoints"):
        Publisher("tcp://127.0.0.1:*", shm=ShmConfig(enabled=True))
    with pytest.raises(ValueError, match="slots"):
        ShmConfig(slots=4, max_slots=2)


def test_loaned_arrays_are_published_without_a_copy_and_frozen_after(endpoint: str) -> None:
    ring = ShmConfig(slots=2, max_slots=2, hold_ns=0)
    with Publisher(endpoint, shm=ring) as pub:
        sub, _ = connect(pub, ["camera/front"])
        with sub:
            assert pub.shm is not None
            for seq in range(3):
                image = pub.loan("camera/front", (1080, 1920, 3), np.uint8)
                unused = pub.loan("camera/front", (512, 512, 3), np.uint8)
                image[:] = seq + 1
                frames, out = trip(
                    pub, sub, CameraFrame(Header("camera/front", seq, 1, "c"), image=image)
                )
                assert isinstance(out, CameraFrame) and out.image is not None
                assert int(out.image.min()) == int(out.image.max()) == seq + 1
                # The receiver views the very memory the producer wrote.
                moved = next(f for f in frames if isinstance(f, ShmFrame))
                assert moved.buffer.nbytes == image.nbytes
                # The loan ended with the send: writing now would change a published message.
                for arr in (image, unused):
                    assert not arr.flags.writeable
                    with pytest.raises(ValueError, match="read-only"):
                        arr[0, 0, 0] = 0
            assert pub.shm.copied_bytes == 0 and pub.shm.loaned_bytes == 3 * 1080 * 1920 * 3
            # The unused loans went back to the ring: the two slots served all six loans.
            assert len(pub.shm.segments) == 2 and pub.shm_fallbacks == 0
    with Publisher("tcp://127.0.0.1:*") as tcp:
        plain = tcp.loan("camera/front", (4, 4, 3), np.uint8)
        assert plain.shape == (4, 4, 3) and plain.flags.writeable


# -- generations -----------------------------------------------------------------------------------


def test_a_recycled_slot_is_detected_counted_and_dropped(endpoint: str) -> None:
    tiny = ShmConfig(slots=2, max_slots=2, hold_ns=0)
    with Publisher(endpoint, hwm=1000, shm=tiny) as pub:
        sub, seen = connect(pub, ["lidar/top"])
        with sub:
            points = [random_points(8_192, seed) for seed in range(4)]
            # Three messages into a ring of two before the reader looks: the first one's slot
            # now holds the third.
            for seq in range(3):
                pub.send(sweep(points[seq], seq))
            kept = [wire.decode(recv(sub))[1] for _ in range(2)]
            assert sub.recv(timeout_ms=100) is None
            assert sub.stale_payloads == 1 and sub.refused_payloads == 0
            [error] = seen.errors
            assert isinstance(error, StalePayloadError) and error.stream == "lidar/top"
            assert "recycled by its writer before it was read" in str(error)
            assert [m.header.seq for m in kept] == [1, 2]
            for m, seq in zip(kept, (1, 2), strict=True):
                assert isinstance(m, LidarSweep)
                np.testing.assert_array_equal(m.points, points[seq])

            # Recycled after it was decoded: the seqlock's second check catches it.
            frames, _ = trip(pub, sub, sweep(points[3], 3))
            assert shm.payload_intact(frames)
            pub.send(sweep(points[0], 4))
            pub.send(sweep(points[1], 5))  # this one reuses the slot of seq 3
            assert not shm.payload_intact(frames)


def test_young_slots_are_never_recycled_the_ring_grows_then_goes_inline(endpoint: str) -> None:
    held = ShmConfig(slots=2, max_slots=3, hold_ns=60_000_000_000)
    with Publisher(endpoint, hwm=1000, shm=held) as pub:
        sub, seen = connect(pub, ["lidar/top"])
        with sub:
            points = [random_points(8_192, seed) for seed in range(5)]
            received = [trip(pub, sub, sweep(p, seq)) for seq, p in enumerate(points)]
            assert pub.shm is not None and len(pub.shm.segments) == 3
            assert pub.shm_fallbacks == 2
            kinds = [any(isinstance(f, ShmFrame) for f in frames) for frames, _ in received]
            assert kinds == [True, True, True, False, False]
            for (frames, msg), p in zip(received, points, strict=True):
                assert isinstance(msg, LidarSweep)
                np.testing.assert_array_equal(msg.points, p)
                assert shm.payload_intact(frames)
            assert seen.errors == []


def test_copies_stay_valid_after_the_slot_is_recycled(endpoint: str) -> None:
    tiny = ShmConfig(slots=1, max_slots=1, hold_ns=0)
    with Publisher(endpoint, shm=tiny) as pub:
        sub, _ = connect(pub, ["lidar/top"], shm_copy=True)
        with sub:
            first = random_points(8_192, 1)
            frames, msg = trip(pub, sub, sweep(first, 1))
            trip(pub, sub, sweep(random_points(8_192, 2), 2))  # same slot, overwritten
            assert shm.payload_intact(frames)
            assert isinstance(msg, LidarSweep)
            np.testing.assert_array_equal(msg.points, first)


# -- hostile descriptors ---------------------------------------------------------------------------


def real_descriptor(pub: Publisher, sub: Subscriber) -> tuple[list[bytes], Descriptor]:
    """A real message as sent on the wire (its descriptor frame unpacked), after it arrived."""
    frames = [bytes(f) for f in wire.encode(sweep(random_points(8_192), 1))]
    assert pub.shm is not None
    sent = pub.shm.pack(frames, "lidar/top")
    pub.send_frames(sent)
    recv(sub)
    [entry] = shm.unpack_descriptors(sent[1])
    return [bytes(f) for f in sent], entry


HOSTILE: dict[str, tuple[Callable[[Descriptor], bytes], str]] = {
    "missing segment": (
        lambda d: pack_descriptors([dataclasses.replace(d, segment=d.segment + "9")]),
        "does not exist",
    ),
    "not a segment name": (
        lambda d: pack_descriptors([dataclasses.replace(d, segment="../../etc/passwd")]),
        "not a segment name",
    ),
    "another user's segment": (
        lambda d: pack_descriptors(
            [dataclasses.replace(d, segment=d.segment.replace(f"pn.{os.getuid()}.", "pn.4242.", 1))]
        ),
        "belongs to uid 4242",
    ),
    "odd generation": (
        lambda d: pack_descriptors([dataclasses.replace(d, generation=d.generation + 1)]),
        "not a published one",
    ),
    "future generation": (
        lambda d: pack_descriptors([dataclasses.replace(d, generation=d.generation + 2)]),
        "not a published one",
    ),
    "length beyond the segment": (
        lambda d: pack_descriptors([dataclasses.replace(d, length=1_000_000)]),
        "outside its segment",
    ),
    "offset beyond the segment": (
        lambda d: pack_descriptors([dataclasses.replace(d, offset=2**63, length=16)]),
        "outside its segment",
    ),
    "length beyond the limits": (
        lambda d: pack_descriptors([dataclasses.replace(d, length=2**63)]),
        "oversize message",
    ),
    "frame index out of range": (
        lambda d: pack_descriptors([dataclasses.replace(d, index=7)]),
        "frame index 7",
    ),
    "too many frames": (
        lambda d: pack_descriptors([dataclasses.replace(d, index=i) for i in range(2, 10)]),
        "too many frames",
    ),
    "truncated": (lambda d: pack_descriptors([d])[:-3], "malformed shared-memory descriptor"),
    "trailing bytes": (lambda d: pack_descriptors([d]) + b"xx", "malformed shared-memory"),
    "no entries": (lambda d: shm.MAGIC + struct.pack("<H", 0), "0 entries"),
    "name not ascii": (
        lambda d: pack_descriptors([d]).replace(d.segment.encode(), b"\xff" * len(d.segment)),
        "not ASCII",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_descriptor_is_a_counted_drop_with_a_clear_error(
    case: str, endpoint: str
) -> None:
    make, expected = HOSTILE[case]
    with Publisher(endpoint, hwm=1000) as pub:
        sub, seen = connect(pub, ["lidar/top"])
        with sub:
            sent, entry = real_descriptor(pub, sub)
            pub.send_frames([sent[0], make(entry), *sent[2:]])
            good = sweep(random_points(8_192, 5), 9)
            pub.send(good)
            # The hostile message is dropped; the next one comes through.
            _, out = wire.decode(recv(sub))
            same(out, good)
            assert sub.refused_payloads == 1 and sub.stale_payloads == 0
            [error] = seen.errors
            assert type(error) is WireError and error.stream == "lidar/top"
            assert expected in str(error)


def test_a_descriptor_naming_a_fifo_is_refused_without_blocking(endpoint: str) -> None:
    """A FIFO under a segment's name blocked the receiver in its open() until a writer came (the
    node's watchdog replaced the receiver every 10 s, and the stuck threads stayed)."""
    with Publisher(endpoint, hwm=1000) as pub:
        sub, seen = connect(pub, ["lidar/top"])
        with sub:
            sent, entry = real_descriptor(pub, sub)
            parts = entry.segment.split(".")
            parts[-2] = "f" * len(parts[-2])  # another segment of the same writer
            fifo = shm.SHM_DIR / ".".join(parts)
            os.mkfifo(fifo)
            try:
                planted = dataclasses.replace(entry, segment=fifo.name)
                pub.send_frames([sent[0], pack_descriptors([planted]), *sent[2:]])
                good = sweep(random_points(8_192, 5), 9)
                pub.send(good)
                _, out = wire.decode(recv(sub))
            finally:
                fifo.unlink()
            same(out, good)
            [error] = seen.errors
            assert f"shared-memory segment {fifo.name} is not a segment of this user" in str(error)


def test_a_subscriber_on_tcp_never_takes_a_descriptor(endpoint: str) -> None:
    with Publisher(endpoint) as ipc, Publisher("tcp://127.0.0.1:*") as tcp:
        ipc_sub, _ = connect(ipc, ["lidar/top"])
        tcp_sub, seen = connect(tcp, ["lidar/top"])
        with ipc_sub, tcp_sub:
            sent, _ = real_descriptor(ipc, ipc_sub)
            # A valid descriptor of a live segment of this host, arriving over tcp.
            tcp.send_frames(sent)
            assert tcp_sub.recv(timeout_ms=300) is None
            assert tcp_sub.refused_payloads == 1
            assert "does not accept them" in str(seen.errors[0])
            # And a publisher on tcp sends the bytes inline.
            frames, _ = trip(tcp, tcp_sub, sweep(random_points()))
            assert not any(isinstance(f, ShmFrame) for f in frames)


# -- processes killed with SIGKILL ---------------------------------------------------------------


def child(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )


def wait_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"child never said {prefix!r}: {proc.stdout.read()}")


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL
    if proc.stdout is not None:
        proc.stdout.close()


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(what)
        time.sleep(0.02)


WRITER = """
    import sys, time
    import numpy as np
    from perception.io.shm import ShmConfig
    from perception.io.transport import Publisher
    from perception.msgs.types import Header, LidarSweep

    points = np.random.default_rng(0).standard_normal((131_072, 4)).astype(np.float32)
    # A ring of a fixed size, so that the segments listed are all there will be.
    ring = ShmConfig(slots=4, max_slots=4, hold_ns=0)
    with Publisher(sys.argv[1], hwm=1000, shm=ring) as pub:
        print("up", flush=True)
        for seq in range(1_000_000):
            pub.send(LidarSweep(Header("lidar/top", seq, 1 + seq, "lidar"), points))
            if seq == 30:
                print("segments", " ".join(pub.shm.segments), flush=True)
            time.sleep(0.01)
"""


def test_a_writer_killed_leaves_a_reader_that_survives_and_no_segments(endpoint: str) -> None:
    writer = child(WRITER, endpoint)
    try:
        wait_line(writer, "up")
        seen = Refusals()
        with Subscriber([endpoint], ["lidar/top"], on_refused=seen) as sub:
            names = wait_line(writer, "segments").split()[1:]
            assert names and names == shm.owned_segments(writer.pid)
            frames = recv(sub)
            _, held = wire.decode(frames)
            assert isinstance(held, LidarSweep) and any(isinstance(f, ShmFrame) for f in frames)
            expected = np.random.default_rng(0).standard_normal((131_072, 4)).astype(np.float32)
            kill9(writer)
            # The reader goes on: what was queued is taken or dropped, then nothing arrives.
            while sub.recv(timeout_ms=300) is not None:
                pass
            # Its connection dropped: the reader swept the dead writer's segments.
            eventually(
                lambda: sub.recv(0) is None and not shm.owned_segments(writer.pid),
                f"segments of the killed writer left: {shm.owned_segments(writer.pid)}",
            )
            # An array it already had stays readable (the mapping outlives the name).
            np.testing.assert_array_equal(held.points, expected)
            # A descriptor naming a segment of the dead writer: a counted drop, clearly worded.
            errors_before = sub.refused_payloads
            with Publisher(f"{endpoint}.2", hwm=1000) as replay:
                sub2, seen2 = connect(replay, ["lidar/top"])
                with sub2:
                    entry = Descriptor(2, names[0], 2, 0, 16)
                    replay.send_frames(
                        [b"lidar/top", pack_descriptors([entry]), bytes(frames[1].buffer)]
                    )
                    assert sub2.recv(timeout_ms=300) is None
                    assert sub2.refused_payloads == 1
                    assert f"its writer (pid {writer.pid}) has exited" in str(seen2.errors[0])
            assert sub.refused_payloads == errors_before
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_segments_of_a_writer_killed_with_no_reader_are_swept_by_the_next_publisher(
    endpoint: str, tmp_path: Path
) -> None:
    writer = child(WRITER, endpoint)
    try:
        wait_line(writer, "up")
        names = wait_line(writer, "segments").split()[1:]
        kill9(writer)
        # Nobody was connected: nothing has swept yet.
        assert shm.owned_segments(writer.pid) == names
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    with Publisher(f"ipc://{tmp_path}/next.sock"):
        assert shm.owned_segments(writer.pid) == []


READER = """
    import sys
    from perception.io.transport import Subscriber
    from perception.msgs import wire

    held = []
    with Subscriber([sys.argv[1]], ["lidar/top"], hwm=1000) as sub:
        while True:
            frames = sub.recv(timeout_ms=100)
            if frames is None:
                continue
            held.append(wire.decode(frames)[1])  # arrays viewing the writer's slots
            if len(held) == 5:
                print("holding", flush=True)
"""


def test_a_reader_killed_leaves_the_writer_going_and_nothing_behind(endpoint: str) -> None:
    ring = ShmConfig(slots=4, max_slots=4, hold_ns=0)  # a fixed size: no segment added
    with Publisher(endpoint, hwm=1000, shm=ring) as pub:
        assert pub.shm is not None
        reader = child(READER, pub.last_endpoint)
        try:
            holding = threading.Event()

            def watch() -> None:
                wait_line(reader, "holding")
                holding.set()

            threading.Thread(target=watch, daemon=True).start()
            deadline = time.monotonic() + WAIT_S
            points = random_points()
            seq = 0
            while not holding.is_set():
                assert time.monotonic() < deadline, "the reader never held messages"
                pub.send(sweep(points, seq))
                seq += 1
                time.sleep(0.02)
            kill9(reader)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
        segments = pub.shm.segments
        # The writer goes on; a new reader gets intact messages; no segment was added.
        sub, seen = connect(pub, ["lidar/top"])
        with sub:
            for i in range(20):
                _, out = trip(pub, sub, sweep(random_points(seed=i), seq + i))
                assert isinstance(out, LidarSweep)
                np.testing.assert_array_equal(out.points, random_points(seed=i))
            assert seen.errors == []
        assert pub.shm.segments == segments == shm.owned_segments(os.getpid())
        assert shm.owned_segments(reader.pid) == []
    assert shm.owned_segments(os.getpid()) == []


# -- descriptors and limits ------------------------------------------------------------------------


def test_descriptors_round_trip_and_are_told_from_header_documents() -> None:
    entries = [
        Descriptor(2, "pn.1.2.3.0123456789abcdef.4", 6, 0, 100),
        Descriptor(3, "x", 8, 128, 5),
    ]
    packed = pack_descriptors(entries)
    assert shm.is_descriptor(packed) and shm.unpack_descriptors(packed) == entries
    header_document = wire.encode(fix())[1]
    assert not shm.is_descriptor(header_document)
    with pytest.raises(ValueError, match="marker"):
        shm.unpack_descriptors(b"\x00PNSHM2\x00" + packed[8:])


def test_a_descriptor_message_is_bounded_like_any_other(endpoint: str) -> None:
    limits = WireLimits(max_message_bytes=1_000_000)
    with Publisher(endpoint) as pub:
        sub, seen = connect(pub, ["lidar/top"], limits=limits)
        with sub:
            pub.send(sweep(random_points()))  # 2 MB in shared memory: above this receiver's limit
            assert sub.recv(timeout_ms=300) is None
            assert sub.refused_payloads == 1 and "oversize message" in str(seen.errors[0])


def test_a_segment_cut_short_after_it_was_mapped_is_refused_not_a_sigbus(endpoint: str) -> None:
    """Another process of this user truncates a segment the reader has mapped, then the
    descriptor comes again: reading the payload past the file's new end would kill the
    reader with SIGBUS. It is a counted drop naming the cut."""
    with Publisher(endpoint, hwm=1000) as pub:
        sub, seen = connect(pub, ["lidar/top"])
        with sub:
            sent, entry = real_descriptor(pub, sub)
            path = shm.SHM_DIR / entry.segment
            size = path.stat().st_size
            os.truncate(path, shm.HEADER_BYTES)
            try:
                pub.send_frames(sent)
                assert sub.recv(300) is None
            finally:
                os.truncate(path, size)  # the writer writes its own slot again at close
            assert sub.refused_payloads == 1
            [error] = seen.errors
            assert type(error) is WireError and error.stream == "lidar/top"
            assert str(error).endswith(
                f"shared-memory segment {entry.segment} was cut short to {shm.HEADER_BYTES} "
                f"bytes since it was mapped: its payload (offset {entry.offset}, length "
                f"{entry.length}) is gone"
            )
