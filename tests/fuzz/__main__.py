"""The long fuzz run: `python -m tests.fuzz --cases 1000000` (from the repository root).

Runs the harness (tests.fuzz.harness) on cases from a seeded generator, with a progress bar,
and writes fuzz.json, fuzz.md and a reproducer per finding into `--out`; prints the summary.
Exit code 0 when nothing failed (crash, hang, miscount, slow case, unpublishable output), 1
otherwise. A case that runs longer than `--hang-s` is a hang: the run writes hang.json (the
case and the main thread's stack) and the partial report, and exits 3; a hang that holds the
GIL is caught by faulthandler a minute later (its stacks in hang-traceback.txt, exit 1).

`--engine atheris` runs coverage-guided fuzzing with atheris instead (when it is installed; it
is not a dependency of the project): each fuzzer input is a vehicle from its start on a fresh
core, its choices consumed from the input bytes; a failure stops the run with the input saved
by libFuzzer under `--out`; atheris' own memory grows by about 1 MB per input, so runs are a
few thousand inputs (`--atheris-runs`). `--replay FILE` feeds a reproducer's message to a fresh
core (or its bundle to the pipeline).

The node logs every dropped message (at a bounded rate per stream); those records are counted
by level, not printed. Run it with `nice -n 10` on a shared machine.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import logging
import os
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import IO, Any

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]
HANG_EXIT = 3


class _CountingHandler(logging.Handler):
    """Counts the node's log records by level (a fuzz run makes hundreds of thousands)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1


def _default_kitti() -> Path | None:
    data = os.environ.get("PERCEPTION_DATA")
    root = Path(data) if data else REPO.parent / "shared" / "data"
    folder = root / "kitti_object" / "training"
    return folder if folder.is_dir() else None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--cases", type=int, default=1_000_000, help="messages to fuzz (default 10^6)")
    p.add_argument("--seed", type=int, default=0, help="the generator's seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("fuzz-report"), help="report folder")
    p.add_argument("--kitti", type=Path, default=None, help="KITTI object folder for seeds")
    p.add_argument("--step-every", type=int, default=250, help="cases between pipeline steps")
    p.add_argument("--episode-cases", type=int, default=20_000, help="cases per node core")
    p.add_argument("--hang-s", type=float, default=120.0, help="a case this long is a hang")
    p.add_argument("--engine", choices=("own", "atheris"), default="own")
    p.add_argument("--atheris-runs", type=int, default=2000, help="atheris inputs to run")
    p.add_argument("--replay", type=Path, default=None, help="a reproducer file to replay")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _harness(args: argparse.Namespace, **kw: Any) -> Any:
    from app.models import build_pipeline
    from tests.fuzz.corpus import build_corpus
    from tests.fuzz.harness import FuzzHarness, default_config

    config = default_config()
    kitti = args.kitti or _default_kitti()
    corpus = build_corpus(config, kitti)
    pipeline = build_pipeline(config)
    pipeline.warm_up()
    settings: dict[str, Any] = {
        "seed": args.seed,
        "step_every": args.step_every,
        "episode_cases": args.episode_cases,
    }
    return FuzzHarness(pipeline, corpus, config, **{**settings, **kw})


class _Watchdog:
    """Ends the run when one case runs longer than `hang_s` (see the module docstring)."""

    def __init__(self, harness: Any, hang_s: float, out: Path, on_hang: Any) -> None:
        self.harness = harness
        self.hang_s = hang_s
        self.out = out
        self.on_hang = on_hang
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._armed_s = 0.0
        out.mkdir(parents=True, exist_ok=True)
        self._stacks: IO[str] = (out / "hang-traceback.txt").open("w")
        self._thread = threading.Thread(target=self._run, name="fuzz-watchdog", daemon=True)
        self._thread.start()

    def rearm(self) -> None:
        """Re-arm faulthandler's backstop (cheap enough every few seconds, not every case)."""
        now = time.monotonic()
        if now - self._armed_s > 5.0:
            faulthandler.dump_traceback_later(self.hang_s + 60, exit=True, file=self._stacks)
            self._armed_s = now

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            index, label = self.harness.current
            running_s = time.monotonic() - self.harness.current_started_s
            if running_s > self.hang_s:
                frame = sys._current_frames().get(self._main or 0)
                stack = "".join(traceback.format_stack(frame)) if frame else "?"
                self.on_hang(index, label, running_s, stack)
                os._exit(HANG_EXIT)

    def stop(self) -> None:
        self._stop.set()
        faulthandler.cancel_dump_traceback_later()
        self._stacks.close()
        if (self.out / "hang-traceback.txt").stat().st_size == 0:
            (self.out / "hang-traceback.txt").unlink()


def _run_own(args: argparse.Namespace, logs: _CountingHandler) -> int:
    import json

    from tqdm import tqdm

    from tests.fuzz.report import format_markdown, report_document, write_report
    from tests.fuzz.sources import RandomSource

    harness = _harness(args)
    source = RandomSource(args.seed)
    start = time.monotonic()

    def report(hangs: int = 0) -> dict[str, Any]:
        return report_document(
            harness,
            engine="own generator",
            seed=args.seed,
            wall_s=time.monotonic() - start,
            hangs=hangs,
            log_records=logs.counts,
        )

    def on_hang(index: int, label: str, running_s: float, stack: str) -> None:
        hang = {"case": index, "label": label, "running_s": running_s, "stack": stack}
        (args.out / "hang.json").write_text(json.dumps(hang, indent=1) + "\n")
        write_report(args.out, report(hangs=1), list(harness.findings.values()))
        print(f"fuzz: case {index} hung for {running_s:.0f} s: {label}", file=sys.stderr)

    watchdog = _Watchdog(harness, args.hang_s, args.out, on_hang)
    bar = tqdm(
        total=args.cases,
        unit="case",
        unit_scale=True,
        disable=args.quiet or not sys.stderr.isatty(),
        smoothing=0.05,
    )
    try:
        done = 0
        while done < args.cases:
            n = min(1000, args.cases - done)
            for _ in range(n):
                harness.run_case(source)
            done += n
            watchdog.rearm()
            bar.update(n)
            bar.set_postfix(
                findings=len(harness.findings),
                rss_mb=harness.tally.rss[-1][1] // 1_000_000 if harness.tally.rss else "?",
                refresh=False,
            )
            if done % 50_000 == 0:  # a partial report, should the run die
                write_report(args.out, report(), list(harness.findings.values()))
        harness.end_episode()
    finally:
        bar.close()
        watchdog.stop()
    doc = report()
    md = write_report(args.out, doc, list(harness.findings.values()))
    print(format_markdown(doc))
    print(f"fuzz: written {args.out / 'fuzz.json'}, {md}")
    return 1 if doc["failures"] else 0


def _run_atheris(args: argparse.Namespace) -> int:
    try:
        # Imported by name: atheris is optional, and has no type stubs.
        atheris = importlib.import_module("atheris")
    except ImportError:
        print("fuzz: atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    # Coverage guidance comes from the node's own code: instrument it as it is imported.
    with atheris.instrument_imports(include=["perception", "calibration"]):
        import calibration  # noqa: F401
        import perception.msgs.wire
        import perception.node.core
        import perception.pipeline
        import perception.sync  # noqa: F401
    from tests.fuzz.harness import FindingError
    from tests.fuzz.report import report_document, write_report
    from tests.fuzz.sources import AtherisSource

    # Inputs are short vehicles (16 messages at most): a step every few messages, or the
    # pipeline would never see what the fuzzer finds.
    step_every = min(args.step_every, 8)
    harness = _harness(args, strict=True, episode_cases=10**9, rss_every=0, step_every=step_every)
    cases_per_input = 16

    started = time.monotonic()
    inputs = 0

    def summary() -> None:
        # libFuzzer ends the process with C's exit: Python's atexit never runs, so the
        # summary is rewritten as the run goes.
        doc = report_document(
            harness, engine="atheris", seed=args.seed, wall_s=time.monotonic() - started
        )
        doc["atheris_inputs"] = inputs
        write_report(args.out, doc, list(harness.findings.values()))

    def one_input(data: bytes) -> None:
        nonlocal inputs
        source = AtherisSource(atheris.FuzzedDataProvider(data))
        harness.reset()
        for _ in range(cases_per_input):
            if source.remaining() == 0:
                break
            harness.run_case(source)
        harness.end_episode()
        inputs += 1
        if inputs % 200 == 0 or inputs == args.atheris_runs:
            summary()
        failures = harness.failures()
        if failures:
            summary()
            raise FindingError(failures[0])

    args.out.mkdir(parents=True, exist_ok=True)
    libfuzzer = [
        sys.argv[0],
        f"-runs={args.atheris_runs}",
        "-max_len=4096",
        # Inputs at full length from the start: a short input is only a few choices.
        "-len_control=0",
        f"-timeout={int(args.hang_s)}",
        # atheris' own memory grows by about 1 MB per input (the same vehicles without it stay
        # flat): runs of a few thousand inputs.
        "-rss_limit_mb=4096",
        f"-artifact_prefix={args.out}/",
        "-print_final_stats=1",
    ]
    atheris.Setup(libfuzzer, one_input)
    atheris.Fuzz()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from tests.fuzz.cases import Case
    from tests.fuzz.report import read_reproducer
    from tests.fuzz.wire_mutations import START_NS

    doc = read_reproducer(args.replay)
    print(f"fuzz: replaying {doc['kind']} of case {doc['case']}: {doc['label']}")
    harness = _harness(args)
    if doc.get("bundle"):
        # A finding of a pipeline step: the bundle through the pipeline and the encoder.
        from perception.msgs import wire
        from tests.fuzz.harness import unpickle_bundle

        bundle = unpickle_bundle(doc["bundle"])
        try:
            wire.encode(harness.pipeline.step(bundle, 0))
        except Exception:
            traceback.print_exc()
            return 1
        print("fuzz: the bundle steps and encodes")
        return 0
    harness.run_frames(Case(list(doc["frames"]), START_NS, doc["label"]))
    harness.end_episode()
    c = harness.tally
    print(
        f"fuzz: decode errors {c.decode_errors}, refused {dict(c.refused)}, synchroniser errors "
        f"{c.sync_errors}, accepted {dict(c.accepted)}"
    )
    for f in harness.findings.values():
        print(f"fuzz: {f.kind}: {f.where}: {f.detail}")
    return 1 if harness.failures() else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs = _CountingHandler()
    root = logging.getLogger("perception")
    root.addHandler(logs)
    root.propagate = False
    # The numpy warnings hostile values cause (overflow in a matmul) are expected, not news.
    import warnings

    warnings.simplefilter("ignore", RuntimeWarning)
    if args.replay is not None:
        return _replay(args)
    if args.engine == "atheris":
        return _run_atheris(args)
    return _run_own(args, logs)


if __name__ == "__main__":
    sys.exit(main())
