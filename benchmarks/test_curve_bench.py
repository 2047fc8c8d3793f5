"""What CURVE costs per message: Publisher -> Subscriber over ipc, tcp, and tcp with CURVE.

Run: `python -m pytest benchmarks/test_curve_bench.py --benchmark-enable -s` (`-s` shows the
table of `test_curve_cost_report`).

Method: as `test_transport_bench.py` (one message in flight, PUB and SUB in one thread, each
with a ZeroMQ context of its own, so two libzmq I/O threads move the bytes through a real Unix
or loopback TCP socket; the received message is compared with the sent one before any timing,
and nothing may be left over after). Every link here makes its own contexts, because a CURVE
server needs one (its ZAP authenticator is per context). With CURVE the publisher binds as the
CURVE server admitting the subscriber's public key (pyzmq's ZAP authenticator; it runs once,
at the handshake, not per message), and every message is encrypted by the sending I/O thread
and decrypted by the receiving one (libsodium's XSalsa20-Poly1305 over the whole payload).

- `test_link`: pytest-benchmark's figures per link and payload (1 KB and 64 KB messages, a
  2 MB LidarSweep: 131,072 points x 4 float32, about a full 64-beam scan), back to back.
- `test_curve_cost_report`: the three links measured in alternating blocks within one run (this
  machine's load drifts more between benchmarks than between alternating blocks), back to back
  and paced (10 ms pause before each message, as a sensor stream), the median round trip and
  the process CPU time per message (both ends are in this process, so CPU includes the
  encryption and the decryption). The cost per message is tcp + CURVE minus plain tcp.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.test_transport_bench import (
    PAUSE_S,
    PUB_HWM,
    TOPIC,
    WARMUP_ROUNDS,
    Link,
    Payload,
    _assert_idle,
    _assert_same_message,
    _message,
    _trip,
    _wait_subscribed,
)
from perception.io.curve import CurveKeys, generate_key_pair, load_curve_keys
from perception.io.transport import Publisher, Subscriber
from perception.msgs import wire
from perception.msgs.types import GnssFix, Header

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")

LINKS = ("ipc", "tcp", "tcp+curve")
PAYLOADS = (
    Payload("1KB", 1024, 3000),
    Payload("64KB", 64 * 1024, 2000),
    Payload("2MB", 2 * 1024 * 1024, 600),
)
REPORT_BLOCKS = 5  # alternating blocks per link in the report
REPORT_ROUNDS = {"1KB": 400, "64KB": 300, "2MB": 100}  # per block, back to back
REPORT_PACED_ROUNDS = 30  # per block, 2 MB only


@dataclass(frozen=True)
class Keys:
    """The publisher's (a CURVE server admitting the subscriber) and the subscriber's keys."""

    server: CurveKeys
    client: CurveKeys


def _keys(folder: Path) -> Keys:
    server_public, server_secret = generate_key_pair(folder / "server", "server")
    client_public, client_secret = generate_key_pair(folder / "client", "client")
    allowed = folder / "allowed"
    allowed.mkdir()
    shutil.copy(client_public, allowed)
    return Keys(
        load_curve_keys(server_secret, allowed_clients=allowed),
        load_curve_keys(client_secret, server_key=server_public),
    )


def _open(kind: str, folder: Path) -> Link:
    keys = _keys(folder) if kind == "tcp+curve" else None
    endpoint = f"ipc://{folder / 'bench.sock'}" if kind == "ipc" else "tcp://127.0.0.1:*"
    pub = Publisher(endpoint, hwm=PUB_HWM, curve=None if keys is None else keys.server)
    try:
        sub = Subscriber([pub.last_endpoint], [TOPIC], curve=None if keys is None else keys.client)
    except BaseException:
        pub.close()
        raise
    probe = GnssFix(Header(TOPIC, 0, 1, "gnss"), 49.0, 8.4, 100.0)
    _wait_subscribed(lambda: pub.send(probe, TOPIC), sub.recv)
    return Link(pub, sub)


def _close(link: Link) -> None:
    link.sub.close()
    link.pub.close()


@pytest.fixture(scope="module", params=LINKS)
def link(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Link]:
    opened = _open(request.param, tmp_path_factory.mktemp("curve"))
    yield opened
    _close(opened)


@pytest.mark.parametrize("payload", PAYLOADS, ids=[p.name for p in PAYLOADS])
def test_link(benchmark: BenchmarkFixture, link: Link, payload: Payload) -> None:
    msg = _message(payload)
    _assert_same_message(_trip(link, msg), msg)
    benchmark.group = f"curve {payload.name}"
    benchmark.extra_info["wire_bytes"] = sum(memoryview(f).nbytes for f in wire.encode(msg))
    benchmark.pedantic(_trip, args=(link, msg), rounds=payload.rounds, warmup_rounds=WARMUP_ROUNDS)
    _assert_idle(link.sub.recv)
    assert link.pub.rejected_peers == 0 and link.sub.rejected_peers == 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _block(link: Link, payload: Payload, rounds: int, pause_s: float) -> tuple[list[float], float]:
    """`rounds` round trips (ms each) and the CPU seconds they took (pauses excluded)."""
    msg = _message(payload)
    times: list[float] = []
    cpu = 0.0
    for _ in range(rounds):
        if pause_s:
            time.sleep(pause_s)
        c0, t0 = _cpu_s(), time.perf_counter()
        _trip(link, msg)
        times.append((time.perf_counter() - t0) * 1e3)
        cpu += _cpu_s() - c0
    return times, cpu


def test_curve_cost_report(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Median round trip and CPU per message of each link, alternating blocks; prints a table
    and the CURVE cost per message (tcp + CURVE minus tcp). Never fails on timing."""
    config = request.config
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        pytest.skip("a timing report: run with --benchmark-enable")
    links = {kind: _open(kind, tmp_path / kind.replace("+", "_")) for kind in LINKS}
    cases = [(p, REPORT_ROUNDS[p.name], 0.0, "") for p in PAYLOADS]
    cases.append((PAYLOADS[-1], REPORT_PACED_ROUNDS, PAUSE_S, ", paced"))
    rows: list[str] = []
    try:
        for payload, rounds, pause_s, note in cases:
            msg = _message(payload)
            for link in links.values():
                _assert_same_message(_trip(link, msg), msg)
                for _ in range(WARMUP_ROUNDS):
                    _trip(link, msg)
            times: dict[str, list[float]] = {k: [] for k in links}
            cpu: dict[str, float] = dict.fromkeys(links, 0.0)
            for _ in range(REPORT_BLOCKS):
                for kind, link in links.items():
                    block, block_cpu = _block(link, payload, rounds, pause_s)
                    times[kind] += block
                    cpu[kind] += block_cpu
            n = rounds * REPORT_BLOCKS
            median = {k: statistics.median(v) for k, v in times.items()}
            cpu_ms = {k: cpu[k] / n * 1e3 for k in links}
            cells = " | ".join(f"{median[k]:.3f} / {cpu_ms[k]:.3f}" for k in LINKS)
            cost = median["tcp+curve"] - median["tcp"]
            cost_cpu = cpu_ms["tcp+curve"] - cpu_ms["tcp"]
            rows.append(
                f"| {payload.name}{note} | {cells} | {cost:+.3f} / {cost_cpu:+.3f} "
                f"({median['tcp+curve'] / median['tcp']:.2f}x) |"
            )
        for link in links.values():
            _assert_idle(link.sub.recv)
            assert link.pub.rejected_peers == 0 and link.sub.rejected_peers == 0
    finally:
        for link in links.values():
            _close(link)
    header = (
        "| payload | ipc | tcp | tcp + CURVE | CURVE cost per message |\n"
        "| --- | --- | --- | --- | --- |"
    )
    print(
        f"\nmedian round trip ms / CPU ms per message, {REPORT_BLOCKS} alternating blocks:\n"
        f"{header}\n" + "\n".join(rows)
    )
