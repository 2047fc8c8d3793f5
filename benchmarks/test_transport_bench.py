"""ZeroMQ transport latency: one message publish -> receive, over real ipc:// and tcp:// sockets.

Run: `python -m pytest benchmarks/test_transport_bench.py --benchmark-enable -s` (`-s` shows the
target reports of `test_2mb_scan_ipc_target` and `test_shm_targets`). The shared-memory part
alone: `-k shm` (about a minute: its rounds are paced at 10 Hz).

Method. The PUB and the SUB live in the same Python thread, each with its own ZeroMQ context
(so, as between two processes, each end has its own libzmq I/O thread, and the bytes go through
a real kernel socket: a Unix domain socket for ipc, loopback TCP for tcp). One round is
`send`, then a blocking receive of that message; the round time, taken by pytest-benchmark with
`time.perf_counter` around the pair in that one thread, is the one-way publish -> receive time
of the message: the send call, both I/O threads moving it, and the wake-up and receive call.
There is exactly one message in flight, so no queueing inflates the figure. Both timestamps
come from one clock in one thread: no cross-thread or cross-process clock offset, and no
hand-off of a receive timestamp through a queue (which, with a receiving Python thread, would
add a GIL switch that a separate receiving process does not pay). The thread blocks in
`zmq_poll`/`recv`, with the GIL released, while the I/O threads move the message.

Before any timing, the subscription is made live (PUB/SUB drops what is sent before the
subscription reaches the publisher: probes are sent until one arrives, then the rest are
drained), one message is received and compared with what was sent (decoded arrays and header
for `Publisher`/`Subscriber`, every frame's bytes for raw pyzmq), and after the timed rounds
nothing may be left over, so every round received its own message and no stale one.

Two paths, parametrised by endpoint kind and payload (1 KB, 64 KB, 1 MB and 2 MB `LidarSweep`s:
2 MB is 131,072 points x 4 float32, about a full 64-beam KITTI scan; 6 MB is a 1920x1080
BGR `CameraFrame`):
- `test_publisher_subscriber`: the node's path, `Publisher.send(msg)` (encode with its
  validation, buffers of 64 KB and up sent without copying) to `Subscriber.recv()` (frames not
  copied). Decoding is not included: see `test_wire_bench.py` (tens of microseconds).
- `test_publisher_subscriber_paced`: the same for the sensor-sized payloads (2 MB, 6 MB) with a
  10 ms pause before each round (outside the timing), as a sensor stream's messages arrive
  (10-30 Hz), not back to back. Between messages the I/O threads go to sleep and other work
  evicts the payload from the caches, so each round pays cold caches and thread wake-ups that
  back-to-back rounds do not: on the loaded development machine this roughly doubles the 2 MB
  figure, and it is the one a live node sees.
- `test_raw_pyzmq`: the same encoded frames through bare PUB/SUB sockets with
  `send_multipart(copy=True)` vs `copy=False`, received with `recv_multipart(copy=False)` in
  both. For `copy=False` the socket's `copy_threshold` is set to 0, so every frame really goes
  zero-copy (pyzmq otherwise copies frames under 64 KB anyway): the small sizes show what
  zero-copy costs (a free callback through pyzmq's garbage-collector thread) where a copy is
  cheaper, which is why `Publisher` copies below 64 KB.

Shared memory (issue #17, perception.io.shm). The cases above send the bytes inline over ipc
(`ShmConfig(enabled=False)`: the Unix socket carries them, as before #17); a Publisher on ipc
now uses shared memory by default, measured by `test_shm_paced` and `test_shm_targets`, paced at
10 Hz (a 100 ms pause before each round, outside the timing) for the 2 MB scan and the 6 MB
camera frame, in three modes: `inline` (bytes through the socket), `shm-copy` (the message's
arrays are copied into a slot by `send`) and `shm-loan` (the producer wrote its array into a
slot it got from `Publisher.loan`, outside the timing, as a camera driver decoding into it
would, so `send` copies nothing). One round is `send` -> `recv` -> a usable numpy array: the
payload frame as an array of the message's dtype and shape (a view of the slot, no copy), then
the slot's generation checked again (`payload_intact`, the seqlock's second check).
`test_shm_targets` also reports the figure with the receiver's full `wire.decode` (validation:
the scan's 0.5 M floats checked finite, ~0.1 ms) instead of the bare view. Before timing, each
case checks that a round delivers the message exactly (decoded arrays and header), by the path
it claims (shared-memory frames or not; no byte copied for `shm-loan`).

The machine this was written on has 2 cores shared with other jobs, on which the two I/O threads
and the Python thread compete: figures are noisy; compare medians within one run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zmq
from pytest_benchmark.fixture import BenchmarkFixture

from perception.io.shm import ShmConfig, ShmFrame, payload_intact
from perception.io.transport import Publisher, ReceivedFrame, Subscriber
from perception.msgs import wire
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep, Message

TOPIC = "bench"
KINDS = ("ipc", "tcp")
RECV_TIMEOUT_MS = 2_000  # a round that waits this long has lost its message: fail, don't hang
JOIN_TIMEOUT_S = 5.0
TARGET_2MB_IPC_MS = 1.5  # issue #8: a 2 MB scan through the transport, median, ipc
# libzmq's default send high-water mark, as the raw sockets have. Publisher's own default (10)
# drops messages here even with one in flight: the sending thread applies the receiver's "read
# up to n" notices only when it processes its command mailbox, which a send does at most about
# once a millisecond (libzmq's TSC-throttled command processing), so ten back-to-back round
# trips inside a millisecond (the 1 KB and 64 KB cases) look like ten queued messages and the
# next ones are dropped until the mailbox is read. Latency does not depend on the mark.
PUB_HWM = 1000
CAMERA_SHAPE = (1080, 1920, 3)


@dataclass(frozen=True)
class Payload:
    """A payload size: its id, its bytes, and how many rounds to time (about a second of
    rounds per benchmark on the development machine, and at least a few hundred so the p99
    means something)."""

    name: str
    nbytes: int
    rounds: int


PAYLOADS = (
    Payload("1KB", 1024, 3000),
    Payload("64KB", 64 * 1024, 2000),
    Payload("1MB", 1024 * 1024, 1000),
    Payload("2MB", 2 * 1024 * 1024, 600),
    Payload("6MB", int(np.prod(CAMERA_SHAPE)), 300),
)
PAYLOAD_2MB = next(p for p in PAYLOADS if p.name == "2MB")
WARMUP_ROUNDS = 20
PAUSE_S = 0.010  # before each paced round: a 100 Hz cadence, as cold as 10 Hz in side runs
PACED_ROUNDS = 150
PACED = tuple(p for p in PAYLOADS if p.name in ("2MB", "6MB"))
INLINE = ShmConfig(enabled=False)  # the bytes through the socket, as before issue #17
# Issue #17: publish -> usable array, same host, median, paced at 10 Hz.
SHM_TARGETS_MS = {"2MB": 0.2, "6MB": 0.3}
SHM_MODES = ("inline", "shm-copy", "shm-loan")
PAUSE_10HZ_S = 0.1
SHM_ROUNDS = 50  # 5 s a case at 10 Hz
SHM_TARGET_ROUNDS = 100
# Rounds before timing, as paced: the ring's slots are made (and their pages reserved) once.
SHM_WARMUP_ROUNDS = ShmConfig().slots


@functools.cache
def _message(payload: Payload) -> Message:
    """A LidarSweep of `payload.nbytes` of points (16 bytes a point), or for the 6 MB case a
    1920x1080 BGR image. Values are random (fixed seed) so nothing compresses or aliases;
    built on first use (cached), so collecting the module stays cheap."""
    rng = np.random.default_rng(8)
    if payload.nbytes == int(np.prod(CAMERA_SHAPE)):
        image = rng.integers(0, 256, CAMERA_SHAPE, dtype=np.uint8)
        return CameraFrame(Header("camera/front", 1, 1_000, "camera/front"), image=image)
    points = rng.standard_normal((payload.nbytes // 16, 4)).astype(np.float32)
    return LidarSweep(Header("lidar/top", 1, 1_000, "lidar"), points)


def _endpoint(kind: str, directory: Path) -> str:
    # tcp: the OS picks a free port; the bound address is read back from the socket.
    return f"ipc://{directory / 'bench.sock'}" if kind == "ipc" else "tcp://127.0.0.1:*"


def _wait_subscribed(send_probe: Callable[[], object], recv: Callable[[int], Any]) -> None:
    """Send probes until one arrives (the subscription has reached the publisher), then drain
    probes still in flight, so the first timed round cannot receive a stale message."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        send_probe()
        if recv(5) is not None:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"subscription not live after {JOIN_TIMEOUT_S} s of probes")
    while recv(20) is not None:
        pass


def _assert_idle(recv: Callable[[int], Any]) -> None:
    """Nothing left over after the timed rounds: every round received exactly its message.

    One PUB -> SUB connection delivers in order, so a message left over from an earlier round
    would have arrived before the last round's message: polling without waiting suffices.
    """
    assert recv(0) is None, "a message was left over: a round received a stale message"


@pytest.fixture(scope="module")
def contexts() -> Iterator[tuple[zmq.Context[zmq.Socket[bytes]], zmq.Context[zmq.Socket[bytes]]]]:
    """One context (one I/O thread) for the sending end, another for the receiving end, shared
    by the module's sockets so that setting up a case costs no thread start-up."""
    send_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    recv_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield send_ctx, recv_ctx
    send_ctx.term()
    recv_ctx.term()


# -- Publisher / Subscriber --------------------------------------------------------------------


@dataclass
class Link:
    """A live Publisher -> Subscriber connection."""

    pub: Publisher
    sub: Subscriber


@pytest.fixture(scope="module", params=KINDS)
def link(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    contexts: tuple[zmq.Context[zmq.Socket[bytes]], zmq.Context[zmq.Socket[bytes]]],
) -> Iterator[Link]:
    send_ctx, recv_ctx = contexts
    endpoint = _endpoint(request.param, tmp_path_factory.mktemp("transport"))
    probe = GnssFix(Header(TOPIC, 0, 1, "gnss"), 49.0, 8.4, 100.0)
    with (
        Publisher(endpoint, hwm=PUB_HWM, context=send_ctx, shm=INLINE) as pub,
        Subscriber([pub.last_endpoint], [TOPIC], context=recv_ctx) as sub,
    ):
        _wait_subscribed(lambda: pub.send(probe, TOPIC), sub.recv)
        yield Link(pub, sub)


def _trip(link: Link, msg: Message) -> list[ReceivedFrame]:
    link.pub.send(msg, TOPIC)
    frames = link.sub.recv(RECV_TIMEOUT_MS)
    if frames is None:
        raise AssertionError(f"no message within {RECV_TIMEOUT_MS} ms")
    return frames


def _assert_same_message(frames: Sequence[Any], msg: Message) -> None:
    topic, out = wire.decode(frames)
    assert topic == TOPIC
    assert type(out) is type(msg)
    assert out.header == msg.header
    if isinstance(msg, LidarSweep):
        assert isinstance(out, LidarSweep)
        np.testing.assert_array_equal(out.points, msg.points)
    else:
        assert isinstance(msg, CameraFrame) and isinstance(out, CameraFrame)
        assert msg.image is not None and out.image is not None
        np.testing.assert_array_equal(out.image, msg.image)


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_publisher_subscriber(benchmark: BenchmarkFixture, link: Link, payload: Payload) -> None:
    msg = _message(payload)
    _assert_same_message(_trip(link, msg), msg)
    benchmark.group = f"transport {payload.name}"
    benchmark.extra_info["wire_bytes"] = sum(memoryview(f).nbytes for f in wire.encode(msg))
    benchmark.pedantic(_trip, args=(link, msg), rounds=payload.rounds, warmup_rounds=WARMUP_ROUNDS)
    _assert_idle(link.sub.recv)


def _pause() -> None:
    time.sleep(PAUSE_S)


@pytest.mark.parametrize("payload", PACED, ids=[p.name for p in PACED])
def test_publisher_subscriber_paced(
    benchmark: BenchmarkFixture, link: Link, payload: Payload
) -> None:
    msg = _message(payload)
    _assert_same_message(_trip(link, msg), msg)
    benchmark.group = f"transport {payload.name}"
    benchmark.extra_info["wire_bytes"] = sum(memoryview(f).nbytes for f in wire.encode(msg))
    benchmark.extra_info["pause_s"] = PAUSE_S
    benchmark.pedantic(_trip, args=(link, msg), setup=_pause, rounds=PACED_ROUNDS)
    _assert_idle(link.sub.recv)


# -- raw pyzmq, copy vs zero-copy --------------------------------------------------------------


@dataclass
class RawLink:
    """Bare PUB -> SUB sockets (no Publisher/Subscriber logic), linger 0."""

    pub: zmq.Socket[bytes]
    sub: zmq.Socket[bytes]

    def recv(self, timeout_ms: int) -> list[zmq.Frame] | None:
        if not self.sub.poll(timeout_ms):
            return None
        frames: list[zmq.Frame] = self.sub.recv_multipart(copy=False)
        return frames


@pytest.fixture(scope="module", params=KINDS)
def raw_link(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    contexts: tuple[zmq.Context[zmq.Socket[bytes]], zmq.Context[zmq.Socket[bytes]]],
) -> Iterator[RawLink]:
    send_ctx, recv_ctx = contexts
    pub = send_ctx.socket(zmq.PUB)
    sub = recv_ctx.socket(zmq.SUB)
    try:
        for s in (pub, sub):
            s.setsockopt(zmq.LINGER, 0)
        pub.bind(_endpoint(request.param, tmp_path_factory.mktemp("raw")))
        sub.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
        sub.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
        sub.connect(pub.getsockopt_string(zmq.LAST_ENDPOINT))
        raw = RawLink(pub, sub)
        _wait_subscribed(lambda: pub.send_multipart([TOPIC.encode(), b"probe"]), raw.recv)
        yield raw
    finally:
        pub.close(linger=0)
        sub.close(linger=0)


def _raw_trip(raw: RawLink, frames: list[bytes | memoryview], copy: bool) -> list[zmq.Frame]:
    raw.pub.send_multipart(frames, copy=copy)
    # Blocking receive; RCVTIMEO makes a lost message raise zmq.Again instead of hanging.
    received: list[zmq.Frame] = raw.sub.recv_multipart(copy=False)
    return received


@pytest.mark.parametrize("mode", ["copy", "zerocopy"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_raw_pyzmq(
    benchmark: BenchmarkFixture, raw_link: RawLink, payload: Payload, mode: str
) -> None:
    copy = mode == "copy"
    raw_link.pub.copy_threshold = 0 if not copy else zmq.COPY_THRESHOLD
    frames = wire.encode(_message(payload), TOPIC)
    received = _raw_trip(raw_link, frames, copy)
    assert [bytes(f.buffer) for f in received] == [bytes(f) for f in frames]
    benchmark.group = f"transport {payload.name}"
    benchmark.extra_info["wire_bytes"] = sum(memoryview(f).nbytes for f in frames)
    benchmark.pedantic(
        _raw_trip, args=(raw_link, frames, copy), rounds=payload.rounds, warmup_rounds=WARMUP_ROUNDS
    )
    _assert_idle(raw_link.recv)


# -- the target --------------------------------------------------------------------------


def test_2mb_scan_ipc_target(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    contexts: tuple[zmq.Context[zmq.Socket[bytes]], zmq.Context[zmq.Socket[bytes]]],
) -> None:
    """Report the median and p99 of a 2 MB scan through Publisher -> Subscriber on ipc against
    the issue's 1.5 ms target, back to back and paced (see the module docstring), and the
    median with the receiver's `wire.decode` added.

    Runs only when benchmarking is enabled. It never fails on timing (a shared 2-core machine is
    too noisy for that): a missed target is printed and raised as a warning, which the pytest
    summary shows.
    """
    config = request.config
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        pytest.skip("a timing report: run with --benchmark-enable")
    msg = _message(PAYLOAD_2MB)
    send_ctx, recv_ctx = contexts
    lines, missed = [], False
    with (
        Publisher(_endpoint("ipc", tmp_path), hwm=PUB_HWM, context=send_ctx, shm=INLINE) as pub,
        Subscriber([pub.last_endpoint], [TOPIC], context=recv_ctx) as sub,
    ):
        link = Link(pub, sub)
        _wait_subscribed(lambda: pub.send(msg, TOPIC), sub.recv)
        _assert_same_message(_trip(link, msg), msg)
        for _ in range(WARMUP_ROUNDS):
            _trip(link, msg)
        for cadence, pause_s, rounds in (("back to back", 0.0, 1000), ("paced", PAUSE_S, 200)):
            transport, with_decode = [], []
            for _ in range(rounds):
                if pause_s:
                    time.sleep(pause_s)
                t0 = time.perf_counter()
                frames = _trip(link, msg)
                t1 = time.perf_counter()
                wire.decode(frames)
                t2 = time.perf_counter()
                transport.append((t1 - t0) * 1e3)
                with_decode.append((t2 - t0) * 1e3)
            median = statistics.median(transport)
            missed |= median >= TARGET_2MB_IPC_MS
            lines.append(
                f"2 MB scan, Publisher -> Subscriber, ipc, {cadence} ({rounds} rounds): "
                f"median {median:.3f} ms, p99 {np.percentile(transport, 99):.3f} ms; "
                f"with decode: median {statistics.median(with_decode):.3f} ms; "
                f"target < {TARGET_2MB_IPC_MS} ms "
                + ("met" if median < TARGET_2MB_IPC_MS else "NOT met")
                + f" ({median / TARGET_2MB_IPC_MS:.0%} of it)"
            )
        _assert_idle(sub.recv)
    report = "\n".join(lines)
    print(f"\n{report}")
    if missed:
        warnings.warn(report, stacklevel=1)


# -- shared memory (issue #17) -------------------------------------------------------------------


@dataclass
class ShmLink:
    """A live Publisher -> Subscriber connection over ipc, in one of `SHM_MODES`."""

    pub: Publisher
    sub: Subscriber
    mode: str


@contextlib.contextmanager
def _shm_link(
    mode: str,
    directory: Path,
    contexts: tuple[zmq.Context[zmq.Socket[bytes]], zmq.Context[zmq.Socket[bytes]]],
) -> Iterator[ShmLink]:
    send_ctx, recv_ctx = contexts
    config = INLINE if mode == "inline" else ShmConfig()
    probe = GnssFix(Header(TOPIC, 0, 1, "gnss"), 49.0, 8.4, 100.0)
    with (
        Publisher(_endpoint("ipc", directory), hwm=PUB_HWM, context=send_ctx, shm=config) as pub,
        Subscriber([pub.last_endpoint], [TOPIC], context=recv_ctx) as sub,
    ):
        _wait_subscribed(lambda: pub.send(probe, TOPIC), sub.recv)
        yield ShmLink(pub, sub, mode)


@pytest.fixture(scope="module", params=SHM_MODES)
def shm_link(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    contexts: tuple[zmq.Context[zmq.Socket[bytes]], zmq.Context[zmq.Socket[bytes]]],
) -> Iterator[ShmLink]:
    with _shm_link(request.param, tmp_path_factory.mktemp("shm"), contexts) as link:
        yield link


def _payload_array(msg: Message) -> npt.NDArray[Any]:
    if isinstance(msg, LidarSweep):
        return msg.points
    assert isinstance(msg, CameraFrame) and msg.image is not None
    return msg.image


def _produce(link: ShmLink, payload: Payload) -> Message:
    """The message of one round as its producer makes it (outside the timing): for `shm-loan`
    its array written into a slot loaned from the publisher, else the message as it is."""
    msg = _message(payload)
    if link.mode != "shm-loan":
        return msg
    source = _payload_array(msg)
    loaned = link.pub.loan(TOPIC, source.shape, source.dtype)
    loaned[...] = source
    if isinstance(msg, LidarSweep):
        return dataclasses.replace(msg, points=loaned)
    assert isinstance(msg, CameraFrame)
    return dataclasses.replace(msg, image=loaned)


def _usable(frames: Sequence[ReceivedFrame], like: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The payload frame as an array of `like`'s dtype and shape (a view), after the seqlock's
    second check: what a consumer can index."""
    arr = np.frombuffer(frames[2].buffer, like.dtype).reshape(like.shape)
    if not payload_intact(frames):
        raise AssertionError("the slot was recycled during the round")
    return arr


def _shm_round(link: ShmLink, msg: Message) -> npt.NDArray[Any]:
    link.pub.send(msg, TOPIC)
    frames = link.sub.recv(RECV_TIMEOUT_MS)
    if frames is None:
        raise AssertionError(f"no message within {RECV_TIMEOUT_MS} ms")
    return _usable(frames, _payload_array(msg))


def _check_shm_round(link: ShmLink, payload: Payload) -> None:
    """One round delivers the message exactly, by the path its mode claims."""
    msg = _produce(link, payload)
    copied = link.pub.shm.copied_bytes if link.pub.shm is not None else 0
    link.pub.send(msg, TOPIC)
    frames = link.sub.recv(RECV_TIMEOUT_MS)
    assert frames is not None
    _assert_same_message(frames, _message(payload))
    np.testing.assert_array_equal(_usable(frames, _payload_array(msg)), _payload_array(msg))
    assert isinstance(frames[2], ShmFrame) == (link.mode != "inline"), link.mode
    if link.mode == "shm-loan":
        assert link.pub.shm is not None and link.pub.shm.copied_bytes == copied, "a copy was made"
    _assert_idle(link.sub.recv)


@pytest.mark.parametrize("payload", PACED, ids=[p.name for p in PACED])
def test_shm_paced(benchmark: BenchmarkFixture, shm_link: ShmLink, payload: Payload) -> None:
    _check_shm_round(shm_link, payload)

    def setup() -> tuple[tuple[ShmLink, Message], dict[str, Any]]:
        time.sleep(PAUSE_10HZ_S)
        return (shm_link, _produce(shm_link, payload)), {}

    benchmark.group = f"shm {payload.name} paced 10 Hz"
    benchmark.extra_info["mode"] = shm_link.mode
    benchmark.extra_info["target_ms"] = SHM_TARGETS_MS[payload.name]
    benchmark.pedantic(_shm_round, setup=setup, rounds=SHM_ROUNDS, warmup_rounds=SHM_WARMUP_ROUNDS)
    _assert_idle(shm_link.sub.recv)


def test_shm_targets(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    contexts: tuple[zmq.Context[zmq.Socket[bytes]], zmq.Context[zmq.Socket[bytes]]],
) -> None:
    """Report, for the 2 MB scan and the 6 MB camera frame paced at 10 Hz, the median and p99
    from publish to a usable array in each mode, and the median with the receiver's
    `wire.decode` instead, against the issue's targets (< 0.2 ms and < 0.3 ms median).

    The targets are checked on the zero-copy path (`shm-loan`); `shm-copy` and `inline` are
    reported beside it, and so is the floor under all of them: a small message (a GNSS fix,
    inline) through the same sockets at the same pace, which is what the descriptor alone costs.
    Runs only when benchmarking is enabled; never fails on timing (see
    `test_2mb_scan_ipc_target`): a missed target is printed and raised as a warning.
    """
    config = request.config
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        pytest.skip("a timing report: run with --benchmark-enable")
    lines, missed = [], False
    for mode in SHM_MODES:
        with _shm_link(mode, tmp_path / mode, contexts) as link:
            if mode == "inline":
                small = GnssFix(Header(TOPIC, 0, 1, "gnss"), 49.0, 8.4, 100.0)
                floor = []
                for _ in range(SHM_ROUNDS):
                    time.sleep(PAUSE_10HZ_S)
                    t0 = time.perf_counter()
                    link.pub.send(small, TOPIC)
                    assert link.sub.recv(RECV_TIMEOUT_MS) is not None
                    floor.append((time.perf_counter() - t0) * 1e3)
                lines.append(
                    f"floor: a GNSS fix (small, inline), ipc, 10 Hz ({len(floor)} rounds): "
                    f"publish -> receive median {statistics.median(floor):.3f} ms"
                )
            for payload in PACED:
                _check_shm_round(link, payload)
                for _ in range(SHM_WARMUP_ROUNDS):
                    time.sleep(PAUSE_10HZ_S)
                    _shm_round(link, _produce(link, payload))
                target = SHM_TARGETS_MS[payload.name]
                usable, decoded = [], []
                for i in range(SHM_TARGET_ROUNDS):
                    time.sleep(PAUSE_10HZ_S)
                    msg = _produce(link, payload)
                    t0 = time.perf_counter()
                    if i % 2:
                        _shm_round(link, msg)
                        usable.append((time.perf_counter() - t0) * 1e3)
                    else:
                        link.pub.send(msg, TOPIC)
                        frames = link.sub.recv(RECV_TIMEOUT_MS)
                        assert frames is not None
                        wire.decode(frames)
                        decoded.append((time.perf_counter() - t0) * 1e3)
                median = statistics.median(usable)
                verdict = ""
                if mode == "shm-loan":
                    missed |= median >= target
                    verdict = f"; target < {target} ms " + ("met" if median < target else "NOT met")
                lines.append(
                    f"{payload.name} {type(_message(payload)).__name__}, ipc, {mode}, 10 Hz "
                    f"({len(usable)} rounds): publish -> usable array median {median:.3f} ms, "
                    f"p99 {np.percentile(usable, 99):.3f} ms; with wire.decode ({len(decoded)} "
                    f"rounds): median {statistics.median(decoded):.3f} ms{verdict}"
                )
            _assert_idle(link.sub.recv)
    report = "\n".join(lines)
    print(f"\n{report}")
    if missed:
        warnings.warn(report, stacklevel=1)
