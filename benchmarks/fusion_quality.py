"""Detection quality of the fusion kinds on synthetic drives of seeds training never saw, with
every sensor and with one removed or degraded: the tables of benchmarks/RESULTS.md.

    python -m benchmarks.fusion_quality --seeds 0 1 2 --out perception-quality \
        --without none camera lidar-half-beams camera-dark camera-blur [--scene rich]

Each (seed, degradation) runs `perception demo`'s `run_demo` with every fusion kind; the match
results are merged over the seeds and printed as Markdown (per class and kind: recall,
precision, BEV AP, median centre and yaw errors, counts). Prints progress (a script).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from replay.evaluation import MatchResult, average_precision, merge_results
from replay.synth.demo import (
    CLASSES,
    DEGRADATIONS,
    degradation,
    ensure_synthetic_drive,
    run_demo,
)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, MatchResult]) -> list[str]:
    lines = [
        "| class | fusion | recall | precision | BEV AP | median centre m | median yaw deg | "
        "found / objects | false positives |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label in CLASSES:
        for kind, result in results.items():
            st = result.stats(label)
            lines.append(
                f"| {label} | {kind} | {_fmt(st.recall, '.3f')} | {_fmt(st.precision, '.3f')} | "
                f"{_fmt(average_precision(result, label), '.3f')} | "
                f"{_fmt(st.median_center_error_m, '.2f')} | "
                f"{_fmt(st.median_yaw_error_deg, '.1f')} | "
                f"{st.true_positives} / {st.true_positives + st.false_negatives} | "
                f"{st.false_positives} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("perception-quality"))
    parser.add_argument("--fusion", nargs="+", default=["geometric", "learned", "ensemble"])
    parser.add_argument(
        "--without",
        nargs="+",
        default=["none"],
        help=f"none, or one of {', '.join(DEGRADATIONS)} (camera-dark:LEVEL, camera-blur:LEVEL)",
    )
    parser.add_argument("--learned-model", type=Path)
    parser.add_argument("--scene", choices=["simple", "rich"], default="simple")
    args = parser.parse_args()
    for without in args.without:
        if without != "none":
            try:
                degradation(without)
            except ValueError as e:
                parser.error(str(e))
    for without in args.without:
        merged: dict[str, list[MatchResult]] = {k: [] for k in args.fusion}
        t0 = time.perf_counter()
        for seed in args.seeds:
            out = args.out / f"seed{seed}-{without}"
            out.mkdir(parents=True, exist_ok=True)
            # One drive per seed, shared by the degradations.
            drive = args.out / f"synth_{args.scene}_seed{seed}_{args.seconds:g}s.mcap"
            ensure_synthetic_drive(drive, seed=seed, seconds=args.seconds, scene=args.scene)
            report = run_demo(
                drive,
                out_dir=out,
                fusion=args.fusion,
                without=None if without == "none" else without,
                learned_model=args.learned_model,
            )
            for run in report.runs:
                merged[run.kind].append(run.result)
            print(f"seed {seed}, without {without}: {report.frames} sweeps", flush=True)
        print(
            f"\n### {args.scene} world, without: {without} (seeds "
            f"{', '.join(map(str, args.seeds))}, "
            f"{args.seconds:g} s each; {time.perf_counter() - t0:.0f} s)\n"
        )
        print("\n".join(table({k: merge_results(v) for k, v in merged.items()})), flush=True)


if __name__ == "__main__":
    main()
