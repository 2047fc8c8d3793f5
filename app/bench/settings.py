"""What `perception bench` runs: its settings, their checks, and how it reports progress and stops.

`backend` and `device` are the node's `engines` section (perception.config.EngineSettings); None
keeps what the node config says (onnxruntime on the CPU by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from perception.errors import PerceptionError

__all__ = [
    "BACKENDS",
    "DEVICES",
    "EDGE_TRIAL_S",
    "MAX_PRELOADED_SWEEPS",
    "MAX_RATE_TRIAL_S",
    "MAX_WINDOWS",
    "BenchInterruptedError",
    "BenchSettings",
    "Progress",
    "check_settings",
    "sweeps_needed",
]

#: The node's engine backends and devices (`engines.backend`, `engines.device`).
BACKENDS = ("onnxruntime", "tensorrt", "torch")
DEVICES = ("auto", "cpu", "cuda")
#: Sweeps kept in memory at most (a drive's first ones; the bench loops over them).
MAX_PRELOADED_SWEEPS = 200
#: Longest run of one step of the max-rate search while it steps up or down, s.
MAX_RATE_TRIAL_S = 10.0
#: Longest run of one step at the edge (bisection, confirmation): 10 s of a 10-20 Hz run cannot
#: tell 3 % dropped from 14 %, s.
EDGE_TRIAL_S = 30.0

#: The most windows a run is reported in over time (a row each): a soak of the longest
#: --duration in the default minute windows has 16,667.
MAX_WINDOWS = 100_000

#: progress(sweeps sent, sweeps to send, what is running)
Progress = Callable[[int, int, str], None]


class BenchInterruptedError(PerceptionError):
    """The bench was stopped (SIGINT/SIGTERM) before it finished."""


@dataclass(frozen=True)
class BenchSettings:
    """What to run: `rate_hz` sweeps per second for `duration_s` seconds (with
    `find_max_rate`, the start of the search and the length of the final run). `backend` and
    `device` set the node config's `engines` (None: as the config has them). `drain_s`: how
    long answers are awaited after the last send; `warmup_sweeps` are sent one at a time before
    measuring; `sample_period_s`: CPU/memory sampling period of the node process; `window_s`:
    the length of the windows the run is reported in over time (app.bench.soak)."""

    rate_hz: float = 10.0
    duration_s: float = 30.0
    backend: str | None = None
    device: str | None = None
    find_max_rate: bool = False
    drain_s: float = 3.0
    warmup_sweeps: int = 3
    sample_period_s: float = 0.5
    window_s: float = 60.0
    ready_timeout_s: float = 120.0
    connect_timeout_s: float = 60.0


def check_settings(settings: BenchSettings) -> None:
    """Raises PerceptionError (one line) for settings the bench cannot run."""
    if not (math.isfinite(settings.rate_hz) and settings.rate_hz > 0):
        raise PerceptionError(f"--rate must be a number > 0, got {settings.rate_hz}")
    if not (math.isfinite(settings.duration_s) and settings.duration_s > 0):
        raise PerceptionError(f"--duration must be a number > 0, got {settings.duration_s}")
    if not (math.isfinite(settings.window_s) and settings.window_s > 0):
        raise PerceptionError(f"--window must be a number > 0, got {settings.window_s}")
    if settings.duration_s / settings.window_s > MAX_WINDOWS:
        # The report has a row per window: --window 1e-9 made three billion of them, after the
        # run, which then never ended.
        raise PerceptionError(
            f"--window {settings.window_s:g} s cuts --duration {settings.duration_s:g} s into "
            f"more than {MAX_WINDOWS:,} windows; give at least "
            f"{settings.duration_s / MAX_WINDOWS:.3g} s"
        )
    if settings.backend is not None and settings.backend not in BACKENDS:
        raise PerceptionError(f"--backend must be one of {', '.join(BACKENDS)}")
    if settings.device is not None and settings.device not in DEVICES:
        raise PerceptionError(f"--device must be one of {', '.join(DEVICES)}")


def sweeps_needed(settings: BenchSettings) -> int:
    """How many distinct sweeps to preload: enough not to loop within a run, at most
    `MAX_PRELOADED_SWEEPS`."""
    if settings.find_max_rate:
        return MAX_PRELOADED_SWEEPS
    run = math.ceil(settings.rate_hz * settings.duration_s) + settings.warmup_sweeps + 5
    return max(1, min(MAX_PRELOADED_SWEEPS, run))
