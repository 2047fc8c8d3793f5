"""What each modality contributes to the learned engine's detections, on synthetic frames
training never saw (#14's attribution).

For every detection of the engine that lies within 1 m of a ground-truth object, the camera's
contribution is its score minus the score of the same peak with the painted channels removed,
both from one engine call (``camera_free_score``). Objects are split by bearing: well inside the
camera's view (< 30 deg; the synthetic camera's half field of view is 40.7 deg) and well outside
it (> 50 deg). Per scene and class it prints the median contribution inside the view, its 10th
and 90th percentiles, the share of seen objects that list the camera in ``sources`` (a
contribution over ``pipeline.fusion.camera_contribution``), and the largest contribution outside
the view (it should be about 0); and the median contribution in log-odds (the camera's evidence:
near a score of 1 a difference of probabilities shrinks however strong the evidence).

Run: ``python -m benchmarks.attribution [--model learned_fusion|PATH.onnx] [--seeds 4 5]
[--seconds 1] [--scenes simple rich]`` (about a minute per scene and second).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from engines.factory import EngineFactory
from engines.fusion.learned_runner import LearnedFusionRunner
from perception.config import FusionConfig
from perception.pipeline.ensemble import learned_detections
from replay.training.fusion_config import CameraPaintConfig
from replay.training.fusion_data import prepare
from replay.training.sources import SyntheticSource
from replay.training.train_fusion import build_painter

INSIDE_DEG = 30.0
OUTSIDE_DEG = 50.0
MATCH_M = 1.0


Scores = dict[str, list[tuple[float, float]]]


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: np.ndarray = np.log(q / (1 - q))
    return out


def contributions(
    model: str | Path, seeds: list[int], seconds: float, scene: str, step: int = 2
) -> tuple[Scores, Scores]:
    """(inside, outside): per detected class, each matched detection's (score, camera-free
    score), every ``step``-th frame of the drives."""
    engine, learned = EngineFactory().learned_fusion_engine(model)
    runner = LearnedFusionRunner.for_model(engine, learned)
    painter = build_painter(CameraPaintConfig(model="synth", kind="yolox", score_threshold=0.15))
    source = SyntheticSource(seeds, seconds=seconds, scene=scene)
    inside: Scores = defaultdict(list)
    outside: Scores = defaultdict(list)
    threshold = FusionConfig().camera_contribution
    for index in range(0, len(source), step):
        sample = source[index]
        found = runner.run(prepare(sample, painter, learned.config).points)
        dets = learned_detections(
            found.rows, found.camera_free_score, learned.config.classes,
            camera_seen=True, camera_contribution=threshold,
        )  # fmt: skip
        for det, free in zip(dets, found.camera_free_score, strict=True):
            if not any(math.dist(b.center[:2], det.center[:2]) < MATCH_M for b in sample.boxes):
                continue
            bearing = abs(math.degrees(math.atan2(det.center[1], det.center[0])))
            if bearing > OUTSIDE_DEG:
                outside[det.label].append((det.score, float(free)))
            elif bearing < INSIDE_DEG:
                inside[det.label].append((det.score, float(free)))
    return inside, outside


def table(rows: dict[str, tuple[Scores, Scores]], threshold: float) -> str:
    lines = [
        "| scene | class | seen objects | median contribution | 10th-90th pct | camera in sources "
        "| median in log-odds | outside the view: objects, max abs contribution |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for scene, (inside, outside) in rows.items():
        for label in sorted(set(inside) | set(outside)):
            pairs = np.array(inside.get(label, [])).reshape(-1, 2)
            gains = pairs[:, 0] - pairs[:, 1]
            out = np.abs(np.array(outside.get(label, [])).reshape(-1, 2) @ [1.0, -1.0])
            if len(gains):
                lo, mid, hi = np.percentile(gains, [10, 50, 90])
                share = float(np.mean(gains > threshold))
                odds = float(np.median(_logit(pairs[:, 0]) - _logit(pairs[:, 1])))
                seen = f"{mid:+.3f} | {lo:+.3f} to {hi:+.3f} | {share:.0%} | {odds:+.2f}"
            else:
                seen = "- | - | - | -"
            far = f"{len(out)}, {out.max():.3f}" if len(out) else "0, -"
            lines.append(f"| {scene} | {label} | {len(gains)} | {seen} | {far} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="learned_fusion")
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--scenes", nargs="+", default=["simple", "rich"])
    args = parser.parse_args()
    rows = {s: contributions(args.model, args.seeds, args.seconds, s) for s in args.scenes}
    print(table(rows, FusionConfig().camera_contribution))


if __name__ == "__main__":
    main()
