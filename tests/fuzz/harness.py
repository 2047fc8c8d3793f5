"""The fuzz harness: fuzz cases through the node core's whole path, with invariants checked
on every case.

Path: wire frames -> `NodeCore.on_frames` (decode, synchroniser) -> ready bundles ->
`NodeCore.on_bundles` (the real pipeline step) -> `wire.encode` of every DetectionList, and of
the core's Diagnostics now and then. Between messages the core is polled as the live receiver
polls it (`NodeCore.idle_polls`); an episode (a core's life) ends with `NodeCore.flush`, as
offline replay ends (replay.offline.run_core drives the core the same way).

The pipeline step costs ~50 ms and most cases do not complete a bundle anyway; the harness's
worker takes the ready bundles only every `step_every` cases or so (jittered), as the live
worker does when it falls behind: it processes the newest and the core counts the others as
skipped. So 10^6 cases cost a few thousand steps, not a few hundred thousand. When the core
skips the newest bundle as stale (not newer than an output already produced: after a sweep
stamped far in the future, for as long as the sweeps take to pass it), the harness steps the
pipeline on that bundle itself, so the pipeline keeps seeing fuzzed bundles.

Invariants, per case:
- nothing escapes the core (`on_frames`, `idle_polls`, `on_bundles`, `flush`, `diagnostics`);
- `received` grows by exactly one; `decode_errors` grows by one exactly when the message does
  not decode (the harness decodes it too, with the core's limits); a decodable message is
  either refused by the synchroniser (exactly one of its SyncStats refusal counters grows, one
  that fits the message's type), or failed in it (`sync_errors`: the core guarded an exception
  there; the harness files the message into a fresh synchroniser to report it), or accepted
  (none grows, and it is a sensor input);
- the receive side takes at most `receive_limit_s`, a step at most `step_limit_s`;
- every DetectionList encodes (the node can publish it), its stamp is newer than the one before
  and it is on the detections topic; the Diagnostics encode;
and per episode, after the flush: every ready bundle is counted once (`bundles` = skipped +
published + step errors + those the harness never handed over), the core and the synchroniser
agree on the bundles, and with the collector policy every accepted sweep is accounted for (a
bundle, dropped without a rig, or evicted from a full queue). ApproximateTime drops sweeps it
cannot use without counting them (as message_filters does): that number is reported, not
checked. A pipeline exception on a bundle is counted by the core (`step_errors`, no crash);
the harness re-runs the step to report what it was. Memory: RSS is sampled every `rss_every`
cases.

A broken invariant is a `Finding` (deduplicated by where it happened); `strict` raises it at
once (`FindingError`) so hypothesis can shrink the case. Some findings are not failures of
these invariants (`NOTED`): exceptions the core guarded (a bug below it, the message or bundle
lost, counted) and the output stalled behind a far-future stamp (more than `STALLED_NS` behind
the last output).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from calibration import Rig
from perception.config import NodeConfig, SyncConfig
from perception.errors import WireError
from perception.msgs import wire
from perception.msgs.types import (
    CameraFrame,
    DetectionList,
    Diagnostics,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RigMessage,
    SyncedBundle,
)
from perception.node import NodeCore
from perception.node.core import ReadyBundle
from perception.pipeline import Pipeline
from perception.sync import Bundler
from perception.sync.clock import ClockMonitor
from tests.fuzz.cases import Case, CaseGenerator
from tests.fuzz.corpus import Corpus, others
from tests.fuzz.sources import Source

__all__ = ["NOTED", "REFUSALS", "Finding", "FindingError", "FuzzHarness", "Tally"]

REPO = Path(__file__).resolve().parents[2]
#: SyncStats counters of messages the synchroniser refused, and the types each may count.
REFUSALS: dict[str, tuple[type, ...]] = {
    "unknown_streams": (CameraFrame,),
    "late_messages": (CameraFrame, LidarSweep),
    "duplicate_messages": (CameraFrame, LidarSweep),
    "bad_rigs": (RigMessage,),
    "bad_fixes": (GnssFix,),
    "not_inputs": (DetectionList, Diagnostics),
}
#: NodeCounters counters of messages the core refused before the synchroniser, and their types.
CORE_REFUSALS: dict[str, tuple[type, ...]] = {
    "stamp_faults": (CameraFrame, LidarSweep, GnssFix, RigMessage),
}
_INPUTS = (CameraFrame, LidarSweep, GnssFix, RigMessage)


@dataclass
class Finding:
    """A broken invariant: `kind` (crash, miscount, slow, output, step_error), the first case
    that showed it (index, label, the message's frames), what happened, where (the exception
    and the innermost project line, or the invariant), and how many cases showed it."""

    kind: str
    case: int
    label: str
    detail: str
    where: str
    frames: list[bytes] | None = None
    count: int = 1
    bundle: bytes | None = None  # pickled SyncedBundle, for findings of a pipeline step

    def summary(self) -> dict[str, Any]:
        """The finding without its frames and bundle (for reports)."""
        doc = dataclasses.asdict(self)
        doc.pop("frames")
        doc.pop("bundle")
        return doc


#: Finding kinds that are not failures of the harness's invariants: exceptions the core guarded
#: (counted the message or bundle and went on: bugs in the layers below it) and a node whose
#: output stalled behind a far-future stamp (the stale-output rule doing what it says, with a
#: hostile stamp). The others (crash, miscount, slow, output) are failures.
NOTED = frozenset({"sync_error", "step_error", "stalled_output"})
#: A stale bundle this far behind the last output means the output has stalled.
STALLED_NS = 10 * 1_000_000_000


class FindingError(AssertionError):
    """A finding, raised at once in strict mode."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(
            f"{finding.kind} at case {finding.case} ({finding.label}): {finding.detail} "
            f"[{finding.where}]"
        )
        self.finding = finding


@dataclass
class Tally:
    """What the harness saw, over every episode."""

    cases: int = 0
    episodes: int = 0
    decode_errors: int = 0
    sync_errors: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    bundles: int = 0
    steps: int = 0
    published: int = 0
    skipped_bundles: int = 0
    step_errors: int = 0
    unprocessed: int = 0
    stalled_steps: int = 0
    shadow_steps: int = 0
    detections: int = 0
    degraded_outputs: int = 0
    diagnostics: int = 0
    receive_s: float = 0.0
    step_s: float = 0.0
    max_receive_s: float = 0.0
    slowest_receive: str = ""
    max_step_s: float = 0.0
    slowest_step: str = ""
    rss: list[tuple[int, int]] = field(default_factory=list)

    def accounted(self) -> int:
        """Messages explained: undecodable + refused + failed in the synchroniser + accepted
        (= `cases` when all is well)."""
        return (
            self.decode_errors
            + sum(self.refused.values())
            + self.sync_errors
            + sum(self.accepted.values())
        )


def _where(e: BaseException) -> str:
    """The exception type and the innermost line of the project's code it passed through."""
    frames = traceback.extract_tb(e.__traceback__)
    inside = [
        f for f in frames if f.filename.startswith(str(REPO)) and "/tests/fuzz/" not in f.filename
    ]
    if not (inside or frames):
        return type(e).__name__
    last = (inside or frames)[-1]
    return (
        f"{type(e).__name__} at {os.path.relpath(last.filename, REPO)}:{last.lineno} in {last.name}"
    )


def _as_bytes(frames: Sequence[Any]) -> list[bytes]:
    return [bytes(f) for f in frames]


class FuzzHarness:
    """Fuzz cases through a `NodeCore` with `pipeline` (see the module docstring).

    `config`: the node config (its sync policy is alternated with ApproximateTime every
    `approximate_every`-th episode; 0: never); `seed`: the worker's schedule; `episode_cases`:
    cases per core before it is flushed and replaced.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        corpus: Corpus,
        config: NodeConfig,
        *,
        seed: int = 0,
        step_every: int = 250,
        episode_cases: int = 20_000,
        approximate_every: int = 4,
        receive_limit_s: float = 2.0,
        step_limit_s: float = 30.0,
        rss_every: int = 2000,
        diagnostics_every: int = 1000,
        strict: bool = False,
        keep_frames: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.corpus = corpus
        self.config = config
        self.step_every = step_every
        self.episode_cases = episode_cases
        self.approximate_every = approximate_every
        self.receive_limit_s = receive_limit_s
        self.step_limit_s = step_limit_s
        self.rss_every = rss_every
        self.diagnostics_every = diagnostics_every
        self.strict = strict
        self.keep_frames = keep_frames
        self.tally = Tally()
        self.findings: dict[str, Finding] = {}
        #: (case index, label) of the case running now and when it started (time.monotonic),
        #: for a watchdog.
        self.current: tuple[int, str] = (-1, "")
        self.current_started_s = time.monotonic()
        self.limits = config.limits
        self.seed = seed
        self._process = psutil.Process()
        self._others = self._other_templates()
        self.reset()

    def reset(self) -> None:
        """A new vehicle from its start on a new core, the worker's schedule from the seed:
        what follows depends only on the source's choices (tests that shrink or replay a case
        start here). The tally and findings are kept."""
        self._rng = random.Random(self.seed)
        self._since_step = 0
        self._next_step = self._step_gap()
        self.generator = CaseGenerator(self.corpus, self.config, self._others)
        self._start_episode()

    # -- episodes ----------------------------------------------------------------------------

    def _episode_config(self) -> NodeConfig:
        n = self.tally.episodes + 1
        if self.approximate_every and n % self.approximate_every == 0:
            sync = dataclasses.replace(self.config.sync, policy="approximate_time")
        else:
            sync = self.config.sync
        return dataclasses.replace(self.config, sync=sync)

    def _start_episode(self) -> None:
        self.episode_config = self._episode_config()
        self.core = NodeCore(self.episode_config, self.pipeline, self.corpus.default_rig)
        self._last_ns: int | None = None
        self._pending: list[ReadyBundle] = []
        self._episode_cases = 0
        self._accepted_sweeps = 0
        self._unprocessed = 0
        self._last_stamp: int | None = None
        self._epoch = 0
        self._tainted = False

    def _other_templates(self) -> list[Any]:
        """A real DetectionList (the first scene through a core) and the core's Diagnostics."""
        core = NodeCore(self.config, self.pipeline, self.corpus.default_rig)
        scene = self.corpus.scenes[0]
        stamp = 1_000_000_000
        ready: list[ReadyBundle] = []
        for tmpl in (scene.rig, scene.camera, scene.gnss, scene.sweep):
            ready += core.on_frames(tmpl.frames(stamp, 0), stamp + 150_000_000)
        for batch in core.flush(stamp + 150_000_000):
            ready += batch
        out = core.on_bundles(ready)
        assert out is not None, "the first scene gave no DetectionList"
        return others([out, core.diagnostics(stamp)])

    def end_episode(self) -> None:
        """Flush the core, hand over what is ready, check the episode's accounting, and start
        a new core."""
        core = self.core
        if self._last_ns is not None and not self._tainted:
            try:
                for batch in core.flush(self._last_ns):
                    self._pending += batch
            except Exception as e:
                self._exception("crash", self._end_case(), e)
                self._tainted = True
        if self._pending and not self._tainted:
            if self._since_step * 2 >= self._next_step:
                self._step(self._end_case())
            else:
                self._unprocessed += len(self._pending)
                self._pending = []
        if not self._tainted:
            self._check_episode()
            self._diagnostics(self._end_case())
        c = core.counters
        t = self.tally
        t.bundles += c.bundles
        t.published += c.published
        t.skipped_bundles += c.skipped_bundles
        t.step_errors += c.step_errors
        t.unprocessed += self._unprocessed
        t.episodes += 1
        self._start_episode()

    def _end_case(self) -> Case:
        return Case([], self._last_ns or 0, f"end of episode {self.tally.episodes}")

    def _check_episode(self) -> None:
        c = self.core.counters
        stats = self.core.bundler.stats
        case = self._end_case()
        if c.bundles != stats.bundles:
            self._miscount(
                case,
                "core vs synchroniser bundles",
                f"core bundles {c.bundles} != synchroniser {stats.bundles}",
            )
        handled = c.skipped_bundles + c.published + c.step_errors + self._unprocessed
        if c.bundles != handled:
            self._miscount(
                case,
                "bundles handled",
                f"bundles {c.bundles} != skipped {c.skipped_bundles} + published {c.published} "
                f"+ step errors {c.step_errors} + not handed over {self._unprocessed}",
            )
        out = (
            stats.bundles
            + stats.dropped_sweeps_no_rig
            + stats.dropped_sweeps_queue_full
            + stats.dropped_sweeps_clock_reset
            + stats.dropped_sweeps_unmatched
        )
        # With either policy every accepted sweep ends as a bundle or a counted drop.
        if out != self._accepted_sweeps:
            self._miscount(
                case,
                "sweeps accounted",
                f"{self._accepted_sweeps} sweeps accepted, {out} accounted for (bundles "
                f"{stats.bundles}, no rig {stats.dropped_sweeps_no_rig}, queue full "
                f"{stats.dropped_sweeps_queue_full}, clock reset "
                f"{stats.dropped_sweeps_clock_reset}, unmatched "
                f"{stats.dropped_sweeps_unmatched})",
            )

    # -- cases -------------------------------------------------------------------------------

    def run(self, source: Source, cases: int) -> None:
        """`cases` cases from `source` (episodes end every `episode_cases`)."""
        for _ in range(cases):
            self.run_case(source)

    def run_case(self, source: Source) -> Case:
        """One case from `source` through the core, its invariants checked; the case."""
        case = self.generator.next_case(source)
        self.run_frames(case)
        return case

    def run_frames(self, case: Case) -> None:
        """`case` through the core, its invariants checked."""
        index = self.tally.cases
        self.current = (index, case.label)
        self.current_started_s = time.monotonic()
        self.tally.cases += 1
        self._episode_cases += 1
        expected, problem = self._expect(case)
        before = self._snapshot()
        start = time.perf_counter()
        try:
            batches = []
            if self._last_ns is not None:
                batches = self.core.idle_polls(self._last_ns, case.receive_ns)
            ready = self.core.on_frames(case.frames, case.receive_ns)
        except Exception as e:
            self._exception("crash", case, e)
            self._tainted = True
            self.end_episode()
            return
        elapsed = time.perf_counter() - start
        self._last_ns = case.receive_ns
        t = self.tally
        t.receive_s += elapsed
        if elapsed > t.max_receive_s:
            t.max_receive_s, t.slowest_receive = elapsed, case.label
        if elapsed > self.receive_limit_s:
            self._finding("slow", case, f"receive side took {elapsed:.2f} s", "slow receive")
        self._check_counts(case, expected, problem, before)
        for batch in batches:
            self._pending += batch
        self._pending += ready
        self._since_step += 1
        if self._pending and self._since_step >= self._next_step:
            self._step(case)
        if self.diagnostics_every and t.cases % self.diagnostics_every == 0:
            self._diagnostics(case)
        if self.rss_every and t.cases % self.rss_every == 0:
            t.rss.append((t.cases, int(self._process.memory_info().rss)))
        if self._episode_cases >= self.episode_cases:
            self.end_episode()

    def _expect(self, case: Case) -> tuple[Message | None, str]:
        """The message the core should decode from `case`, or None and why not."""
        try:
            return wire.decode(case.frames, self.limits)[1], ""
        except WireError as e:
            return None, str(e)
        except Exception as e:  # decode must raise WireError only: the core catches no other
            self._exception("crash", case, e)
            return None, repr(e)

    def _snapshot(self) -> tuple[int, int, int, dict[str, int]]:
        c = self.core.counters
        stats = self.core.bundler.stats
        refusals = {k: getattr(stats, k) for k in REFUSALS}
        refusals.update({k: getattr(c, k) for k in CORE_REFUSALS})
        return c.received, c.decode_errors, c.sync_errors, refusals

    def _check_counts(
        self,
        case: Case,
        expected: Message | None,
        problem: str,
        before: tuple[int, int, int, dict[str, int]],
    ) -> None:
        received, decode_errors, sync_errors, refusals = self._snapshot()
        if received - before[0] != 1:
            self._miscount(case, "received", f"received grew by {received - before[0]}, not 1")
        errors = decode_errors - before[1]
        moved = {k: v - before[3][k] for k, v in refusals.items() if v != before[3][k]}
        if sync_errors != before[2]:
            moved["sync_errors"] = sync_errors - before[2]
        if expected is None:
            self.tally.decode_errors += 1
            if errors != 1 or moved:
                self._miscount(
                    case,
                    "decode errors",
                    f"undecodable ({problem:.80}) but decode_errors +{errors}, {moved}",
                )
            return
        name = type(expected).__name__
        if errors:
            self._miscount(case, "decode errors", f"decodable {name} counted as a decode error")
        elif len(moved) > 1 or any(v != 1 for v in moved.values()):
            self._miscount(case, "refusals", f"{name} moved refusal counters {moved}")
        elif "sync_errors" in moved:
            self.tally.sync_errors += 1
            self._diagnose_sync(case, expected)
        elif moved:
            (counter,) = moved
            self.tally.refused[counter] += 1
            if not isinstance(expected, {**REFUSALS, **CORE_REFUSALS}[counter]):
                self._miscount(case, "refusal type", f"{name} counted as {counter}")
        elif isinstance(expected, _INPUTS):
            self.tally.accepted[name] += 1
            self._accepted_sweeps += isinstance(expected, LidarSweep)
        else:
            self._miscount(case, "not an input", f"{name} (not a sensor input) counted nowhere")

    # -- the worker --------------------------------------------------------------------------

    def _step_gap(self) -> int:
        return self._rng.randint(max(1, self.step_every // 2), max(1, self.step_every * 3 // 2))

    def _step(self, case: Case) -> None:
        """Hand the ready bundles to `on_bundles`, as a worker that fell behind takes them."""
        ready, self._pending = self._pending, []
        self._since_step = 0
        self._next_step = self._step_gap()
        core = self.core
        errors_before = core.counters.step_errors
        start = time.perf_counter()
        try:
            out = core.on_bundles(ready)
            # The tracker after the detections are out, as the node runs it.
            core.take_tracks()
        except Exception as e:
            self._exception("crash", case, e)
            self._tainted = True
            return
        elapsed = time.perf_counter() - start
        t = self.tally
        t.steps += 1
        t.step_s += elapsed
        if elapsed > t.max_step_s:
            t.max_step_s, t.slowest_step = elapsed, case.label
        if elapsed > self.step_limit_s:
            self._finding("slow", case, f"on_bundles took {elapsed:.2f} s", "slow step")
        if core.counters.step_errors > errors_before:
            self._diagnose_step(case, ready)
        elif out is not None:
            self._check_output(_about(case, ready), out)
        else:
            self._stale(case, ready)

    def _stale(self, case: Case, ready: list[ReadyBundle]) -> None:
        """The core skipped the newest bundle: no newer than an output already produced (the
        stale-output rule). Far behind that output, the node is stalled: it publishes nothing
        until its sweeps pass that stamp (a finding). Either way the harness steps the
        pipeline on the bundle itself, so that the pipeline keeps seeing fuzzed bundles."""
        newest = _newest(ready).bundle
        about = _about(case, ready)
        behind_ns = (self._last_stamp or 0) - newest.lidar.header.stamp_ns
        if behind_ns > STALLED_NS:
            self.tally.stalled_steps += 1
            self._finding(
                "stalled_output",
                about,
                f"the newest bundle is {behind_ns / 1e9:.3g} s older than the last output "
                f"(stamp {self._last_stamp}): nothing is published until sweeps pass it",
                "stale-output rule",
            )
        start = time.perf_counter()
        try:
            out = self.pipeline.step(newest, 0)
        except Exception as e:
            self._exception("step_error", about, e)
            return
        elapsed = time.perf_counter() - start
        self.tally.shadow_steps += 1
        self.tally.step_s += elapsed
        if elapsed > self.step_limit_s:
            self._finding("slow", about, f"Pipeline.step took {elapsed:.2f} s", "slow step")
        self._check_output(about, out, published=False)

    def _diagnose_step(self, case: Case, ready: list[ReadyBundle]) -> None:
        """The core counted a step error: run the same bundle through the pipeline again to
        report the exception."""
        about = _about(case, ready)
        try:
            self.pipeline.step(_newest(ready).bundle, 0)
        except Exception as e:
            self._exception("step_error", about, e)
        else:
            self._finding("step_error", about, "step failed once, not twice", "flaky step")

    def _diagnose_sync(self, case: Case, msg: Message) -> None:
        """The core counted a synchroniser error: file the message into a fresh synchroniser
        and clock monitor (same config and rig) to report the exception."""
        config = self.episode_config
        bundler = Bundler.from_config(
            config.inputs.camera_topics, config.sync, default_rig=self.corpus.default_rig
        )
        try:
            header = getattr(msg, "header", None)
            if isinstance(header, Header):
                ClockMonitor().observe(bytes(case.frames[0]).decode(), header.stamp_ns, 0)
            bundler.add(msg, case.receive_ns)
        except Exception as e:
            self._exception("sync_error", case, e)
        else:
            self._finding("sync_error", case, "not reproduced on a fresh synchroniser", "sync")

    def _check_output(self, case: Case, out: DetectionList, *, published: bool = True) -> None:
        """Checks a DetectionList the core produced (`published`) or the harness's own step
        of the pipeline (only that it encodes)."""
        stamp = out.header.stamp_ns
        if published and self.core.epoch != self._epoch:
            # A confirmed lidar clock jump starts a new timeline: stamps move forward within one.
            self._epoch = self.core.epoch
            self._last_stamp = None
        if published and self._last_stamp is not None and stamp <= self._last_stamp:
            self._finding(
                "output", case, f"output stamp {stamp} after {self._last_stamp}", "stamp order"
            )
        if published:
            self._last_stamp = stamp
        if out.header.stream != self.config.outputs.detections_topic:
            self._finding("output", case, f"output on {out.header.stream!r}", "output stream")
        self.tally.detections += len(out.detections)
        self.tally.degraded_outputs += bool(out.degraded)
        start = time.perf_counter_ns()
        try:
            wire.encode(out)
        except WireError as e:
            self._exception("output", case, e, detail=f"DetectionList not publishable: {e}")
            return
        except Exception as e:
            self._exception("crash", case, e)
            return
        if published:
            self.core.record_publish(time.perf_counter_ns() - start)

    def _diagnostics(self, case: Case) -> None:
        try:
            diagnostics = self.core.diagnostics(self._last_ns or 0)
            wire.encode(diagnostics)
        except WireError as e:
            self._exception("output", case, e, detail=f"Diagnostics not publishable: {e}")
            return
        except Exception as e:
            self._exception("crash", case, e)
            return
        self.tally.diagnostics += 1

    # -- findings ----------------------------------------------------------------------------

    def _exception(self, kind: str, case: Case, e: BaseException, detail: str = "") -> None:
        self._finding(kind, case, detail or f"{type(e).__name__}: {e}"[:500], _where(e))

    def _miscount(self, case: Case, invariant: str, detail: str) -> None:
        self._finding("miscount", case, detail, invariant)

    def _finding(self, kind: str, case: Case, detail: str, where: str) -> None:
        key = f"{kind}: {where}"
        found = self.findings.get(key)
        if found is not None:
            found.count += 1
        else:
            frames = _as_bytes(case.frames) if self.keep_frames else None
            found = Finding(kind, self.current[0], case.label, detail, where, frames)
            if self.keep_frames and case.bundle is not None:
                found.bundle = pickle_bundle(case.bundle)
            self.findings[key] = found
        if self.strict and kind not in NOTED:
            raise FindingError(found)

    def failures(self) -> list[Finding]:
        """The findings that are failures (not `NOTED`)."""
        return [f for f in self.findings.values() if f.kind not in NOTED]


def _newest(ready: Sequence[ReadyBundle]) -> ReadyBundle:
    """The bundle `on_bundles` processes."""
    return max(ready, key=lambda r: r.bundle.lidar.header.stamp_ns)


def _about(case: Case, ready: Sequence[ReadyBundle]) -> Case:
    """`case` labelled with the bundle the worker processed (findings of a step are about it,
    not about the case that happened to run the step)."""
    bundle = _newest(ready).bundle
    return Case(case.frames, case.receive_ns, f"bundle {describe_bundle(bundle)}", bundle)


def pickle_bundle(bundle: SyncedBundle) -> bytes:
    """A bundle as bytes (`unpickle_bundle`): its rig as its document (a Rig holds read-only
    mapping views, which pickle refuses)."""
    without_rig = dataclasses.replace(bundle, rig=None)  # type: ignore[arg-type]
    return pickle.dumps((without_rig, bundle.rig.to_dict()))


def unpickle_bundle(data: bytes) -> SyncedBundle:
    """The bundle `pickle_bundle` wrote (a file of this harness's: pickle trusts it)."""
    bundle, rig = pickle.loads(data)
    return dataclasses.replace(bundle, rig=Rig.from_dict(rig, source=str(rig.get("source"))))


def describe_bundle(bundle: SyncedBundle) -> str:
    """A bundle in a line: the sweep, the cameras, the rig, the fix."""
    sweep = bundle.lidar
    cameras = ", ".join(
        f"{name} {f.header.frame_id!r:.40} "
        + (
            f"{f.encoding} {len(f.data or b'')} B"
            if f.image is None
            else "x".join(map(str, f.image.shape))
        )
        for name, f in bundle.cameras.items()
    )
    fix = "no fix" if bundle.gnss is None else f"fix {bundle.gnss.header.seq}"
    return (
        f"sweep {sweep.header.seq} at {sweep.header.stamp_ns} ({len(sweep.points)} points, "
        f"frame {sweep.header.frame_id!r:.40}); cameras [{cameras}]; "
        f"rig {bundle.rig.source!r:.60}; {fix}; missing {list(bundle.missing)}"
    )


def default_config(base: NodeConfig | None = None) -> NodeConfig:
    """The node config the harness runs: `base` (default: the built-in one) with the packaged
    synthetic detector (small and fast) and the collector's defaults."""
    from app.models import SYNTH_CAMERA_MODEL

    base = base or NodeConfig()
    return dataclasses.replace(base, camera_model=SYNTH_CAMERA_MODEL, sync=SyncConfig())
