"""bench.png: what it draws for runs whose end to end and response differ or do not."""

from __future__ import annotations

from dataclasses import replace

from app.bench.report import _figure
from app.bench.soak import soak_summary
from app.bench.stats import latency_stats
from tests.app.test_bench import _result


def _titles(fig: object) -> list[str]:
    return [ax.get_title() for ax in fig.axes]  # type: ignore[attr-defined]


def test_one_histogram_for_end_to_end_and_response_when_they_are_equal() -> None:
    synthetic = _result()  # sweeps spanning 100 ms: end to end = span + response
    titles = _titles(_figure(synthetic))
    assert any(t.startswith("end to end:") for t in titles)
    assert any(t.startswith("response:") for t in titles)
    # A KITTI folder's sweeps span no time: the two are one figure, drawn once.
    frames = tuple(replace(f, latency_ns=f.latency_ns - f.sweep_span_ns, sweep_span_ns=0)
                   for f in synthetic.frames)  # fmt: skip
    kitti = replace(
        synthetic,
        frames=frames,
        end_to_end=latency_stats([f.latency_ns for f in frames]),
        response=latency_stats([f.response_ns for f in frames]),
    )
    kitti_titles = _titles(_figure(kitti))
    assert len(kitti_titles) == len(titles) - 1
    assert any(t.startswith("end to end = response:") for t in kitti_titles)
    assert not any(t.startswith(("end to end:", "response:")) for t in kitti_titles)
    timeline = next(ax for ax in _figure(kitti).axes if ax.get_title().startswith("latency over"))
    labels = [line.get_label() for line in timeline.get_lines()]
    assert "end to end = response" in labels and "response" not in labels


def test_no_empty_panels_for_a_run_shorter_than_a_window() -> None:
    titles = _titles(_figure(_result()))  # no soak: shorter than one window
    assert not any("no samples" in t or "no answers" in t for t in titles)


def test_a_window_longer_than_the_run_is_drawn_within_the_run() -> None:
    """A 4.2 s run in one 60 s window: its point is at the middle of the 4.2 s, not at 30 s."""
    run = _result()
    usage = [(0.5, 50.0, 300_000_000)]
    soak = soak_summary(
        run.frames, run.dropped_sent_s, usage, (),
        counters_before=None, counters_after=None, window_s=60.0,
    )  # fmt: skip
    fig = _figure(replace(run, soak=soak))
    panel = next(ax for ax in fig.axes if ax.get_title().startswith("end to end per 60 s"))
    assert {float(x) for line in panel.get_lines() for x in line.get_xdata()} == {2.1}
