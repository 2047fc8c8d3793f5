"""Transport over real ZeroMQ sockets (ipc:// and tcp://), no mocks.

PUB/SUB drops what is sent before a subscription reaches the publisher (slow joiner), so tests
send repeatedly until the first message arrives, within a bounded number of tries.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from perception.errors import TransportError, WireError
from perception.io.runtime import endpoint_problem, tcp_endpoint_problem
from perception.io.transport import (
    MAX_SUBSCRIPTION_BYTES,
    PRIORITY_STREAK,
    Publisher,
    ReceivedFrame,
    Subscriber,
    default_endpoint,
)
from perception.msgs import wire
from perception.msgs.schema import WireLimits
from perception.msgs.types import GnssFix, Header, LidarSweep, Message

TRIES = 200  # x 25 ms: 5 s at most for a connection to come up


def big_sweep(stream: str = "lidar/top", n: int = 131_072) -> LidarSweep:
    rng = np.random.default_rng(0)
    points = rng.standard_normal((n, 4)).astype(np.float32)  # n x 16 bytes: 2 MiB
    return LidarSweep(Header(stream, 7, 123, "lidar"), points, np.arange(n, dtype=np.int64))


def fix(stream: str = "gnss", seq: int = 0) -> GnssFix:
    return GnssFix(Header(stream, seq, 1, "gnss"), 49.0, 8.4, 100.0)


def send_until_received(
    pub: Publisher, sub: Subscriber, msg: Message, topic: str | None = None
) -> list[ReceivedFrame]:
    for _ in range(TRIES):
        pub.send(msg, topic)
        frames = sub.recv(timeout_ms=25)
        if frames is not None:
            return frames
    pytest.fail(f"nothing arrived on {sub.endpoints} after {TRIES} sends")


@pytest.fixture
def ipc_endpoint(tmp_path: Path) -> str:
    # The nested directory does not exist yet: binding must create it.
    return f"ipc://{tmp_path}/sockets/node.sock"


@pytest.fixture
def tcp_publisher() -> Iterator[Publisher]:
    with Publisher("tcp://127.0.0.1:*") as pub:
        yield pub


@pytest.mark.parametrize("scheme", ["ipc", "tcp"])
def test_big_sweep_arrives_intact_without_copy(scheme: str, ipc_endpoint: str) -> None:
    endpoint = ipc_endpoint if scheme == "ipc" else "tcp://127.0.0.1:*"
    msg = big_sweep()
    with Publisher(endpoint) as pub, Subscriber([pub.last_endpoint], ["lidar/top"]) as sub:
        frames = send_until_received(pub, sub, msg)
        topic, out = wire.decode(frames)
    assert topic == "lidar/top"
    assert isinstance(out, LidarSweep)
    assert out.header == msg.header
    np.testing.assert_array_equal(out.points, msg.points)
    assert out.point_time_offsets_ns is not None
    np.testing.assert_array_equal(out.point_time_offsets_ns, msg.point_time_offsets_ns)
    # Zero-copy decode: the array is a view of the received frame's memory.
    assert not out.points.flags.owndata
    assert np.shares_memory(out.points, np.frombuffer(frames[2].buffer, np.uint8))


def test_ipc_bind_creates_parent_directory(ipc_endpoint: str) -> None:
    with Publisher(ipc_endpoint):
        assert Path(ipc_endpoint.removeprefix("ipc://")).parent.is_dir()


def test_topic_prefix_mismatch_filtered(tcp_publisher: Publisher) -> None:
    pub = tcp_publisher
    with Subscriber([pub.last_endpoint], ["camera/front"]) as sub:
        send_until_received(pub, sub, fix("camera/front"), "camera/front")
        for seq in range(5):
            pub.send(fix(seq=seq), "camera/front_left")
        pub.send(fix(seq=99), "camera/front")
        frames = sub.recv(timeout_ms=2000)
        assert frames is not None
        topic, msg = wire.decode(frames)
        assert topic == "camera/front"
        assert msg.header.seq == 99
        assert sub.recv(timeout_ms=50) is None


def test_one_subscriber_many_topics(tcp_publisher: Publisher) -> None:
    pub = tcp_publisher
    with Subscriber([pub.last_endpoint], ["gnss", "camera/front"]) as sub:
        send_until_received(pub, sub, fix("gnss"))
        send_until_received(pub, sub, fix("camera/front"))
        pub.send(fix("gnss", 1))
        pub.send(fix("camera/front", 2))
        pub.send(fix("other", 3))
        got = set()
        for _ in range(2):
            frames = sub.recv(timeout_ms=2000)
            assert frames is not None
            got.add(wire.decode(frames)[0])
        assert got == {"gnss", "camera/front"}
        assert sub.recv(timeout_ms=50) is None


def test_max_message_size_drops_oversize(tcp_publisher: Publisher) -> None:
    pub = tcp_publisher
    small = LidarSweep(Header("lidar/top", 0, 1, "lidar"), np.zeros((4, 4), np.float32))
    limits = WireLimits(max_message_bytes=1_000_000)
    with Subscriber([pub.last_endpoint], ["lidar/top"], limits=limits) as sub:
        send_until_received(pub, sub, small)
        pub.send(big_sweep())  # 2 MiB buffer > 1 MB: ZeroMQ drops it (and the connection)
        # The subscriber reconnects: small sweeps get through again, the big one never does.
        frames = send_until_received(pub, sub, small)
        _, out = wire.decode(frames)
        assert isinstance(out, LidarSweep) and out.points.shape == (4, 4)
        while (more := sub.recv(timeout_ms=50)) is not None:
            _, out = wire.decode(more)
            assert isinstance(out, LidarSweep) and out.points.shape == (4, 4)


def test_per_topic_high_water_marks(tcp_publisher: Publisher) -> None:
    hwm = {"lidar/top": 2, "camera/front": 5}
    with Subscriber(
        [tcp_publisher.last_endpoint], ["lidar/top", "camera/front", "gnss"], hwm=hwm
    ) as sub:
        assert sub.socket_for("lidar/top").getsockopt(zmq.RCVHWM) == 2
        assert sub.socket_for("camera/front").getsockopt(zmq.RCVHWM) == 5
        assert sub.socket_for("gnss").getsockopt(zmq.RCVHWM) == 10
        assert sub.socket_for("gnss").getsockopt(zmq.MAXMSGSIZE) == 32 * 1024 * 1024
        assert sub.socket_for("gnss") is not sub.socket_for("lidar/top")
    with Publisher("tcp://127.0.0.1:*", hwm=3) as pub:
        assert pub.socket.getsockopt(zmq.SNDHWM) == 3


def test_hwm_mapping_must_name_subscribed_topics() -> None:
    with pytest.raises(ValueError, match="not subscribed"):
        Subscriber(["tcp://127.0.0.1:5"], ["a"], hwm={"b": 3})


def test_send_never_blocks_without_subscribers() -> None:
    with Publisher("tcp://127.0.0.1:*", hwm=1) as pub:
        for seq in range(2000):
            pub.send(fix(seq=seq))


def test_recv_times_out(tcp_publisher: Publisher) -> None:
    with Subscriber([tcp_publisher.last_endpoint], ["nothing"]) as sub:
        assert sub.recv(timeout_ms=20) is None


def test_bind_in_use_raises_transport_error(tcp_publisher: Publisher) -> None:
    endpoint = tcp_publisher.last_endpoint
    with pytest.raises(TransportError, match=rf"^{endpoint}: cannot bind"):
        Publisher(endpoint)


@pytest.mark.parametrize(
    "endpoint", ["bogus://nowhere", "tcp://not a host", "tcp://127.0.0.1:99999", "tcp://127.0.0.1"]
)
def test_bad_endpoint_raises_transport_error(endpoint: str) -> None:
    with pytest.raises(TransportError, match=endpoint):
        Publisher(endpoint)
    with pytest.raises(TransportError, match=endpoint):
        Subscriber([endpoint], ["x"])


def test_a_tcp_port_past_65535_is_refused_not_wrapped() -> None:
    """libzmq took port 99999 without a word and bound another port."""
    with pytest.raises(TransportError, match=r"port '99999' is not a TCP port \(0-65535, or \*\)"):
        Publisher("tcp://127.0.0.1:99999")
    assert tcp_endpoint_problem("tcp://[::1]:5555") is None
    assert tcp_endpoint_problem("tcp://*:*") is None
    assert tcp_endpoint_problem("ipc:///tmp/x:99999") is None
    assert tcp_endpoint_problem("tcp://host:-1") == "port '-1' is not a TCP port (0-65535, or *)"


def test_a_misspelt_placeholder_and_a_connect_to_port_0_are_refused() -> None:
    """`ipc://{runtme}/sensors` made a folder named `{runtme}` and met no one; a connect to
    tcp port 0 or * waited for ever: both without a word."""
    with pytest.raises(TransportError, match=r"\{runtme\} is no placeholder"):
        Publisher("ipc://{runtme}/sensors")
    for port in ("0", "*"):
        with pytest.raises(TransportError, match=rf"port {re.escape(port)} picks a free port"):
            Subscriber([f"tcp://127.0.0.1:{port}"], ["x"])
    assert endpoint_problem("ipc://{runtime}/sensors") is None
    assert endpoint_problem("tcp://127.0.0.1:0") is None  # bound: any free port
    assert endpoint_problem("tcp://127.0.0.1:5555", connect=True) is None


@pytest.mark.parametrize("host", ["999.1.1.1", "1.2.3", "010.1.1.1", "10.0.0.1;300.1.1.1"])
def test_a_tcp_host_of_numbers_that_is_no_ipv4_address_is_refused(host: str) -> None:
    """libzmq took 999.1.1.1 for a name: `perception echo` then waited for ever without a word
    (1.2.3 and 010.1.1.1 it reads as 1.2.0.3 and 8.1.1.1)."""
    bad = host.rsplit(";", maxsplit=1)[-1]
    problem = f"host '{bad}' is not an IPv4 address (four numbers from 0 to 255)"
    assert tcp_endpoint_problem(f"tcp://{host}:5555") == problem
    with pytest.raises(TransportError, match=re.escape(problem)):
        Subscriber([f"tcp://{host}:5555"], ["x"])
    for good in ("127.0.0.1", "localhost", "eth0", "*", "[::1]", "192.168.1.17:5555;192.168.1.1"):
        assert tcp_endpoint_problem(f"tcp://{good}:5555") is None


def test_shared_context_not_terminated(tcp_publisher: Publisher) -> None:
    context = zmq.Context()
    try:
        with Subscriber([tcp_publisher.last_endpoint], ["gnss"], context=context):
            pass
        assert not context.closed
    finally:
        context.term()


def test_bound_subscriber_receives_from_connected_publisher(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/in.sock"
    with (
        Subscriber([endpoint], ["gnss", "camera/front"], bind=True) as sub,
        Publisher(endpoint, bind=False) as pub,
    ):
        frames = send_until_received(pub, sub, fix("gnss"))
        assert wire.decode(frames)[0] == "gnss"
        pub.send(fix("gnss_extra"))
        assert sub.recv(timeout_ms=50) is None


def test_default_endpoint_binds() -> None:
    endpoint = default_endpoint(f"test/{uuid.uuid4().hex}")
    assert endpoint.startswith(f"ipc://{tempfile.gettempdir()}/")
    path = Path(endpoint.removeprefix("ipc://"))
    try:
        with Publisher(endpoint), Subscriber([endpoint], ["gnss"]):
            assert path.exists()
    finally:
        path.unlink(missing_ok=True)


def test_invalid_message_not_sent(tcp_publisher: Publisher) -> None:
    bad = LidarSweep(Header("lidar/top", 0, -1, "lidar"), np.zeros((1, 4), np.float32))
    with pytest.raises(WireError, match="must not be negative"):
        tcp_publisher.send(bad)


def test_closed_publisher_raises(tcp_publisher: Publisher) -> None:
    tcp_publisher.close()
    tcp_publisher.close()  # idempotent
    with pytest.raises(TransportError, match="closed"):
        tcp_publisher.send_frames([b"x", b"y"])


def test_priority_topics_are_taken_before_waiting_messages_of_others(ipc_endpoint: str) -> None:
    with (
        Publisher(ipc_endpoint, bind=True) as pub,
        Subscriber([ipc_endpoint], ["lidar/top", "gnss"], priority=["gnss"], hwm=100) as sub,
    ):
        send_until_received(pub, sub, fix("lidar/top"), "lidar/top")
        send_until_received(pub, sub, fix("gnss"), "gnss")
        leftovers = 0
        while sub.recv(timeout_ms=50) is not None:
            leftovers += 1  # what the joining sends left behind
        for seq in range(20):
            pub.send(fix("lidar/top", seq), "lidar/top")
        pub.send(fix("gnss", 99), "gnss")
        # Both sockets hold messages once the last one is in.
        assert sub.socket_for("lidar/top").poll(2000) and sub.socket_for("gnss").poll(2000)
        topic, first = wire.decode(sub.recv(timeout_ms=1000) or [])
        assert topic == "gnss" and first.header.seq == 99


def test_priority_must_name_subscribed_topics(ipc_endpoint: str) -> None:
    with pytest.raises(ValueError, match="priority names topics that are not subscribed"):
        Subscriber([ipc_endpoint], ["lidar/top"], priority=["rig"])


def test_a_priority_flood_does_not_starve_other_topics(ipc_endpoint: str) -> None:
    with (
        Publisher(ipc_endpoint, bind=True, hwm=1000) as pub,
        Subscriber([ipc_endpoint], ["lidar/top", "rig"], priority=["rig"], hwm=1000) as sub,
    ):
        send_until_received(pub, sub, fix("lidar/top"), "lidar/top")
        send_until_received(pub, sub, fix("rig"), "rig")
        while sub.recv(timeout_ms=50) is not None:
            pass  # what the joining sends left behind
        for seq in range(3 * PRIORITY_STREAK):
            pub.send(fix("rig", seq), "rig")
        pub.send(fix("lidar/top", 7), "lidar/top")
        assert sub.socket_for("lidar/top").poll(2000) and sub.socket_for("rig").poll(2000)
        topics = [
            wire.decode(sub.recv(timeout_ms=1000) or [])[0] for _ in range(2 * PRIORITY_STREAK)
        ]
        # The priority topic goes first, at most PRIORITY_STREAK times in a row (the joining
        # above may have begun the streak), then the waiting sweep.
        assert 1 <= topics.index("lidar/top") <= PRIORITY_STREAK, topics
        assert topics.count("lidar/top") == 1


class Refusals:
    """What a Subscriber reports through its callbacks."""

    def __init__(self) -> None:
        self.refused: list[WireError] = []
        self.disconnects: list[str] = []


def _bounded_subscriber(endpoint: str, limits: WireLimits, seen: Refusals) -> Subscriber:
    return Subscriber(
        [endpoint],
        ["lidar/top"],
        limits=limits,
        on_refused=seen.refused.append,
        on_disconnect=seen.disconnects.append,
    )


def _frames_of(msg: Message) -> list[bytes]:
    return [bytes(f) for f in wire.encode(msg)]


def test_a_message_with_too_many_frames_is_refused_while_receiving(
    tcp_publisher: Publisher,
) -> None:
    seen = Refusals()
    small = fix("lidar/top")
    with _bounded_subscriber(tcp_publisher.last_endpoint, WireLimits(max_frames=8), seen) as sub:
        send_until_received(tcp_publisher, sub, small, "lidar/top")
        good = _frames_of(small)
        tcp_publisher.send_frames([*good, *[b"x" * 1000] * 20])  # 22 frames
        tcp_publisher.send_frames(good)
        frames = sub.recv(timeout_ms=2000)
        assert frames is not None and wire.decode(frames)[0] == "lidar/top"
        assert [str(e) for e in seen.refused] == [
            "lidar/top: too many frames: 22, above the limit of 8 (refused while receiving)"
        ]
        assert seen.disconnects == []


def test_a_message_above_the_byte_limit_is_refused_while_receiving(
    tcp_publisher: Publisher,
) -> None:
    seen = Refusals()
    limits = WireLimits(max_message_bytes=1_000_000)
    small = fix("lidar/top")
    with _bounded_subscriber(tcp_publisher.last_endpoint, limits, seen) as sub:
        send_until_received(tcp_publisher, sub, small, "lidar/top")
        good = _frames_of(small)
        # Each frame is under ZeroMQ's per-frame limit, the message is not.
        tcp_publisher.send_frames([*good, *[b"x" * 400_000] * 3])
        tcp_publisher.send_frames(good)
        frames = sub.recv(timeout_ms=2000)
        assert frames is not None and wire.decode(frames)[0] == "lidar/top"
        (error,) = seen.refused
        assert error.stream == "lidar/top"
        size = sum(len(f) for f in good) + 1_200_000
        assert error.problem == (
            f"oversize message: {size} bytes in 5 frames, above the limit of 1000000 "
            "(refused while receiving)"
        )
        assert sub.socket_for("lidar/top").getsockopt(zmq.MAXMSGSIZE) == 1_000_000


def test_a_frame_above_the_byte_limit_costs_the_connection_which_comes_back(
    ipc_endpoint: str,
) -> None:
    seen = Refusals()
    with (
        Publisher(ipc_endpoint) as pub,
        _bounded_subscriber(ipc_endpoint, WireLimits(max_message_bytes=1_000_000), seen) as sub,
    ):
        small = fix("lidar/top")
        send_until_received(pub, sub, small, "lidar/top")
        pub.send_frames([b"lidar/top", b"h", b"x" * 2_000_000])  # ZeroMQ refuses the frame
        frames = send_until_received(pub, sub, small, "lidar/top")
        assert wire.decode(frames)[0] == "lidar/top"
        assert seen.disconnects == [ipc_endpoint]
        assert seen.refused == []  # ZeroMQ dropped it before anything was read


def test_messages_on_other_topics_are_not_reported(tcp_publisher: Publisher) -> None:
    seen = Refusals()
    with _bounded_subscriber(tcp_publisher.last_endpoint, WireLimits(max_frames=2), seen) as sub:
        send_until_received(tcp_publisher, sub, fix("lidar/top"), "lidar/top")
        tcp_publisher.send_frames([b"lidar/top_extra", *[b"x"] * 10])
        assert sub.recv(timeout_ms=100) is None
        assert seen.refused == []


def pending_then_oversize(endpoint: str) -> None:
    """A message waiting in the subscriber's queue when a frame above the limit costs the
    connection: the subscriber reconnects (zmq_disconnect + connect) and must take the waiting
    message whole first. Run in a child process: before the fix libzmq aborted it (`Assertion
    failed: !_more (src/fq.cpp:80)`) when the message was read across the disconnect."""
    seen = Refusals()
    limits = WireLimits(max_message_bytes=1_000_000)
    with (
        Publisher(endpoint, hwm=1000) as pub,
        Subscriber(
            [endpoint],
            ["lidar/top", "camera/front"],
            limits=limits,
            on_disconnect=seen.disconnects.append,
        ) as sub,
    ):
        send_until_received(pub, sub, fix("camera/front"), "camera/front")
        while sub.recv(timeout_ms=50) is not None:
            pass
        pub.send_frames([b"camera/front", b"header", *[b"x" * 400_000] * 2])  # waiting, whole
        pub.send_frames([b"camera/front", b"header", b"x" * 2_000_000])  # costs the connection
        got: list[int] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (got and seen.disconnects):
            if (frames := sub.recv(timeout_ms=50)) is not None:
                got.append(len(frames))
        assert seen.disconnects and got[:1] == [4], (seen.disconnects, got)
        frames = send_until_received(pub, sub, fix("camera/front"), "camera/front")
        assert wire.decode(frames)[0] == "camera/front"


def test_a_message_waiting_when_the_connection_drops_is_taken_whole(tmp_path: Path) -> None:
    code = (
        "import sys; from tests.perception.io.test_transport import pending_then_oversize; "
        "pending_then_oversize(sys.argv[1])"
    )
    for i in range(5):
        endpoint = f"ipc://{tmp_path}/drop{i}.sock"
        child = subprocess.run(
            [sys.executable, "-c", code, endpoint],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stdout + child.stderr


def test_a_subscription_above_the_limit_costs_its_connection(ipc_endpoint: str) -> None:
    """A publisher takes its subscribers' subscriptions whole and matches them as it sends: one
    of 100 MiB stalled the node's worker until its watchdog ended the process."""
    topic = b"y" * (MAX_SUBSCRIPTION_BYTES + 1)
    with Publisher(ipc_endpoint) as pub, zmq.Context() as ctx:
        hostile, control = ctx.socket(zmq.XSUB), ctx.socket(zmq.XSUB)
        for sock, subscription in ((hostile, topic), (control, topic[:100])):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 25)
            sock.connect(ipc_endpoint)
            sock.send(b"\x01" + subscription)
        got: dict[str, int] = {"hostile": 0, "control": 0}
        for _ in range(40):
            pub.send_frames([topic + b"z", b"h"])
            for name, sock in (("hostile", hostile), ("control", control)):
                with contextlib.suppress(zmq.Again):
                    sock.recv_multipart()
                    got[name] += 1
        hostile.close()
        control.close()
    assert got["control"] > 0 and got["hostile"] == 0, got


def test_a_peer_that_closes_every_connection_is_not_reconnected_in_a_spin() -> None:
    """A peer that accepts and closes each connection was reconnected to at once, every time:
    4,000 reconnections a second, a whole core."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stop = threading.Event()

    def accept_and_close() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.close()

    closer = threading.Thread(target=accept_and_close)
    closer.start()
    seen = Refusals()
    endpoint = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    try:
        with _bounded_subscriber(endpoint, WireLimits(), seen) as sub:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                sub.recv(timeout_ms=50)
    finally:
        stop.set()
        closer.join()
        server.close()
    # One reconnection each 100 ms at most (a few more at the start: libzmq's own tries).
    assert 1 <= len(seen.disconnects) <= 30, len(seen.disconnects)
