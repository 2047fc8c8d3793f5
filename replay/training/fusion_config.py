"""The training config of the learned fusion engine (`perception train CONFIG`): a YAML file.

```yaml
seed: 0
data:
  train: [{kind: synthetic, seeds: {start: 100, count: 40}, seconds: 10}]
  val: [{kind: synthetic, seeds: [7], seconds: 5}]
camera: {model: synth, score_threshold: 0.15}   # the 2D detector that paints the points
model: {pillar_m: 0.32, channels: [32, 64]}       # engines.fusion.learned_config fields
train: {steps: 4000, batch: 2, lr: 0.002, weight_decay: 0.01, checkpoint_every: 200,
        eval_every: 1000, threads: 2}
augment: {rotate_deg: 10, scale: [0.95, 1.05], flip_y: 0.5}
dropout: {camera: 0.2, camera_blind: 0.1, beams: 0.15}
gt_sampling: {counts: {Pedestrian: 4, Cyclist: 4}, probability: 0.5}   # optional (SECOND)
```

Data entries are training sources (``replay.training.sources``); relative paths are relative to
the config file. Every value is checked when the file is read (types, finite numbers, ranges,
sizes bounded so that a typo is one line rather than an allocation of terabytes); the sources'
files are looked for when they are opened. ``camera.model`` is ``synth`` (the packaged detector
trained on synthetic renders), ``none`` (no camera: a lidar-only model), a registered model name
or an ONNX file. ``model.classes`` must be among the classes the sources label
(``replay.training.samples.TRAINING_CLASSES``: Car, Pedestrian, Cyclist).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration.errors import load_yaml, read_text
from engines.camera.detector import KINDS
from engines.checks import check_count, check_number, check_probability
from engines.fusion.learned_config import LearnedFusionConfig
from engines.settings import MAX_THREADS
from replay.training.fusion_data import AugmentConfig, DropoutConfig
from replay.training.gt_sampling import GtSamplingConfig
from replay.training.samples import TRAINING_CLASSES
from replay.training.sources import MAX_SEED, check_source

__all__ = [
    "MAX_BATCH",
    "MAX_STEPS",
    "CameraPaintConfig",
    "FusionTrainConfig",
    "OptimConfig",
    "load_train_config",
    "parse_train_config",
]

#: The most optimiser steps of a run (the packaged engine took 5,000): more is a typo.
MAX_STEPS = 10_000_000
#: The most samples of a batch: each holds its pillars and a BEV grid of features.
MAX_BATCH = 256


@dataclass(frozen=True)
class CameraPaintConfig:
    """The detector whose boxes paint the points: ``model`` (see the module docstring),
    ``kind`` and ``score_threshold`` as in the node's ``camera_model`` section."""

    model: str = "synth"
    kind: str = "yolox"
    score_threshold: float = 0.15

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(
                f"camera.model must be synth, none, a model name or an ONNX file, "
                f"got {self.model!r}"
            )
        if self.kind != "auto" and self.kind not in KINDS:
            raise ValueError(
                f"camera.kind must be auto or one of {', '.join(KINDS)}, got {self.kind!r}"
            )
        check_probability(self.score_threshold, "camera.score_threshold")


@dataclass(frozen=True)
class OptimConfig:
    """``steps`` optimiser steps (1 to :data:`MAX_STEPS`) of ``batch`` samples (1 to
    :data:`MAX_BATCH`), AdamW at a one-cycle learning rate peaking at ``lr`` (in (0, 1]) with
    ``weight_decay`` (in [0, 1]); a checkpoint every ``checkpoint_every`` steps, a validation
    every ``eval_every`` (0: only at the end); ``threads`` torch CPU threads (1 to
    ``engines.settings.MAX_THREADS``).

    A config gives the same model bytes every run with ``threads: 1`` only. With more threads
    separate runs agree within float rounding: on the 2-core machine, about 1 run in 5 of the
    same config differed in the losses' 7th digit from the first step on (the focal loss of
    identical logits; ``torch.use_deterministic_algorithms`` did not remove it).

    Raises:
        ValueError: a value of another type or out of its range (one line naming the key).
    """

    steps: int = 4000
    batch: int = 2
    lr: float = 0.002
    weight_decay: float = 0.01
    checkpoint_every: int = 200
    eval_every: int = 1000
    threads: int = 2

    def __post_init__(self) -> None:
        check_count(self.steps, "train.steps", 1, MAX_STEPS)
        check_count(self.batch, "train.batch", 1, MAX_BATCH)
        # An infinite rate trains NaN weights to the end (and exports them); AdamW shrinks
        # each weight by lr * weight_decay a step, which past 1 flips its sign.
        check_number(self.lr, "train.lr", 0.0, 1.0, above_low=True)
        check_number(self.weight_decay, "train.weight_decay", 0.0, 1.0)
        check_count(self.checkpoint_every, "train.checkpoint_every", 1, MAX_STEPS)
        check_count(self.eval_every, "train.eval_every", 0, MAX_STEPS)
        # As the node's engines: beyond this, thread stacks no longer map.
        check_count(self.threads, "train.threads", 1, MAX_THREADS)


@dataclass(frozen=True)
class FusionTrainConfig:
    """Everything a training run depends on (see the module docstring)."""

    train_sources: tuple[Mapping[str, Any], ...]
    val_sources: tuple[Mapping[str, Any], ...] = ()
    seed: int = 0
    camera: CameraPaintConfig = field(default_factory=CameraPaintConfig)
    model: LearnedFusionConfig = field(default_factory=LearnedFusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    gt_sampling: GtSamplingConfig | None = None
    base_dir: Path = field(default=Path("."), compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain values (what a checkpoint stores, and ``load`` reads back)."""
        return {
            "seed": self.seed,
            "data": {"train": [dict(s) for s in self.train_sources],
                     "val": [dict(s) for s in self.val_sources]},
            "camera": dataclasses.asdict(self.camera),
            "model": self.model.to_dict(),
            "train": dataclasses.asdict(self.optim),
            "augment": dataclasses.asdict(self.augment),
            "dropout": dataclasses.asdict(self.dropout),
            "gt_sampling": None if self.gt_sampling is None
            else dataclasses.asdict(self.gt_sampling),
        }  # fmt: skip


def _section(doc: Mapping[str, Any], key: str, cls: type[Any], where: str) -> Any:
    values = doc.get(key) or {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: {key} must be a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: {key}: unknown key(s) {', '.join(map(str, unknown))}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {key}: {e}") from e


def parse_train_config(doc: Any, where: str, base_dir: Path) -> FusionTrainConfig:
    """The config of a parsed YAML document.

    Raises:
        ValueError: a missing or unknown key, or a bad value (names ``where`` and the key).
    """
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: a training config must be a mapping")
    known = {"seed", "data", "camera", "model", "train", "augment", "dropout", "gt_sampling"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    data = doc.get("data")
    if not isinstance(data, Mapping) or not data.get("train"):
        raise ValueError(f"{where}: data.train must list at least one source")
    train, val = data.get("train"), data.get("val") or []
    for name, entries in (("train", train), ("val", val)):
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            raise ValueError(f"{where}: data.{name} must be a list of source mappings")
    # Every random stream of a step is seeded from it (numpy and torch, which refuse more).
    seed = check_count(doc.get("seed", 0), f"{where}: seed", 0, MAX_SEED)
    model_doc = doc.get("model") or {}
    if not isinstance(model_doc, Mapping):
        raise ValueError(f"{where}: model must be a mapping")
    try:
        model = LearnedFusionConfig.from_dict(dict(model_doc))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: model: {e}") from e
    # The sources keep the boxes of these classes only (the rest are masked): a head class
    # outside them has no object to learn, and trained to detect nothing.
    for name in model.classes:
        if name not in TRAINING_CLASSES:
            raise ValueError(
                f"{where}: model.classes: {name!r} is not a class the training sources label "
                f"(known: {', '.join(TRAINING_CLASSES)})"
            )
    gt_sampling = (
        _section(doc, "gt_sampling", GtSamplingConfig, where)
        if doc.get("gt_sampling") is not None
        else None
    )
    if gt_sampling is not None:
        # Class names are checked against the head's classes now, not after the samples are
        # prepared (minutes in).
        try:
            gt_sampling.class_counts(model.classes)
            gt_sampling.decoy_counts(model.classes)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    config = FusionTrainConfig(
        train_sources=tuple(dict(e) for e in train or ()),
        val_sources=tuple(dict(e) for e in val),
        seed=seed,
        camera=_section(doc, "camera", CameraPaintConfig, where),
        model=model,
        optim=_section(doc, "train", OptimConfig, where),
        augment=_section(doc, "augment", AugmentConfig, where),
        dropout=_section(doc, "dropout", DropoutConfig, where),
        gt_sampling=gt_sampling,
        base_dir=base_dir,
    )
    # The sources' values (seeds, seconds, names) now; their files when they are opened.
    for name, entries in (("train", train or []), ("val", val)):
        for entry in entries:
            try:
                check_source(entry)
            except ValueError as e:
                raise ValueError(f"{where}: data.{name}: {e}") from None
    return config


def load_train_config(path: Path) -> FusionTrainConfig:
    """The training config in the YAML file ``path``.

    Raises:
        ValueError: unreadable, not YAML, or not a valid config (one line naming the file).
    """
    path = Path(path)
    text = read_text(path, "the training config", ValueError)
    doc = load_yaml(text, path, "not valid YAML", ValueError)
    return parse_train_config(doc, str(path), path.parent)
