"""The node's Prometheus endpoint (perception.node.metrics), scraped over HTTP."""

from __future__ import annotations

import math
import socket
import time

import pytest

from perception.config import MetricsConfig
from perception.errors import TransportError
from perception.msgs.types import DetectionList, Diagnostics, Header, SensorStatus
from perception.node import NodeCounters
from perception.node.metrics import MAX_CLIENTS, READ_TIMEOUT_S, NodeMetrics
from perception.node.view import ViewStats
from tests.scrape import scrape

S = 1_000_000_000


def _diagnostics(stamp_ns: int, received: int) -> Diagnostics:
    counters = NodeCounters(received=received, decode_errors=2, stale_payloads=1,
                            skipped_bundles=4, budget_overruns=3, consecutive_overruns=1,
                            calibration_ns=S // 2, calibration_cpu_ns=S // 4).scalars()  # fmt: skip
    return Diagnostics(
        Header("diagnostics", 0, stamp_ns, ""),
        counters=counters,
        overruns_by_stage={"fusion": 3},
        sync={
            "bundles": 9,
            "late_messages": 5,
            "dropped_cameras_queue_full": 1,
            "dropped_sweeps_queue_full": 2,
        },
        sensors=(
            SensorStatus("lidar/top", True, 10.0, 10.0, 40, 0, stamp_ns - S // 10),
            SensorStatus("camera/front", False, 0.0, 10.0, 0, 0, None),
        ),
        status="degraded",
    )


@pytest.fixture
def metrics():
    m = NodeMetrics(
        MetricsConfig(enabled=True, port=0),
        ViewStats(offered=7, dropped=2, refused_clients=3, oversized_clients=1),
    )
    m.start()
    yield m
    m.close()


def test_histograms_counters_and_liveness(metrics: NodeMetrics) -> None:
    for fusion_ms in (1, 3, 40):
        timings = {"fusion": fusion_ms * 1_000_000, "publish": 200_000}
        dl = DetectionList(Header("detections", 0, 1, "vehicle"), (), timings, latency_ns=S // 20)
        metrics.observe(dl)
    before = scrape(metrics.url)
    assert before[("perception_stage_duration_seconds_count", (("stage", "fusion"),))] == 3
    bucket = ("perception_stage_duration_seconds_bucket", (("le", "0.005"), ("stage", "fusion")))
    assert before[bucket] == 2
    assert before[("perception_latency_seconds_sum", ())] == pytest.approx(0.15)
    assert ("perception_received_total", ()) not in before  # no diagnostics yet
    assert before[("perception_view_dropped_total", ())] == 2
    assert before[("perception_view_refused_clients_total", ())] == 3
    assert before[("perception_view_timed_out_clients_total", ())] == 0
    assert before[("perception_view_oversized_clients_total", ())] == 1

    metrics.update(_diagnostics(100 * S, received=50))
    got = scrape(metrics.url)
    assert got[("perception_received_total", ())] == 50
    assert got[("perception_skipped_bundles_total", ())] == 4
    assert got[("perception_budget_overruns_total", ())] == 3
    assert got[("perception_consecutive_overruns", ())] == 1
    assert got[("perception_calibration_seconds_total", ())] == 0.5
    assert got[("perception_calibration_cpu_seconds_total", ())] == 0.25
    dropped = {
        dict(k[1])["reason"]: v for k, v in got.items() if k[0] == "perception_dropped_total"
    }
    assert dropped["decode_error"] == 2 and dropped["stale_payload"] == 1
    assert dropped["late"] == 5 and dropped["queue_full"] == 3
    assert got[("perception_stage_overruns_total", (("stage", "fusion"),))] == 3
    assert got[("perception_sync_total", (("event", "bundles"),))] == 9
    assert got[("perception_sensor_alive", (("stream", "lidar/top"),))] == 1
    assert got[("perception_sensor_alive", (("stream", "camera/front"),))] == 0
    age = got[("perception_sensor_last_message_age_seconds", (("stream", "lidar/top"),))]
    assert 0.1 <= age < 1.0
    never = ("perception_sensor_last_message_age_seconds", (("stream", "camera/front"),))
    assert math.isnan(got[never])
    assert got[("perception_inputs_status", (("status", "degraded"),))] == 1
    assert got[("perception_inputs_status", (("status", "ok"),))] == 0
    # The calibration monitor is off here: no family of its own.
    assert not any(name.startswith("perception_calibration_") and labels for name, labels in got)

    metrics.update(_diagnostics(101 * S, received=80))
    assert scrape(metrics.url)[("perception_received_total", ())] == 80


def test_two_nodes_in_one_process_have_registries_of_their_own(metrics: NodeMetrics) -> None:
    other = NodeMetrics(MetricsConfig(enabled=True, port=0))
    other.start()
    try:
        other.update(_diagnostics(S, received=1))
        metrics.update(_diagnostics(S, received=2))
        assert scrape(other.url)[("perception_received_total", ())] == 1
        assert scrape(metrics.url)[("perception_received_total", ())] == 2
    finally:
        other.close()


def test_a_port_in_use_is_one_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TransportError, match=rf"metrics: cannot serve on 127\.0\.0\.1:{port}"):
            NodeMetrics(MetricsConfig(enabled=True, port=port)).start()


def test_connections_beyond_the_cap_are_refused_and_a_silent_one_times_out(
    metrics: NodeMetrics, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Each connection held a thread and its request without bound: 200 held ones, closed
    together, were served at once in the node's process and its watchdog ended the node. Each
    one timed out then printed a traceback on the node's stderr; now they are counted and said
    at a bounded rate."""
    held = []
    try:
        for _ in range(MAX_CLIENTS):
            conn = socket.create_connection(("127.0.0.1", metrics.port), timeout=10)
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never ended
            held.append(conn)
        time.sleep(0.3)  # every one has its thread
        extra = socket.create_connection(("127.0.0.1", metrics.port), timeout=10)
        assert extra.recv(1) == b""  # closed at once, unanswered
        extra.close()
        assert metrics.refused_clients == 1
        # A connection that never finishes its request is dropped after the read timeout.
        started = time.monotonic()
        assert held[0].recv(1 << 16) == b""
        assert time.monotonic() - started < READ_TIMEOUT_S + 2
    finally:
        for conn in held:
            conn.close()
    # The slots come back: a scrape is answered again.
    time.sleep(0.3)
    assert ("perception_latency_seconds_count", ()) in scrape(metrics.url)
    assert metrics.failed_requests >= 1  # the first, at least: the rest were closed by then
    assert "Traceback" not in capfd.readouterr().err
    said = [r.getMessage() for r in caplog.records if "ended unanswered" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("metrics: a request from 127.0.0.1:")
    assert said[0].endswith("ended unanswered: timed out")


def test_the_url_of_an_ipv6_host_has_it_in_brackets() -> None:
    """`perception run` printed http://::1:PORT/metrics, which no scraper takes."""
    metrics = NodeMetrics(MetricsConfig(enabled=True, host="::1", port=0))
    try:
        metrics.start()
    except TransportError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    try:
        assert metrics.url == f"http://[::1]:{metrics.port}/metrics"
        metrics.update(_diagnostics(S, received=5))
        assert scrape(metrics.url)[("perception_received_total", ())] == 5
    finally:
        metrics.close()
