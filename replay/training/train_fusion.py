"""Training the learned fusion engine (`perception train CONFIG`).

One run writes into its output folder:
- ``checkpoints/last.pt`` every ``checkpoint_every`` steps and at the end (model, optimiser and
  scheduler state, step, config): ``resume`` continues from it and gives the same weights as an
  uninterrupted run, because every random choice of a step is drawn from (seed, step) (the same
  bytes with ``train.threads: 1``; with more threads, see ``fusion_config.OptimConfig``);
- ``metrics.jsonl``: one line per logged step (losses, learning rate, elapsed seconds) and per
  validation (recall, precision, AP and errors per class);
- ``curves.png``: the loss curves and validation figures;
- ``learned_fusion.onnx`` and ``learned_fusion.yaml`` at the end: the export (in-graph decoding,
  static shapes) and its model config with the training provenance.

A run stopped (Ctrl-C, SIGTERM, a failure) before its first checkpoint leaves none of these, and
no folder it made: it has nothing to resume.

Needs torch (a training tool; the node runs the export).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import yaml

from engines.fusion.learned_config import LearnedFusionConfig, bucket_onnx_path, config_path
from engines.fusion.learned_graph import LearnedFusionNet, decode_heads, export_learned_fusion_onnx
from engines.fusion.learned_runner import DEFAULT_SCORE_THRESHOLD
from engines.fusion.pillars import pillarize
from perception.msgs.types import Detection3D
from replay.distributed import check_ray_address, connect_ray
from replay.evaluation import (
    CLASS_MATCH_DISTANCE_M,
    MIN_UNOCCLUDED,
    QUALITY_RANGE_M,
    MatchResult,
    ReferenceBox,
    average_precision,
    merge_results,
    score_frame,
)
from replay.output import atomic_output, check_output_dir, output_dir, try_lock
from replay.training.fusion_config import FusionTrainConfig
from replay.training.fusion_data import (
    Detect,
    PreparedSample,
    Targets,
    augment,
    make_targets,
    prepare,
)
from replay.training.gt_sampling import GtSampler
from replay.training.parallel_prepare import build_painter, prepare_in_workers
from replay.training.sources import open_source

__all__ = [
    "TrainResult",
    "build_painter",
    "class_figures",
    "detections_of",
    "evaluate",
    "prepare_sources",
    "scored_references",
    "train",
    "tune_thresholds",
]

#: Weight of the regression loss against the heatmap's focal loss.
REGRESSION_WEIGHT = 1.0
#: Velocity regression weighs less: it is learnt from one sweep's shape only.
VELOCITY_WEIGHT = 0.2

Progress = Callable[[int, int, float], None]


def prepare_sources(
    specs: Sequence[Mapping[str, Any]],
    base_dir: Path,
    painter: Detect | None,
    model: LearnedFusionConfig,
    progress: Callable[[int, int], None] | None = None,
) -> list[PreparedSample]:
    """Every sample of ``specs``, painted (see ``replay.training.fusion_data.prepare``).

    Raises:
        ValueError: a bad source spec (names it).
    """
    sources = [open_source(spec, base_dir) for spec in specs]
    total = sum(len(s) for s in sources)
    out: list[PreparedSample] = []
    for source in sources:
        for i in range(len(source)):
            out.append(prepare(source[i], painter, model))
            if progress is not None:
                progress(len(out), total)
    return out


def _epoch_order(seed: int, epoch: int, n: int) -> npt.NDArray[np.int64]:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1, epoch])))
    return rng.permutation(n)


def _batch_indices(seed: int, step: int, batch: int, n: int) -> list[int]:
    out = []
    for k in range(step * batch, (step + 1) * batch):
        epoch, i = divmod(k, n)
        out.append(int(_epoch_order(seed, epoch, n)[i]))
    return out


def _collate(
    samples: Sequence[PreparedSample], model: LearnedFusionConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    pillars = [pillarize(s.points, model) for s in samples]
    targets: list[Targets] = [make_targets(s, model) for s in samples]
    inputs = {
        "pillars": torch.from_numpy(np.stack([p.pillars for p in pillars])),
        "pillar_points": torch.from_numpy(np.stack([p.pillar_points for p in pillars])),
        "pillar_cells": torch.from_numpy(np.stack([p.pillar_cells for p in pillars])),
    }
    names = ("heatmap", "negative_weight", "index", "mask", "regression", "velocity_known")
    return inputs, {k: torch.from_numpy(np.stack([getattr(t, k) for t in targets])) for k in names}


def _losses(
    heat_logits: torch.Tensor, regression: torch.Tensor, target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """CenterNet's focal loss on the heatmap and an L1 loss on the regression at each object's
    centre cell."""
    pred = torch.sigmoid(heat_logits).clamp(1e-4, 1 - 1e-4)
    gt = target["heatmap"]
    pos = gt.eq(1.0).to(pred.dtype)
    neg_weight = (1 - gt).pow(4) * target["negative_weight"].unsqueeze(1) * (1 - pos)
    pos_loss = (torch.log(pred) * (1 - pred).pow(2) * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred.pow(2) * neg_weight).sum()
    num_pos = pos.sum().clamp(min=1.0)
    heat = -(pos_loss + neg_loss) / num_pos

    b, c, hx, hy = regression.shape
    flat = regression.reshape(b, c, hx * hy)
    index = target["index"].unsqueeze(1).expand(b, c, -1)
    pred_reg = torch.gather(flat, 2, index).transpose(1, 2)  # [B, objects, C]
    mask = target["mask"].unsqueeze(-1)
    weights = torch.ones(c, dtype=pred_reg.dtype)
    weights[-2:] = VELOCITY_WEIGHT
    known = torch.ones_like(pred_reg)
    known[..., -2:] = target["velocity_known"].unsqueeze(-1)
    err = (pred_reg - target["regression"]).abs() * weights * mask * known
    reg = err.sum() / mask.sum().clamp(min=1.0)
    return {"loss": heat + REGRESSION_WEIGHT * reg, "heatmap": heat, "regression": reg}


def detections_of(
    net: LearnedFusionNet, sample: PreparedSample, score: float = DEFAULT_SCORE_THRESHOLD
) -> list[Detection3D]:
    """``net``'s detections on one prepared sample (eval mode, the export's decoding)."""
    cfg = net.config
    p = pillarize(sample.points, cfg)
    with torch.no_grad():
        heat, reg = net(
            torch.from_numpy(p.pillars)[None],
            torch.from_numpy(p.pillar_points)[None],
            torch.from_numpy(p.pillar_cells)[None],
        )
        rows, _ = decode_heads(heat[0], reg[0], cfg)
    out = []
    for row in rows.numpy():
        if row[9] < score:
            continue
        out.append(
            Detection3D(
                label=cfg.classes[int(row[10])],
                score=float(row[9]),
                center=(float(row[0]), float(row[1]), float(row[2])),
                size=(float(row[3]), float(row[4]), float(row[5])),
                yaw=float(row[6]),
                sources=("lidar",),
            )
        )
    return out


def _references(sample: PreparedSample, classes: Sequence[str]) -> list[ReferenceBox]:
    return [
        ReferenceBox(classes[int(r[0])], (float(r[1]), float(r[2]), float(r[3])),
                     (float(r[4]), float(r[5]), float(r[6])), float(r[7]))
        for r in sample.boxes
    ]  # fmt: skip


def scored_references(sample: PreparedSample) -> list[bool]:
    """Which of a sample's objects count: visible to the camera (at least
    :data:`MIN_UNOCCLUDED`) where the source knows visibility, all where it does not (KITTI's
    camera-cropped scans)."""
    visibility = sample.boxes[:, 10]
    return [not math.isfinite(v) or v >= MIN_UNOCCLUDED for v in visibility]


def evaluate(
    net: LearnedFusionNet, samples: Sequence[PreparedSample], range_m: float = QUALITY_RANGE_M
) -> dict[str, dict[str, float | int | None]]:
    """Per class over ``samples`` (``score_frame``: objects within ``range_m`` the camera sees):
    recall and precision at :data:`CLASS_MATCH_DISTANCE_M`, BEV AP (R40), median centre and yaw
    error of the matches."""
    net.eval()
    cfg = net.config
    results = [
        score_frame(
            detections_of(net, sample),
            _references(sample, cfg.classes),
            scored_references(sample),
            classes=cfg.classes,
            match_distance_m=CLASS_MATCH_DISTANCE_M,
            range_m=range_m,
        )
        for sample in samples
    ]
    merged = merge_results(results)
    return {label: class_figures(merged, label) for label in cfg.classes}


def class_figures(result: MatchResult, label: str) -> dict[str, float | int | None]:
    """The figures of one class of a (merged) result, as the training log and RESULTS report
    them."""
    stats = result.stats(label)
    return {
        "references": stats.true_positives + stats.false_negatives,
        "detections": stats.true_positives + stats.false_positives,
        "recall": stats.recall,
        "precision": stats.precision,
        "ap_bev": average_precision(result, label),
        "median_centre_m": stats.median_center_error_m,
        "median_yaw_deg": stats.median_yaw_error_deg,
    }


#: Score thresholds tried when tuning a class's threshold on the validation drives.
THRESHOLD_CANDIDATES = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))


def tune_thresholds(
    net: LearnedFusionNet, samples: Sequence[PreparedSample], range_m: float = QUALITY_RANGE_M
) -> dict[str, float]:
    """Per class, the score threshold of :data:`THRESHOLD_CANDIDATES` with the best F1 on
    ``samples`` (the lowest of equals); classes without objects there are left out."""
    net.eval()
    cfg = net.config
    frames = [
        (detections_of(net, s, score=min(THRESHOLD_CANDIDATES)), _references(s, cfg.classes),
         scored_references(s))
        for s in samples
    ]  # fmt: skip
    out: dict[str, float] = {}
    for label in cfg.classes:
        best: tuple[float, float] | None = None
        for t in THRESHOLD_CANDIDATES:
            merged = merge_results(
                score_frame(
                    [d for d in dets if d.label == label and d.score >= t], refs, scored,
                    classes=(label,), match_distance_m=CLASS_MATCH_DISTANCE_M, range_m=range_m,
                )
                for dets, refs, scored in frames
            )  # fmt: skip
            st = merged.stats(label)
            if st.true_positives + st.false_negatives == 0:
                break
            f1 = (
                2
                * st.true_positives
                / (2 * st.true_positives + st.false_negatives + st.false_positives)
            )
            if best is None or f1 > best[0] + 1e-12:
                best = (f1, t)
        if best is not None:
            out[label] = best[1]
    return out


@dataclass(frozen=True)
class TrainResult:
    """What a run ended with: its steps in all (the config's), the seconds this process spent
    on its steps, the final losses and validation figures, the files written, and the step it
    was resumed at (0: started; ``steps``: resumed finished, no step taken). This process took
    ``steps - resumed_at`` steps."""

    steps: int
    seconds: float
    final_loss: float
    validation: Mapping[str, Mapping[str, float | int | None]]
    onnx_path: Path
    checkpoint_path: Path
    resumed_at: int = 0

    @property
    def steps_this_run(self) -> int:
        """The steps this process took."""
        return self.steps - self.resumed_at


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        # Interrupted mid-write (Ctrl-C, SIGTERM): no torn checkpoint left beside the last one.
        tmp.unlink(missing_ok=True)
        raise


def run_files(out_dir: Path, model: LearnedFusionConfig) -> list[Path]:
    """The files a training run of ``model`` writes into ``out_dir`` (see the module
    docstring), which no input of the run may be."""
    onnx_path = out_dir / "learned_fusion.onnx"
    return [
        out_dir / "checkpoints" / "last.pt",
        out_dir / "metrics.jsonl",
        out_dir / "curves.png",
        onnx_path,
        onnx_path.with_suffix(".pt"),
        config_path(onnx_path),
        *(bucket_onnx_path(onnx_path, n) for n in model.pillar_buckets[:-1]),
    ]


def _append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _trim_metrics(path: Path, step: int, *, final_step: int | None = None) -> None:
    """Drops records after ``step`` (written by a run that died after its last checkpoint),
    the validation at ``final_step`` (the end's, which the resumed run logs again), and a line
    that is no record (torn by a crash while it was written)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        at = record.get("step", 0)
        final_val = final_step is not None and at == final_step and record.get("kind") == "val"
        if isinstance(at, int | float) and at <= step and not final_val:
            kept.append(line)
    # Replaced whole: a Ctrl-C while it was rewritten in place lost the run's log.
    with atomic_output(path, "the metrics log") as tmp:
        tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")


def plot_curves(metrics_path: Path, png_path: Path) -> None:
    """Loss curves and validation recall/precision of a metrics log, as a PNG."""
    import matplotlib  # noqa: PLC0415 - plotting only when asked

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    records = [json.loads(ln) for ln in metrics_path.read_text(encoding="utf-8").splitlines() if ln]
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "heatmap", "regression"):
        axes[0].plot([r["step"] for r in train], [r[key] for r in train], label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss")
    axes[0].legend()
    for label in ("Car", "Pedestrian", "Cyclist"):
        pts = [(r["step"], r["classes"].get(label, {})) for r in val]
        for key, style in (("recall", "-"), ("precision", "--")):
            xs = [s for s, c in pts if c.get(key) is not None]
            ys = [c[key] for _, c in pts if c.get(key) is not None]
            if xs:
                axes[1].plot(xs, ys, style, marker="o", label=f"{label} {key}")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("step")
    axes[1].set_title("validation (within 40 m)")
    if axes[1].get_lines():
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    try:
        # Written whole or not at all (a Ctrl-C mid-write left a torn PNG).
        with atomic_output(png_path, "the curves") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def _unwrapped(net: torch.nn.Module) -> LearnedFusionNet:
    """The net inside a DistributedDataParallel wrapper (or the net itself)."""
    inner = getattr(net, "module", net)
    assert isinstance(inner, LearnedFusionNet)
    return inner


@dataclass(frozen=True)
class _Prepared:
    """What every worker trains on: the painted training and validation samples."""

    train_set: list[PreparedSample]
    val_set: list[PreparedSample]


def _prepare(
    config: FusionTrainConfig,
    prepare_progress: Callable[[int, int], None] | None,
    say: Callable[[str], None],
    model_cache_dir: Path | None,
    workers: int = 1,
) -> _Prepared:
    painter = build_painter(config.camera, model_cache_dir)
    if workers > 1:
        train_set = prepare_in_workers(
            config.train_sources,
            config.base_dir,
            config.camera,
            config.model,
            workers,
            cache_dir=model_cache_dir,
            progress=prepare_progress,
        )
    else:
        train_set = prepare_sources(
            config.train_sources, config.base_dir, painter, config.model, prepare_progress
        )
    if not train_set:
        raise ValueError("training config: data.train holds no sample")
    val_set = prepare_sources(config.val_sources, config.base_dir, painter, config.model)
    say(f"{len(train_set)} training samples, {len(val_set)} validation samples")
    return _Prepared(train_set, val_set)


def train(
    config: FusionTrainConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    prepare_progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    model_cache_dir: Path | None = None,
    ray_address: str | None = None,
    workers: int = 2,
    prepare_workers: int = 1,
) -> TrainResult:
    """Trains the learned fusion engine of ``config`` into ``out_dir`` (see the module
    docstring); ``resume`` continues from ``out_dir/checkpoints/last.pt``.
    ``prepare_workers`` > 1 prepares the training samples in that many processes (the same
    samples, sooner: ``replay.training.parallel_prepare``).

    With ``ray_address`` (``local`` starts a Ray instance on this machine; else ``auto`` or
    ``ray://head:10001``) the steps run data-parallel on Ray Train: ``workers`` workers each
    take their share of every batch (the same global batches as one process) and average
    their gradients (torch DistributedDataParallel, gloo); the samples are prepared once, here,
    and the first worker writes the run's files (``out_dir`` must be a folder every worker
    sees: a local cluster, or shared storage). Needs ``ray[train]``.

    Raises:
        ValueError: a bad source, no training sample, fewer than 1 worker; with ``resume``, no
            checkpoint, a damaged one or one of another config.
        replay.output.OutputError: ``out_dir`` cannot be a writable folder.
    """
    say = log or (lambda _text: None)
    out_dir = Path(out_dir)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if ray_address is not None:
        check_ray_address(ray_address)
    _check_out_dir(out_dir, config.model)
    with _run_lock(out_dir):
        resumed = _check_resume(out_dir / "checkpoints" / "last.pt", config) if resume else None
        prepared = _prepare(config, prepare_progress, say, model_cache_dir, prepare_workers)
        if ray_address is None:
            return _train_loop(
                config, prepared, out_dir, resume=resume, state=resumed, progress=progress, say=say
            )
        return _train_on_ray(
            config,
            prepared,
            out_dir.resolve(),
            resume=resume,
            resumed_at=0 if resumed is None else int(resumed["step"]),
            address=ray_address,
            workers=workers,
            say=say,
        )


@contextlib.contextmanager
def _run_lock(out_dir: Path) -> Iterator[None]:
    """Holds `out_dir` (made when missing) for one run: a second run into the same folder
    trained beside the first, both appending to one metrics log and replacing each other's
    checkpoint, until one failed on the other's temporary file. The lock (flock on the folder)
    goes with the process, however it ends. Folders made here are removed again when the run
    fails and leaves them empty (replay.output.output_dir: it stopped before its first
    checkpoint).

    Raises:
        ValueError: another run holds the folder.
    """
    with output_dir(out_dir, "the training run's folder"):
        fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if not try_lock(fd, fcntl.LOCK_EX):
                raise ValueError(
                    f"{out_dir}: another training run is writing into this folder; wait for it "
                    "to end or choose another --out"
                )
            yield
        finally:
            os.close(fd)


def _check_out_dir(out_dir: Path, model: LearnedFusionConfig) -> None:
    """Refuses a folder that cannot be made or written, or that holds something other than a
    file where a run's file goes (a folder named curves.png failed the run at its end, after
    the steps), before anything is prepared (minutes); the folders made to find out are removed
    again, so that a config whose sources cannot be read still leaves no folder behind."""
    made = list(itertools.takewhile(lambda p: not p.exists(), (out_dir, *out_dir.parents)))
    check_output_dir(out_dir, "the training run's folder")
    for folder in made:  # the deepest first
        try:
            folder.rmdir()
        except OSError:
            break
    for path in run_files(out_dir, model):
        if path.exists() and not path.is_file():
            kind = "a folder" if path.is_dir() else "a device, pipe or socket"
            raise ValueError(
                f"{path}: is {kind}, where the training run writes a file; move it away"
            )


#: What a checkpoint written by :func:`_train_loop` holds.
_CHECKPOINT_KEYS = ("step", "model", "optimizer", "scheduler", "config")


def _load_checkpoint(ckpt_path: Path) -> dict[str, Any]:
    """The state in ``ckpt_path``.

    Raises:
        ValueError: it cannot be read or is not a checkpoint of this trainer (one line naming it).
    """
    try:
        # A damaged file can make torch warn before it fails; the failure says it all.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Tensors and plain values only: a checkpoint is data, never code to run.
            state = torch.load(ckpt_path, weights_only=True)
    except Exception as e:
        # A damaged file fails in whichever layer of the archive or the unpickler notices;
        # the weights-only unpickler wraps the cause in advice that does not apply here.
        cause = e.__cause__ or e.__context__ or e
        text = str(cause).strip()
        why = f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__
        raise ValueError(
            f"{ckpt_path}: not a readable training checkpoint, damaged or not written by "
            f"perception train ({why})"
        ) from e
    if not isinstance(state, dict) or any(k not in state for k in _CHECKPOINT_KEYS):
        raise ValueError(
            f"{ckpt_path}: not a training checkpoint (it lacks {', '.join(_CHECKPOINT_KEYS)})"
        )
    return state


def _check_resume(ckpt_path: Path, config: FusionTrainConfig) -> dict[str, Any]:
    """The checkpoint to resume from; refuses nothing, a damaged checkpoint or one of another
    config (before anything is prepared)."""
    if not ckpt_path.is_file():
        raise ValueError(
            f"nothing to resume: no checkpoint in {ckpt_path.parent} (train without --resume "
            "to start a run)"
        )
    state = _load_checkpoint(ckpt_path)
    if state.get("config") != config.to_dict():
        # Named, so that the one setting changed (--steps, most often) is seen for what it
        # is: "another config" alone read as the wrong file given.
        changed = _config_changes(state.get("config"), config.to_dict())
        shown = "; ".join(changed[:3]) + ("; ..." if len(changed) > 3 else "")
        raise ValueError(
            f"{ckpt_path}: the checkpoint was trained with another config ({shown}); resume "
            "with the config it was started with, or start a new output folder"
        )
    return state


def _config_changes(was: Any, now: Any, key: str = "") -> list[str]:
    """Where config `now` differs from config `was` (a checkpoint's), one entry per key:
    `train.steps: 3 in the checkpoint, 5 now`."""
    if isinstance(was, Mapping) and isinstance(now, Mapping):
        changes = []
        for k in sorted(set(was) | set(now), key=str):
            at = f"{key}.{k}" if key else str(k)
            if k not in was:
                changes.append(f"{at}: not in the checkpoint")
            elif k not in now:
                changes.append(f"{at}: only in the checkpoint")
            else:
                changes += _config_changes(was[k], now[k], at)
        return changes
    if was == now:
        return []

    def short(value: Any) -> str:
        text = json.dumps(value, default=str)
        return text if len(text) <= 40 else f"{text[:37]}..."

    return [f"{key or 'the config'}: {short(was)} in the checkpoint, {short(now)} now"]


def _train_on_ray(
    config: FusionTrainConfig,
    prepared: _Prepared,
    out_dir: Path,
    *,
    resume: bool,
    resumed_at: int,
    address: str,
    workers: int,
    say: Callable[[str], None],
) -> TrainResult:
    import ray  # noqa: PLC0415 - optional, only for a distributed run
    from ray.train import RunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    started_here = connect_ray(address)
    try:
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config={
                "config": config,
                "prepared": ray.put(prepared),
                "out_dir": str(out_dir),
                "resume": resume,
            },
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}
            ),
            run_config=RunConfig(storage_path=str(out_dir / "ray"), name="train"),
        )
        trainer.fit()
    finally:
        if started_here:
            ray.shutdown()
    meta = yaml.safe_load((out_dir / "learned_fusion.yaml").read_text(encoding="utf-8"))
    trained = meta["trained"]
    say(f"trained on Ray Train, {workers} workers")
    return TrainResult(
        int(trained["steps"]),
        float(trained["seconds_this_run"]),
        float(trained["final_loss"]),
        meta["validation"],
        out_dir / "learned_fusion.onnx",
        out_dir / "checkpoints" / "last.pt",
        resumed_at,
    )


def _ray_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: its rank's share of every batch, gradients averaged by DDP."""
    import ray  # noqa: PLC0415
    from ray import train as ray_train  # noqa: PLC0415
    from ray.train.torch import prepare_model  # noqa: PLC0415

    context = ray_train.get_context()
    config: FusionTrainConfig = loop_config["config"]
    prepared_ref = loop_config["prepared"]
    prepared = ray.get(prepared_ref) if isinstance(prepared_ref, ray.ObjectRef) else prepared_ref
    world = context.get_world_size()
    threads = max(1, config.optim.threads // world)
    _train_loop(
        config,
        prepared,
        Path(loop_config["out_dir"]),
        resume=bool(loop_config["resume"]),
        rank=context.get_world_rank(),
        world=world,
        threads=threads,
        wrap=prepare_model,
    )


def _train_loop(
    config: FusionTrainConfig,
    prepared: _Prepared,
    out_dir: Path,
    *,
    resume: bool,
    state: dict[str, Any] | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] = lambda _text: None,
    rank: int = 0,
    world: int = 1,
    threads: int | None = None,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> TrainResult:
    """The optimisation (see :func:`train`); rank 0 of ``world`` workers writes the files.
    With ``resume``, ``state`` is the checkpoint `train` checked (None: each worker reads
    ``out_dir/checkpoints/last.pt`` itself, as Ray's workers do)."""
    ckpt_dir = out_dir / "checkpoints"
    ckpt_path = ckpt_dir / "last.pt"
    metrics_path = out_dir / "metrics.jsonl"
    lead = rank == 0
    torch.set_num_threads(threads or config.optim.threads)
    torch.manual_seed(config.seed)
    # Only now: a config whose sources cannot be read leaves no folder behind.
    made = list(itertools.takewhile(lambda p: not p.exists(), (ckpt_dir, *ckpt_dir.parents)))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _optimise(
            config, prepared, out_dir, resume=resume, state=state, progress=progress, say=say,
            rank=rank, world=world, wrap=wrap,
        )  # fmt: skip
    except BaseException:
        if lead and not ckpt_path.exists():
            # Stopped (Ctrl-C, SIGTERM, a failure) before its first checkpoint: nothing to
            # resume, so no run is left to look like one (a metrics log, empty folders).
            metrics_path.unlink(missing_ok=True)
            for folder in made:  # the deepest first
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise


def _optimise(
    config: FusionTrainConfig,
    prepared: _Prepared,
    out_dir: Path,
    *,
    resume: bool,
    state: dict[str, Any] | None,
    progress: Progress | None,
    say: Callable[[str], None],
    rank: int,
    world: int,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None,
) -> TrainResult:
    """`_train_loop`'s steps and export, in the folders it made."""
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    metrics_path = out_dir / "metrics.jsonl"
    lead = rank == 0
    model_cfg = config.model
    train_set, val_set = prepared.train_set, prepared.val_set
    sampler = None
    if config.gt_sampling is not None:
        sampler = GtSampler.build(config.gt_sampling, train_set, model_cfg.classes)
        say(f"ground-truth sampling bank: {dict(sampler.bank.counts())}")

    base = LearnedFusionNet(model_cfg)
    optim = torch.optim.AdamW(
        base.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optim, max_lr=config.optim.lr, total_steps=config.optim.steps, pct_start=0.3
    )
    start = 0
    loss_value = math.nan
    if resume and (state is not None or ckpt_path.exists()):
        # train() refused a damaged checkpoint or one of another config before anything was
        # prepared.
        if state is None:
            state = _load_checkpoint(ckpt_path)
        base.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
        # The loss of the checkpoint's last step: a run resumed at its end (to finish an export
        # a Ctrl-C stopped) takes no step, and reported, and wrote as its final loss, nan.
        loss_value = float(state.get("loss", math.nan))
        if lead:
            # The final validation is logged again at the end.
            _trim_metrics(metrics_path, start, final_step=config.optim.steps)
        say(f"resumed at step {start}")
    elif lead and metrics_path.exists():
        metrics_path.unlink()
    net = wrap(base) if wrap is not None else base

    def checkpoint(step: int) -> None:
        if lead:
            _atomic_save(
                {
                    "step": step,
                    "model": base.state_dict(),
                    "optimizer": optim.state_dict(),
                    "scheduler": sched.state_dict(),
                    "config": config.to_dict(),
                    "loss": loss_value,
                },
                ckpt_path,
            )

    def validate(step: int) -> dict[str, dict[str, float | int | None]]:
        figures = evaluate(base, val_set) if val_set else {}
        _append_metrics(metrics_path, {"kind": "val", "step": step, "classes": figures})
        net.train()
        return figures

    t0 = time.perf_counter()
    net.train()
    steps = config.optim.steps
    for step in range(start, steps):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([config.seed, 2, step])))
        torch.manual_seed(config.seed * 1_000_003 + step)
        picked = _batch_indices(config.seed, step, config.optim.batch, len(train_set))
        # Its own stream: the sampler draws on every call, whatever it pastes.
        gt_rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([config.seed, 3, step]))
        )
        batch = [
            augment(
                train_set[i] if sampler is None else sampler(train_set[i], gt_rng, i),
                rng,
                config.augment,
                config.dropout,
                model_cfg,
            )
            for i in picked
        ]
        # Every worker draws the whole batch (the random streams stay those of one process)
        # and trains on its share.
        mine = batch[rank::world] or batch[:1]
        inputs, targets = _collate(mine, model_cfg)
        heat, reg = net(**inputs)
        losses = _losses(heat, reg, targets)
        optim.zero_grad(set_to_none=True)
        losses["loss"].backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optim.step()
        sched.step()
        loss_value = float(losses["loss"].detach())
        done = step + 1
        if lead and (done % 10 == 0 or done == steps):
            record: dict[str, Any] = {k: float(v.detach()) for k, v in losses.items()}
            record |= {"kind": "train", "step": done, "lr": sched.get_last_lr()[0],
                       "seconds": time.perf_counter() - t0, "workers": world}  # fmt: skip
            _append_metrics(metrics_path, record)
        every = config.optim.eval_every
        if lead and every and done % every == 0 and done < steps:
            validate(done)
        if done % config.optim.checkpoint_every == 0 or done == steps:
            checkpoint(done)
        if progress is not None:
            progress(done, steps, loss_value)
    seconds = time.perf_counter() - t0
    onnx_path = out_dir / "learned_fusion.onnx"
    if not lead:
        return TrainResult(steps, seconds, loss_value, {}, onnx_path, ckpt_path, start)
    figures = validate(steps)
    checkpoint(steps)
    plot_curves(metrics_path, out_dir / "curves.png")
    export_learned_fusion_onnx(base, onnx_path)
    thresholds = tune_thresholds(base, val_set) if val_set else {}
    if thresholds:
        say(f"score thresholds tuned on the validation drives: {thresholds}")
    meta = {
        "model": model_cfg.to_dict(),
        "camera": config.to_dict()["camera"],
        "trained": {"steps": steps, "seconds_this_run": round(seconds, 1), "workers": world,
                    "final_loss": loss_value, "samples": len(train_set),
                    "config": config.to_dict()},
        "validation": figures,
        "score_thresholds": thresholds,
    }  # fmt: skip
    with atomic_output(out_dir / "learned_fusion.yaml", "the export's model config") as tmp:
        tmp.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    return TrainResult(steps, seconds, loss_value, figures, onnx_path, ckpt_path, start)
