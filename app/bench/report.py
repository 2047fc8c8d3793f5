"""What `perception bench` measured (`BenchResult`) and its files: bench.json (every figure),
bench.md (the latency and summary tables the CLI prints; for a run of several windows, the run
over time and the soak verdict) and bench.png (latency histograms, the timeline, the node's RSS
over the run and the latency per window)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.bench.machine import MachineInfo
from app.bench.soak import Soak, Window
from app.bench.stats import (
    ENGINE_STAGES,
    Frame,
    FrameRatio,
    LatencyStats,
    MaxRateSearch,
    NodeOverhead,
    ProcessUsage,
    SweepAccounting,
)
from perception.pipeline.timing import engine_ns, engine_path
from replay.output import atomic_output, check_output_dir

__all__ = [
    "REPORT_FILES",
    "BenchResult",
    "format_markdown",
    "result_document",
    "stage_report",
    "write_png",
    "write_report",
]

#: The report's files in the output folder, in the order `write_report` returns them.
REPORT_FILES = ("bench.json", "bench.md", "bench.png")


@dataclass(frozen=True)
class BenchResult:
    """Everything `perception bench` measured (written as bench.json). `backend`: the node's
    `engines.backend`; `device`: what its engines ran on, as found before the node started
    (app.bench.device: "cpu", "cuda", or a mixed case spelled out); `device_requested`: the
    `engines.device` asked for ("auto", "cpu" or "cuda").
    `end_to_end`: the node's `latency_ns` (sensor to publish, from the sweep stamp);
    `response`: from sending the complete sweep to publishing (`Frame.response_ns`).
    `node_diagnostics`: the node's last diagnostics frame, after the run (its counters count
    from the node's start: connection, warm-up and any max-rate steps included).
    `host_load_1m`: the machine's 1-minute load average before the node started and after the
    run (other work on the machine shares its cores with the node).
    `soak`: the run over time (app.bench.soak: per window, the RSS growth after the first
    minute, the verdict)."""

    source: str
    rate_hz: float
    duration_s: float
    backend: str
    device: str
    node_config: dict[str, Any]
    machine: MachineInfo
    sweeps: SweepAccounting
    throughput_hz: float | None
    send_rate_hz: float
    end_to_end: LatencyStats | None
    response: LatencyStats | None
    stages: dict[str, LatencyStats]
    node_overhead: NodeOverhead | None
    node_process: ProcessUsage
    max_rate: MaxRateSearch | None
    node_diagnostics: dict[str, Any]
    frames: tuple[Frame, ...]
    dropped_sent_s: tuple[float, ...]
    host_load_1m: tuple[float, float] | None = None
    device_requested: str | None = None
    soak: Soak | None = None
    frame_ratio: FrameRatio | None = None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None and v != ()}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def result_document(result: BenchResult) -> dict[str, Any]:
    """bench.json: every figure, the configuration and the machine (absent machine facts
    omitted)."""
    doc: dict[str, Any] = {"version": 1, **asdict(result)}
    doc["machine"] = _without_none(doc["machine"])
    return doc


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _machine_line(m: MachineInfo, backend: str) -> str:
    parts = [f"{m.cpu_model}, {m.cpu_cores} cores"]
    for g in m.gpus:
        clocks = ""
        if g.sm_clock_mhz is not None and g.sm_clock_max_mhz is not None:
            clocks = f", SM clock {g.sm_clock_mhz:.0f}/{g.sm_clock_max_mhz:.0f} MHz"
        mem = f", {g.memory_total_mib:.0f} MiB" if g.memory_total_mib is not None else ""
        parts.append(f"GPU {g.name}{mem}{clocks}")
    if m.tensorrt_version:
        parts.append(f"TensorRT {m.tensorrt_version}")
    if m.jetson_power_mode:
        parts.append(f"power mode {m.jetson_power_mode}")
    if m.onnxruntime_version:
        parts.append(f"ONNX Runtime {m.onnxruntime_version}")
    if m.torch_version:
        parts.append(f"torch {m.torch_version}")
    # The node's BLAS threads move its CPU and latency (app/threads.py): part of the setup.
    parts.append(f"BLAS threads {m.blas_threads or 'unset (one per core)'}")
    if backend == "torch":
        # So do torch's OpenMP threads, spinning or asleep when idle (app/threads.py).
        parts.append(f"OMP_WAIT_POLICY {m.openmp_wait_policy or 'unset (spin, then sleep)'}")
    return "; ".join(parts)


def _span_text(frames: Sequence[Frame]) -> str:
    span_ms = float(np.median([f.sweep_span_ns for f in frames])) / 1e6 if frames else 0.0
    return (
        f"{span_ms:.1f} ms median from a sweep's stamp to its last point, when it is sent "
        "(end to end = span + response)"
    )


def _overhead_text(o: NodeOverhead | None) -> str:
    if o is None:
        return "n/a"
    verdict = "met" if o.meets_target else "not met"
    return (
        f"{o.median_ms:.2f} ms median, {100 * o.median_share:.1f}% of the frame (target "
        f"< {o.target_ms:g} ms and < {100 * o.target_share:g}%: {verdict}); "
        f"{o.queue_wait_median_ms:.2f} ms median waiting for the worker, "
        f"{o.unstaged_median_ms:.2f} ms in no timed stage; the transport apart, "
        f"{o.transport_median_ms:.2f} ms median"
    )


def _max_rate_text(search: MaxRateSearch) -> str:
    steps = ", ".join(
        f"{t.rate_hz:.2f} Hz {100 * t.dropped_fraction:.1f}%{' (long)' if t.long else ''}"
        for t in search.trials
    )
    best = "none" if search.rate_hz is None else f"{search.rate_hz:.2f} Hz"
    limit = f"{100 * search.max_dropped_fraction:g}%"
    if search.rate_hz is not None and not search.limit_found:
        # The search ran out of steps (or reached its ceiling) still stepping up: the rate is
        # what it got to, not what the node can do.
        return (
            f"at least {best} with < {limit} dropped: the search stopped before any rate was "
            f"too fast for the node (steps: {steps})"
        )
    return f"{best} with < {limit} dropped (steps: {steps})"


def _summary_rows(r: BenchResult) -> list[tuple[str, str]]:
    s, p = r.sweeps, r.node_process
    skipped = "n/a" if s.skipped_bundles is None else str(s.skipped_bundles)
    sweeps = (
        f"{s.sent} sent, {s.received} received, {s.dropped} dropped "
        f"({100 * s.dropped_fraction:.1f}%), {skipped} skipped bundles, {s.degraded} degraded"
    )
    rows = [
        ("source", r.source),
        ("rate", f"{r.rate_hz:.2f} Hz for {r.duration_s:g} s (sent at {r.send_rate_hz:.2f} Hz)"),
        ("sweeps", sweeps),
        ("sweep span", _span_text(r.frames)),
        (
            "throughput",
            "n/a (fewer than two answers)"
            if r.throughput_hz is None
            else f"{r.throughput_hz:.2f} DetectionLists/s",
        ),
        ("node overhead", _overhead_text(r.node_overhead)),
        ("whole frame", _frame_ratio_text(r.frame_ratio)),
        ("calibration monitor", _calibration_text(r.node_diagnostics)),
        ("sensor clocks", _clocks_text(r.node_diagnostics)),
        ("node CPU", f"{_ms(p.cpu_mean_pct)} % mean, {_ms(p.cpu_max_pct)} % max (of one core)"),
        ("node memory", f"{_ms(p.rss_max_mb)} MB RSS max"),
        ("backend", r.backend),
        (
            "device",
            r.device
            if r.device_requested in (None, r.device)
            else f"{r.device} (asked for {r.device_requested})",
        ),
        ("machine", _machine_line(r.machine, r.backend)),
    ]
    if r.host_load_1m is not None:
        before, after = r.host_load_1m
        rows.append(("host load (1 min)", f"{before:.2f} before, {after:.2f} after"))
    if r.max_rate is not None:
        rows.insert(2, ("max rate", _max_rate_text(r.max_rate)))
    if _over_time(r):
        assert r.soak is not None
        rows.insert(3, ("soak", r.soak.verdict()))
    return rows


def _frame_ratio_text(f: FrameRatio | None) -> str:
    if f is None:
        return "n/a"
    verdict = "met" if f.meets_target else "not met"
    return (
        f"{f.frame_median_ms:.2f} ms median = {f.ratio:.2f}x the camera encoder alone "
        f"({f.camera_alone_ms:.2f} ms median, timed in the bench before the node started; "
        f"target <= {f.target_ratio:g}x: {verdict})"
    )


def _clocks_text(diagnostics: dict[str, Any]) -> str:
    """The messages the node dropped for their stamps, and the clock jumps it followed, since it
    started (warm-up included): a sensor clock the node misjudges drops sweeps in bursts."""
    counters = diagnostics.get("counters")
    if not isinstance(counters, dict) or "stamp_faults" not in counters:
        return "n/a"
    faults, jumps = counters.get("stamp_faults") or 0, counters.get("clock_jumps") or 0
    named = "" if not (faults or jumps) else " (node.log names each)"
    return f"stamp faults {faults}, clock jumps {jumps}, since the node started{named}"


def _calibration_text(diagnostics: dict[str, Any]) -> str:
    """The calibration monitor's cost per published sweep (off the hot path: after each
    output is published), from the node's counters since its start: its thread's CPU time
    (what it cost the cores, and what its budget bounds), then the wall time it took."""
    counters = diagnostics.get("counters")
    if not isinstance(counters, dict):
        return "n/a"
    used = counters.get("calibration_sweeps") or 0
    published = counters.get("published") or 0
    if not used or not published:
        return "off" if not used else "n/a"
    cpu_ms = float(counters.get("calibration_cpu_ns") or 0) / 1e6
    wall_ms = float(counters.get("calibration_ns") or 0) / 1e6
    over = counters.get("calibration_over_budget") or 0
    held = f"; {over} due sweeps passed over, its CPU budget spent" if over else ""
    return (
        f"{cpu_ms / published:.2f} ms of CPU per sweep on average ({cpu_ms / used:.1f} ms on "
        f"each of the {used} of {published} sweeps it used since the node started, its warm-up "
        f"included; wall time {wall_ms / published:.2f} ms per sweep), after the outputs are "
        f"published{held}"
    )


def _over_time(r: BenchResult) -> bool:
    """Whether the run spans several windows (reported over time)."""
    return r.soak is not None and len(r.soak.windows) > 1


def _window_rows(soak: Soak) -> list[str]:
    lines = [
        f"Over time ({soak.window_s:g} s windows of send time; node errors and skipped bundles "
        "from its diagnostics):",
        "",
        "| window s | sent | received | dropped | skipped | node errors | p50 ms | p99 ms "
        "| max ms | RSS MB | CPU % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in soak.windows:
        e = w.end_to_end
        latency = (
            "n/a | n/a | n/a" if e is None else f"{e.p50_ms:.1f} | {e.p99_ms:.1f} | {e.max_ms:.1f}"
        )
        lines.append(
            f"| {w.start_s:g}-{w.end_s:g} | {w.sent} | {w.received} | {w.dropped} | "
            f"{'n/a' if w.skipped_bundles is None else w.skipped_bundles} | "
            f"{'n/a' if w.errors is None else w.errors} | {latency} | "
            f"{_ms(w.rss_mb)} | {_ms(w.cpu_mean_pct)} |"
        )
    return lines


def format_markdown(result: BenchResult) -> str:
    """bench.md: the latency table (per stage and end to end) and the summary table."""
    lines = ["| stage | p50 ms | p90 ms | p99 ms | max ms |", "| --- | ---: | ---: | ---: | ---: |"]
    rows = [*result.stages.items()]
    if result.response is not None:
        rows.append(("**response** (sweep sent -> published)", result.response))
    if result.end_to_end is not None:
        rows.append(("**end to end** (sweep stamp -> published)", result.end_to_end))
    for name, s in rows:
        lines.append(
            f"| {name} | {s.p50_ms:.2f} | {s.p90_ms:.2f} | {s.p99_ms:.2f} | {s.max_ms:.2f} |"
        )
    lines += ["", "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in _summary_rows(result)]
    if _over_time(result):
        assert result.soak is not None
        lines += ["", *_window_rows(result.soak)]
    return "\n".join(lines) + "\n"


def _same_span(result: BenchResult) -> bool:
    """Whether end to end and response are one figure: every sweep spans no time from its
    stamp to its last point (a KITTI folder's frames are each one instant)."""
    return bool(result.frames) and all(f.sweep_span_ns == 0 for f in result.frames)


def _histograms(fig: Any, grid: Any, series: list[tuple[str, list[float]]]) -> None:
    for i, (name, values) in enumerate(series):
        ax = fig.add_subplot(grid[i // 3, i % 3])
        color = "tab:red" if name.startswith(("end to end", "response")) else "tab:blue"
        # One filled outline, not hist's 30 bars: a third of the picture's build time.
        counts, edges = np.histogram(values, bins=30)
        ax.stairs(counts, edges, fill=True, color=color)
        p50, p99 = np.percentile(values, [50, 99])
        ax.set_title(f"{name}: p50 {p50:.2f}, p99 {p99:.2f} ms", fontsize=9)
        ax.set_xlabel("ms", fontsize=8)
        ax.tick_params(labelsize=7)


def _timeline(ax: Any, result: BenchResult) -> None:
    t = [f.sent_s for f in result.frames]
    same = _same_span(result)
    e2e_label = "end to end = response" if same else "end to end"
    ax.plot(t, [f.latency_ns / 1e6 for f in result.frames], ".-", lw=0.8, label=e2e_label)
    if not same:  # else the second line would hide under the first
        ax.plot(t, [f.response_ns / 1e6 for f in result.frames], ".-", lw=0.8, label="response")
    engine = [engine_ns(f.timings_ns) / 1e6 for f in result.frames]
    # The stages as these frames ran them (with cameras encoded on arrival, the frame waits
    # for them: camera_wait, not camera_encoder).
    paths = dict.fromkeys(s for f in result.frames for s in engine_path(f.timings_ns))
    label = "engines (" + " + ".join(paths or ENGINE_STAGES) + ", critical path)"
    ax.plot(t, engine, ".", ms=3, label=label)
    if result.dropped_sent_s:
        dropped = result.dropped_sent_s
        ax.plot(
            dropped, [0.0] * len(dropped), "x", color="tab:red", label=f"dropped ({len(dropped)})"
        )
    ax.set_xlabel("time the sweep was sent, s from the start of the run")
    ax.set_ylabel("latency, ms")
    ax.set_title(f"latency over the run at {result.rate_hz:.2f} Hz", fontsize=10)
    top = max((f.latency_ns for f in result.frames), default=1) / 1e6
    ax.set_ylim(0.0 - 0.03 * top, 1.3 * top)  # room for the legend above the data
    ax.legend(fontsize=8, loc="upper center", ncols=4)
    ax.grid(alpha=0.3)


def _rss_over_time(ax: Any, soak: Soak | None) -> None:
    if soak is None or not soak.rss_series:
        ax.set_title("node RSS over the run: no samples", fontsize=10)
        return
    t = [s for s, _ in soak.rss_series]
    ax.plot(t, [mb for _, mb in soak.rss_series], "-", lw=0.8, color="tab:purple", label="RSS")
    if soak.rss is not None:
        r = soak.rss
        ax.axvline(r.baseline_s, color="grey", ls=":", lw=0.8, label="end of the first minute")
        limit = r.baseline_mb * (1 + r.limit_pct / 100)
        ax.axhline(limit, color="tab:red", ls="--", lw=0.8, label=f"+{r.limit_pct:g}% limit")
        title = f"node RSS: {r.growth_pct:+.2f}% after the first minute"
    else:
        title = "node RSS (growth: the run is too short)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("s from the start of the run")
    ax.set_ylabel("MB")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)


def _latency_per_window(ax: Any, soak: Soak | None, duration_s: float) -> None:
    windows = [w for w in (soak.windows if soak else ()) if w.end_to_end is not None]
    if soak is None or not windows:
        ax.set_title("latency per window: no answers", fontsize=10)
        return

    def middle(w: Window) -> float:
        # A last window cut short by the run's end is drawn in the middle of what it held, not
        # of its nominal span (a 1 s run's one 60 s window is not at 30 s).
        return (w.start_s + max(w.start_s, min(w.end_s, duration_s))) / 2

    mid = [middle(w) for w in windows]
    for name, pick in (("p50", "p50_ms"), ("p99", "p99_ms"), ("max", "max_ms")):
        ax.plot(mid, [getattr(w.end_to_end, pick) for w in windows], ".-", lw=0.8, label=name)
    dropped = [middle(w) for w in soak.windows if w.dropped]
    if dropped:
        ax.plot(dropped, [0.0] * len(dropped), "x", color="tab:red", label="windows with drops")
    ax.set_title(f"end to end per {soak.window_s:g} s window", fontsize=10)
    ax.set_xlabel("s from the start of the run")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _figure(result: BenchResult) -> Any:
    """The matplotlib Figure of bench.png (see `write_png`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (slow import)
    from matplotlib.figure import Figure  # noqa: PLC0415

    series = []
    if result.frames:
        e2e = [f.latency_ns / 1e6 for f in result.frames]
        if _same_span(result):
            series.append(("end to end = response", e2e))
        else:
            series.append(("end to end", e2e))
            series.append(("response", [f.response_ns / 1e6 for f in result.frames]))
    for name in result.stages:
        values = [f.timings_ns[name] / 1e6 for f in result.frames if name in f.timings_ns]
        series.append((name, values))
    rows = max(1, math.ceil(len(series) / 3))
    # The RSS and per-window panels only when the run was long enough to have them: empty
    # axes would be a blank strip.
    soak = result.soak is not None and bool(result.soak.rss_series or result.soak.windows)
    height = 2.6 * rows + (6.6 if soak else 3.6)
    # Margins fixed in inches rather than a constrained layout, which measured every tick label
    # of the ~20 axes twice and took most of the picture's 3 s.
    fig = Figure(figsize=(13, height))
    FigureCanvasAgg(fig)
    ratios = [1.0] * rows + ([1.4, 1.2] if soak else [1.4])
    grid = fig.add_gridspec(
        len(ratios),
        3,
        height_ratios=ratios,
        left=0.06,
        right=0.99,
        bottom=0.55 / height,
        top=1 - 0.85 / height,
        hspace=0.7,
        wspace=0.18,
    )
    _histograms(fig, grid, series)
    _timeline(fig.add_subplot(grid[rows, :]), result)
    if soak:
        _rss_over_time(fig.add_subplot(grid[rows + 1, :2]), result.soak)
        _latency_per_window(fig.add_subplot(grid[rows + 1, 2]), result.soak, result.duration_s)
    title = f"perception bench: {result.source} ({result.backend} on {result.device})"
    fig.suptitle(title, fontsize=11, y=1 - 0.2 / height, va="top")
    return fig


def write_png(result: BenchResult, path: Path) -> None:
    """bench.png: a latency histogram per stage and end to end (one for both when every sweep
    spans no time, so that they are equal), the latency timeline, and for a run of several
    windows the node's RSS over the run and the end-to-end latency per window."""
    _figure(result).savefig(path, dpi=100)


def write_report(result: BenchResult, out_dir: Path) -> tuple[Path, Path, Path]:
    """Write bench.json, bench.md and bench.png into `out_dir`; their paths. The three replace
    earlier ones together, once all are written (replay.output.atomic_output): a failure leaves
    the previous report whole.

    Raises:
        replay.output.OutputError: `out_dir` is not a folder, or a file cannot be written.
    """
    out_dir = check_output_dir(out_dir, "the bench's output")
    with ExitStack() as files:
        paths = stage_report(result, out_dir, files)
    return paths


def stage_report(result: BenchResult, out_dir: Path, files: ExitStack) -> tuple[Path, Path, Path]:
    """Write the report's files (`REPORT_FILES`) into `out_dir` under temporary names, renamed
    over their targets when `files` closes without an error (with whatever else it holds: the
    node's config and log of the same run, so that no folder ever pairs one run's report with
    another's node files); their final paths.

    Raises:
        replay.output.OutputError: a file cannot be written.
    """
    json_path, md_path, png_path = (out_dir / name for name in REPORT_FILES)
    tmp_json, tmp_md, tmp_png = (
        files.enter_context(atomic_output(p)) for p in (json_path, md_path, png_path)
    )
    tmp_json.write_text(json.dumps(result_document(result), indent=1, allow_nan=False) + "\n")
    tmp_md.write_text(format_markdown(result))
    write_png(result, tmp_png)
    return json_path, md_path, png_path
