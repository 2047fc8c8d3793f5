"""Latency benchmark of the node through its public interface (`perception bench`).

`run_bench` starts `perception run` as a child process with a config of its own, plays a
drive's sweeps into it over ZeroMQ at a fixed rate (or searches the highest rate it sustains)
and measures what it publishes back; `write_report` writes the result as JSON, Markdown and
PNG. The library prints nothing; `format_markdown` gives the table the CLI prints.

Modules, one concern each:
- `settings`: what to run (`BenchSettings`: rate, duration, engine backend and device) and its
  checks;
- `sweeps`: the drive grouped by lidar sweep and restamped to the send time (the timing model),
  and the node config written for it;
- `node_child`: the node under test (child process, its published answers, its CPU/memory);
- `runner`: the player and `run_bench`, drop accounting in time and the max-rate runs;
- `stats`: the figures (percentiles, accounting, node overhead, the max-rate search);
- `soak`: the run over time (per window; RSS growth after the first minute; the verdict);
- `machine`: the machine (CPU, GPUs via nvidia-smi, TensorRT/torch, Jetson power mode);
- `report`: `BenchResult` and its files.
"""

from app.bench.machine import GpuInfo, MachineInfo, machine_info, parse_nvidia_smi
from app.bench.node_child import NodeChild
from app.bench.report import (
    BenchResult,
    format_markdown,
    result_document,
    write_png,
    write_report,
)
from app.bench.runner import run_bench
from app.bench.settings import (
    BACKENDS,
    DEVICES,
    BenchInterruptedError,
    BenchSettings,
    check_settings,
    sweeps_needed,
)
from app.bench.soak import (
    ERROR_COUNTERS,
    RSS_GROWTH_LIMIT_PCT,
    RssGrowth,
    Soak,
    Window,
    rss_growth,
    soak_summary,
)
from app.bench.stats import (
    ENGINE_STAGES,
    MAX_DROPPED_FRACTION,
    Frame,
    FrameRatio,
    LatencyStats,
    MaxRateSearch,
    NodeOverhead,
    ProcessUsage,
    RateTrial,
    SweepAccounting,
    account,
    find_max_rate,
    frame_ratio,
    latency_stats,
    node_overhead,
    process_usage,
)
from app.bench.sweeps import (
    Sweep,
    config_for_sweeps,
    group_sweeps,
    node_config_document,
    restamp_sweep,
    sweep_span_ns,
)

__all__ = [
    "BACKENDS",
    "DEVICES",
    "ENGINE_STAGES",
    "ERROR_COUNTERS",
    "MAX_DROPPED_FRACTION",
    "RSS_GROWTH_LIMIT_PCT",
    "BenchInterruptedError",
    "BenchResult",
    "BenchSettings",
    "Frame",
    "FrameRatio",
    "GpuInfo",
    "LatencyStats",
    "MachineInfo",
    "MaxRateSearch",
    "NodeChild",
    "NodeOverhead",
    "ProcessUsage",
    "RateTrial",
    "RssGrowth",
    "Soak",
    "Sweep",
    "SweepAccounting",
    "Window",
    "account",
    "check_settings",
    "config_for_sweeps",
    "find_max_rate",
    "format_markdown",
    "frame_ratio",
    "group_sweeps",
    "latency_stats",
    "machine_info",
    "node_config_document",
    "node_overhead",
    "parse_nvidia_smi",
    "process_usage",
    "restamp_sweep",
    "result_document",
    "rss_growth",
    "run_bench",
    "soak_summary",
    "sweep_span_ns",
    "sweeps_needed",
    "write_png",
    "write_report",
]
