"""What a message costs from one process to another on this host, paced at 10 Hz (#17's
transport targets: a 2 MB scan < 0.2 ms and a 6 MB camera frame < 0.3 ms from publish to a
usable array).

    python -m benchmarks.transport_floor [--rounds 200]

`benchmarks/test_transport_bench.py` times both ends in one thread (one clock, no hand-off);
this puts the receiver in a process of its own, as the node is, and takes the receive instant
there on the same monotonic clock (CLOCK_MONOTONIC is the host's): the sender stores its
instant in a shared integer just before it sends, the receiver reads it once the message is
usable (rounds are 100 ms apart, so it is never overwritten in between). Four paths:

- a Unix datagram of 8 bytes: the kernel's floor, one wake-up of the receiving process;
- ZeroMQ PUB/SUB over ipc, 8 bytes: that plus libzmq's I/O thread at each end;
- the node's `Publisher` / `Subscriber` over ipc with a GNSS fix (inline): that plus encoding,
  validation and the subscriber's poll;
- the same with the 2 MB scan and the 6 MB camera frame loaned into shared memory (the producer
  wrote them into the slot outside the timing): the receiver's usable array is a view of the
  slot, checked intact after the view is made.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import socket
import struct
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from benchmarks.test_transport_bench import PACED, TOPIC, _message, _payload_array
from perception.io.shm import ShmConfig, payload_intact
from perception.io.transport import Publisher, Subscriber
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep

PAUSE_S = 0.1
#: Messages sent first and not timed (the subscription settling, caches warming).
WARMUP = 20


def _datagram_receiver(path: str, rounds: int, ready: Any, out: Any) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        ready.put(True)
        times = []
        for _ in range(rounds):
            data = s.recv(64)
            times.append(time.monotonic_ns() - struct.unpack("q", data)[0])
        out.put(times)


def _zmq_receiver(endpoint: str, rounds: int, ready: Any, out: Any) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    with ctx.socket(zmq.SUB) as s:
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(endpoint)
        ready.put(True)
        times: list[int] = []
        while len(times) < rounds:
            sent = struct.unpack("q", s.recv())[0]
            if sent > 0:  # not a warm-up message
                times.append(time.monotonic_ns() - sent)
        out.put(times)
    ctx.term()


def _node_receiver(
    endpoint: str, total: int, sent: Synchronized[int], ready: Any, out: Any
) -> None:
    """(payload bytes, ns) per message through the node's Subscriber, 0 bytes for inline."""
    with Subscriber([endpoint], [TOPIC]) as sub:
        ready.put(True)
        times: list[tuple[int, int]] = []
        while len(times) < total:
            frames = sub.recv(5000)
            if frames is None:
                break
            size = 0
            if len(frames) > 2:
                # The usable array: a view of the slot, then the seqlock's second check.
                array = np.frombuffer(frames[2].buffer, np.uint8)
                size = array.nbytes
                if not payload_intact(frames):
                    raise RuntimeError("a slot was recycled during a round")
            times.append((size, time.monotonic_ns() - sent.value))
        out.put(times)


def _start(target: Any, *args: Any) -> tuple[mp.Process, Any]:
    ready: Any = mp.Queue()
    out: Any = mp.Queue()
    process = mp.Process(target=target, args=(*args, ready, out))
    process.start()
    ready.get(timeout=30)
    return process, out


def _loaned(pub: Publisher, msg: Any) -> Any:
    source = _payload_array(msg)
    slot = pub.loan(TOPIC, source.shape, source.dtype)
    slot[...] = source
    if isinstance(msg, LidarSweep):
        return dataclasses.replace(msg, points=slot)
    assert isinstance(msg, CameraFrame)
    return dataclasses.replace(msg, image=slot)


def _line(name: str, ns: Sequence[int]) -> str:
    median, p90, most = np.percentile(ns, [50, 90, 100]) / 1e3
    return f"| {name} | {len(ns)} | {median:.0f} | {p90:.0f} | {most:.0f} |"


def run(rounds: int) -> list[str]:
    lines = [
        f"one way, process to process, paced at {1 / PAUSE_S:g} Hz, {rounds} rounds each, us",
        "",
        "| path | rounds | median | p90 | max |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "datagram.sock")
        process, out = _start(_datagram_receiver, path, rounds)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for _ in range(rounds):
                time.sleep(PAUSE_S)
                s.sendto(struct.pack("q", time.monotonic_ns()), path)
        lines.append(_line("Unix datagram, 8 bytes", out.get(timeout=30)))
        process.join()

        endpoint = f"ipc://{Path(tmp) / 'zmq.sock'}"
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        with ctx.socket(zmq.PUB) as pub:
            pub.bind(endpoint)
            process, out = _start(_zmq_receiver, endpoint, rounds)
            for _ in range(WARMUP):
                time.sleep(PAUSE_S / 2)
                pub.send(struct.pack("q", 0))
            for _ in range(rounds):
                time.sleep(PAUSE_S)
                pub.send(struct.pack("q", time.monotonic_ns()))
            lines.append(_line("ZeroMQ PUB/SUB ipc, 8 bytes", out.get(timeout=30)))
            process.join()
        ctx.term()

        sent: Synchronized[int] = mp.Value("q", 0)
        endpoint = f"ipc://{Path(tmp) / 'node.sock'}"
        fix = GnssFix(Header(TOPIC, 0, 1, "gnss"), 49.0, 8.4, 100.0)
        with Publisher(endpoint, hwm=4, shm=ShmConfig()) as node_pub:
            total = WARMUP + rounds * (1 + len(PACED))
            process, out = _start(_node_receiver, node_pub.last_endpoint, total, sent)
            for _ in range(WARMUP):
                time.sleep(PAUSE_S / 2)
                sent.value = time.monotonic_ns()
                node_pub.send(fix, TOPIC)
            for payload in (None, *PACED):
                for _ in range(rounds):
                    time.sleep(PAUSE_S)
                    msg = fix if payload is None else _loaned(node_pub, _message(payload))
                    sent.value = time.monotonic_ns()
                    node_pub.send(msg, TOPIC)
            times = out.get(timeout=60)[WARMUP:]
            process.join()
        names = {0: "node Publisher -> Subscriber, GNSS fix inline"}
        for payload in PACED:
            msg = _message(payload)
            names[_payload_array(msg).nbytes] = (
                f"node Publisher -> Subscriber, {payload.name} {type(msg).__name__} loaned "
                "(shared memory) -> usable array"
            )
        for size, name in names.items():
            lines.append(_line(name, [t for s, t in times if s == size]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds per path (>= 1)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds: must be >= 1, got {args.rounds}")
    print("\n".join(run(args.rounds)))


if __name__ == "__main__":
    main()
