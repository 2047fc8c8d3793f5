"""What each modality contributes to the learned engine's detections, on synthetic frames
training never saw (#14's attribution; the walk is `replay.training.attribution`).

For every detection of the engine that lies within 1 m of a ground-truth object, the camera's
contribution is its score minus the score of the same peak with the painted channels removed,
both from one engine call. Objects are split by bearing: well inside the camera's view (< 30
deg; the synthetic camera's half field of view is 40.7 deg) and well outside it (> 50 deg).

Two tables per run. The first, per scene and class: the median contribution inside the view,
its 10th and 90th percentiles, the share of seen objects that list the camera in ``sources`` (a
contribution over ``--threshold``, by default the node's ``pipeline.fusion.camera_contribution``),
the median in log-odds (the camera's evidence: near a score of 1 a difference of probabilities
shrinks however strong the evidence), and the largest contribution outside the view (it should
be about 0). The second splits the objects inside the view by whether the camera's detector
named them (a 2D box of their class covers their points).

Run: ``python -m benchmarks.attribution [--model learned_fusion|PATH.onnx] [--seeds 4 5]
[--seconds 1] [--scenes simple rich] [--threshold T]`` (about a minute per scene and second).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engines.errors import ModelError
from perception.config import FusionConfig
from replay.synth.world import SCENES
from replay.training.attribution import Attributed, attributed_detections
from replay.training.sources import SyntheticSource

INSIDE_DEG = 30.0
OUTSIDE_DEG = 50.0


def matched(
    model: str | Path, seeds: list[int], seconds: float, scene: str, threshold: float
) -> tuple[list[Attributed], list[Attributed]]:
    """(inside, outside): the matched detections well inside and well outside the view, every
    second frame of the drives."""
    source = SyntheticSource(seeds, seconds=seconds, scene=scene)
    frames = (source[i] for i in range(0, len(source), 2))
    found = [a for a in attributed_detections(frames, model, camera_contribution=threshold)
             if a.matched]  # fmt: skip
    return ([a for a in found if a.bearing_deg < INSIDE_DEG],
            [a for a in found if a.bearing_deg > OUTSIDE_DEG])  # fmt: skip


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: np.ndarray = np.log(q / (1 - q))
    return out


def _gains(found: list[Attributed]) -> np.ndarray:
    return np.array([a.detection.score - a.camera_free_score for a in found])


def table(rows: dict[str, tuple[list[Attributed], list[Attributed]]], threshold: float) -> str:
    lines = [
        "| scene | class | seen objects | median contribution | 10th-90th pct | camera in sources "
        "| median in log-odds | outside the view: objects, max abs contribution |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for scene, (inside, outside) in rows.items():
        for label in sorted({a.detection.label for a in inside + outside}):
            seen = [a for a in inside if a.detection.label == label]
            out = np.abs(_gains([a for a in outside if a.detection.label == label]))
            gains = _gains(seen)
            if len(gains):
                lo, mid, hi = np.percentile(gains, [10, 50, 90])
                share = float(np.mean(gains > threshold))
                scores = np.array([(a.detection.score, a.camera_free_score) for a in seen])
                odds = float(np.median(_logit(scores[:, 0]) - _logit(scores[:, 1])))
                text = f"{mid:+.3f} | {lo:+.3f} to {hi:+.3f} | {share:.0%} | {odds:+.2f}"
            else:
                text = "- | - | - | -"
            far = f"{len(out)}, {out.max():.3f}" if len(out) else "0, -"
            lines.append(f"| {scene} | {label} | {len(gains)} | {text} | {far} |")
    return "\n".join(lines)


def named_table(
    rows: dict[str, tuple[list[Attributed], list[Attributed]]], threshold: float
) -> str:
    def cell(found: list[Attributed]) -> str:
        gains = _gains(found)
        if not len(gains):
            return "0"
        return f"{len(gains)}, {np.median(gains):+.3f}, {np.mean(gains > threshold):.0%}"

    lines = [
        f"| scene | class | named by the camera: objects, median contribution, camera in sources "
        f"(> {threshold:g}) | not named: objects, median, camera in sources |",
        "| --- | --- | --- | --- |",
    ]
    for scene, (inside, _) in rows.items():
        for label in sorted({a.detection.label for a in inside}):
            seen = [a for a in inside if a.detection.label == label]
            named = cell([a for a in seen if a.named_by_camera])
            other = cell([a for a in seen if not a.named_by_camera])
            lines.append(f"| {scene} | {label} | {named} | {other} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="learned_fusion")
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=SCENES)
    parser.add_argument("--threshold", type=float, default=FusionConfig().camera_contribution)
    args = parser.parse_args()
    try:
        rows = {s: matched(args.model, args.seeds, args.seconds, s, args.threshold)
                for s in args.scenes}  # fmt: skip
    except (ModelError, ValueError) as e:
        parser.error(str(e))
    print(table(rows, args.threshold))
    print()
    print(named_table(rows, args.threshold))


if __name__ == "__main__":
    main()
