"""A bench run over time (app.bench.soak): windows, the RSS growth after the first minute, the
soak verdict, and how bench.md, bench.json and bench.png show them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from app.bench import (
    ERROR_COUNTERS,
    Frame,
    format_markdown,
    result_document,
    rss_growth,
    soak_summary,
    write_report,
)
from tests.app.test_bench import _result

MS = 1_000_000
MB = 1_000_000


def _frames(seconds: float, rate_hz: float = 10.0, latency_ms: float = 50.0) -> list[Frame]:
    n = round(seconds * rate_hz)
    return [Frame(i / rate_hz, int(latency_ms * MS), 0, {}, False) for i in range(n)]


def _usage(seconds: float, rss_mb: float, growth_mb_per_s: float = 0.0) -> list:
    """(s, CPU %, RSS bytes) every 0.5 s."""
    return [
        (t / 2, 80.0, int((rss_mb + growth_mb_per_s * t / 2) * MB)) for t in range(int(seconds * 2))
    ]


def test_windows_count_sends_drops_latency_memory_and_errors() -> None:
    frames = _frames(30.0)
    dropped = [f.sent_s for f in frames if 12.0 <= f.sent_s < 12.3]
    frames = [f for f in frames if f.sent_s not in dropped]
    frames[-1] = dataclasses.replace(frames[-1], latency_ns=400 * MS)
    timeline = [
        (float(s), {"decode_errors": 2 if s >= 25 else 0, "skipped_bundles": s // 10})
        for s in range(31)
    ]
    soak = soak_summary(
        frames,
        dropped,
        _usage(30.0, 250.0),
        timeline,
        counters_before={"decode_errors": 0, "skipped_bundles": 0},
        counters_after={"decode_errors": 2, "skipped_bundles": 3},
        window_s=10.0,
    )
    assert [(w.start_s, w.end_s) for w in soak.windows] == [(0, 10), (10, 20), (20, 30)]
    assert [(w.sent, w.received, w.dropped) for w in soak.windows] == [
        (100, 100, 0),
        (100, 97, 3),
        (100, 100, 0),
    ]
    last = soak.windows[-1].end_to_end
    assert last is not None and last.p50_ms == 50.0 and last.max_ms == 400.0
    assert [w.rss_mb for w in soak.windows] == [250.0, 250.0, 250.0]
    assert [w.cpu_mean_pct for w in soak.windows] == [80.0, 80.0, 80.0]
    assert [w.errors for w in soak.windows] == [0, 0, 2]
    assert [w.skipped_bundles for w in soak.windows] == [1, 1, 1]
    assert (soak.dropped, soak.errors, soak.errors_by_counter) == (3, 2, {"decode_errors": 2})
    # Thirty seconds have no RSS after the first minute: no memory figure, no verdict.
    assert soak.rss is None and soak.passed is None
    assert soak.verdict().startswith("no verdict: 3 dropped, 2 errors (decode_errors 2), RSS ")


def test_rss_growth_after_the_first_minute() -> None:
    flat = rss_growth([(t / 2, 250.0 + (50.0 if t < 100 else 0.0)) for t in range(360)])
    # The warm-up (first minute) is not counted: 300 MB then, 250 MB after.
    assert flat is not None and flat.baseline_mb == 250.0 and flat.final_mb == 250.0
    assert flat.growth_pct == 0.0 and flat.ok
    leak = rss_growth([(t / 2, 250.0 + t / 2 * 0.2) for t in range(360)])  # +0.2 MB/s
    assert leak is not None and not leak.ok and leak.growth_pct > 5.0
    # Three minutes give no trend (bursts step the RSS); an hour does.
    assert flat.slope_mb_per_h is None and leak.slope_mb_per_h is None
    hour = rss_growth([(t / 2, 250.0 + t / 2 * 0.001) for t in range(7200)])
    assert hour is not None and hour.ok and hour.slope_mb_per_h == pytest.approx(3.6)
    assert rss_growth([(t / 2, 250.0) for t in range(150)]) is None  # 75 s: no end window
    assert rss_growth([]) is None


def test_a_clean_hour_passes_and_a_leak_fails() -> None:
    frames = _frames(180.0, rate_hz=2.0)
    counters = {name: 0 for name in ERROR_COUNTERS[:3]}

    def soak(growth_mb_per_s: float, dropped: list[float]):
        return soak_summary(
            frames,
            dropped,
            _usage(180.0, 250.0, growth_mb_per_s),
            [],
            counters_before=counters,
            counters_after=counters,
            window_s=60.0,
        )

    clean = soak(0.0, [])
    assert clean.passed is True and len(clean.windows) == 3
    assert clean.verdict() == (
        "pass: 0 dropped, 0 errors, RSS +0.00% from 250.0 MB after the first minute to "
        "250.0 MB at the end (limit 5%; trend n/a under 10 min)"
    )
    assert soak(0.2, []).passed is False  # +20 MB in 110 s: 8%
    assert soak(0.0, [42.0]).passed is False


def test_markdown_and_json_report_the_run_over_time(tmp_path: Path) -> None:
    base = _result()
    one_window = soak_summary(
        base.frames, (), [], [], counters_before=None, counters_after=None, window_s=60.0
    )
    md = format_markdown(dataclasses.replace(base, soak=one_window))
    assert "Over time" not in md and "| soak |" not in md  # a short run reads as before

    # The base result's frames (their stage timings) sent over three minutes.
    frames = [
        dataclasses.replace(base.frames[i % len(base.frames)], sent_s=i / 2.0, latency_ns=50 * MS)
        for i in range(360)
    ]
    counters = {"decode_errors": 0}
    soak = soak_summary(
        frames,
        (),
        _usage(180.0, 250.0),
        [],
        counters_before=counters,
        counters_after=counters,
        window_s=60.0,
    )
    result = dataclasses.replace(base, soak=soak, frames=tuple(frames))
    md = format_markdown(result)
    assert "| soak | pass: 0 dropped, 0 errors, RSS +0.00% from 250.0 MB" in md
    assert "Over time (60 s windows of send time" in md
    assert "| 60-120 | 120 | 120 | 0 | n/a | n/a | 50.0 | 50.0 | 50.0 | 250.00 | 80.00 |" in md
    json_path, _, png_path = write_report(result, tmp_path)
    doc = json.loads(json_path.read_text())
    assert doc == json.loads(json.dumps(result_document(result)))
    assert doc["soak"]["passed"] is True and doc["soak"]["rss"]["growth_pct"] == 0.0
    assert len(doc["soak"]["windows"]) == 3 and len(doc["soak"]["rss_series"]) == 360
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
