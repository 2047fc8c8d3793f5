"""Training data sources behind one interface: synthetic drives, recorded drives with a
ground-truth channel, KITTI object folders.

A `TrainingSource` is a random-access, deterministic sequence of `TrainingSample`s (the same
index gives the same arrays) with a `name` and a one-line `describe()`. `open_source` builds one
from a config entry (a mapping, e.g. one item of a training YAML's `sources:` list):

- `{kind: synthetic, seeds: [0, 1] | {start: 10, count: 20}, seconds: 10.0, scene: simple |
  rich, lidar: synth64 | hdl64e | ...}` (`replay.synth.world.make_world`)
- `{kind: drive, path: drive.mcap}`
- `{kind: kitti, root: .../kitti_object/training, frames: ["000000"], labels: label_2 |
  pointpillars, reference_dir: ...}` (`frames`, `labels`, `reference_dir` optional)

Paths are relative to `base_dir` (the config file's folder). Every entry may carry a `name`.
`ConcatSource` chains several sources into one index space.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from engines.checks import check_count, yaml_text_hint
from replay.synth.world import check_world_options
from replay.training.samples import TrainingSample
from replay.training.sources.drive import DriveSource
from replay.training.sources.kitti import KITTI_LABELS, KittiSource
from replay.training.sources.synthetic import SyntheticSource

__all__ = [
    "ConcatSource",
    "DriveSource",
    "KittiSource",
    "SyntheticSource",
    "TrainingSource",
    "check_source",
    "open_source",
    "open_sources",
]

#: The largest seed of a synthetic source and of a training run: what every random generator
#: a seed feeds accepts (numpy's legacy seeding and torch's, after the per-step offsets).
MAX_SEED = 2**32 - 1
#: Seeds of one `{start, count}` entry: each is a drive held in memory once prepared, so a
#: count beyond this is a typo, refused when the config is read rather than as a MemoryError.
MAX_SEEDS = 100_000
#: The longest synthetic drive, s (36,000 sweeps a seed).
MAX_SYNTHETIC_SECONDS = 3600.0


@runtime_checkable
class TrainingSource(Protocol):
    """Random-access training samples: `source[i]` is deterministic, for 0 <= i < len."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> TrainingSample: ...

    def describe(self) -> str:
        """One line: what the source is and how many samples it holds."""
        ...


class ConcatSource:
    """Several sources as one: index `i` runs through the first source, then the next.

    Raises ValueError when given no sources."""

    def __init__(self, sources: Sequence[TrainingSource], name: str = "concat") -> None:
        if not sources:
            raise ValueError("concat source: no sources")
        self.sources = tuple(sources)
        self.name = name
        self._ends = list(itertools.accumulate(len(s) for s in self.sources))

    def __len__(self) -> int:
        return self._ends[-1]

    def __getitem__(self, index: int) -> TrainingSample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range ({n} samples)")
        index %= n
        k = bisect.bisect_right(self._ends, index)
        start = self._ends[k - 1] if k else 0
        return self.sources[k][index - start]

    def describe(self) -> str:
        parts = "; ".join(s.describe() for s in self.sources)
        return f"{len(self.sources)} sources, {len(self):,} samples: {parts}"


_KEYS: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required keys, optional keys); `kind` and `name` are always allowed.
    "synthetic": ({"seeds"}, {"seconds", "scene", "lidar"}),
    "drive": ({"path"}, set()),
    "kitti": ({"root"}, {"frames", "labels", "reference_dir"}),
}


def _seed(value: Any, where: str) -> int:
    return check_count(value, f"{where}: seeds: each", 0, MAX_SEED)


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, Mapping):
        extra = set(value) - {"start", "count"}
        if extra or not {"start", "count"} <= set(value):
            raise ValueError(
                f"{where}: seeds: expected a list or {{start, count}}, got {dict(value)}"
            )
        start = check_count(value["start"], f"{where}: seeds: start", 0, MAX_SEED)
        count = check_count(value["count"], f"{where}: seeds: count", 1, MAX_SEEDS)
        _seed(start + count - 1, where)
        return list(range(start, start + count))
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{where}: seeds: expected integers, got {list(value)}")
        return [_seed(v, where) for v in value]
    raise ValueError(f"{where}: seeds: expected a list or {{start, count}}, got {value!r}")


def _path(value: Any, base_dir: Path, key: str, where: str) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"{where}: {key}: expected a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def check_source(spec: Any) -> None:
    """The checks of `open_source` that read no file: the kind, the keys and their values
    (seeds, seconds, scene, lidar, frames, labels). A training config runs them when it is
    read, so that a typo is refused before minutes of preparation, not as a MemoryError.

    Raises ValueError as `open_source`."""
    _checked(spec)


def _checked(spec: Any) -> tuple[str, str]:
    """``spec``'s kind and the name its messages start with, once `check_source` holds."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"training source: expected a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    where = f"training source {spec.get('name') or kind or '?'}"
    if kind not in _KEYS:
        known = ", ".join(_KEYS)
        raise ValueError(f"{where}: unknown kind {kind!r} (use {known})")
    required, optional = _KEYS[kind]
    missing = sorted(required - set(spec))
    if missing:
        raise ValueError(f"{where}: missing key {', '.join(missing)}")
    unknown = sorted(map(str, set(spec) - required - optional - {"kind", "name"}))
    if unknown:
        raise ValueError(f"{where}: unknown key {', '.join(unknown)}")
    try:
        _CHECKS[kind](spec, where)
    except ValueError as e:
        message = str(e)
        raise ValueError(message if message.startswith(where) else f"{where}: {message}") from e
    return kind, where


def open_source(spec: Mapping[str, Any], base_dir: Path) -> TrainingSource:
    """The source a config entry describes (see the module docstring); paths relative to
    `base_dir`.

    Raises ValueError with one line naming the source and what is wrong: unknown kind, a
    missing or unknown key, a bad value, a missing file or folder, a frame without labels."""
    kind, where = _checked(spec)
    base_dir = Path(base_dir)
    source: TrainingSource
    try:
        source = _BUILDERS[kind](spec, base_dir, where)
    except ValueError as e:
        message = str(e)
        raise ValueError(message if message.startswith(where) else f"{where}: {message}") from e
    if spec.get("name"):
        source.name = str(spec["name"])
    return source


def _synthetic_options(
    spec: Mapping[str, Any], where: str
) -> tuple[list[int], float, str, str | None]:
    """Seeds, seconds, scene and lidar of a synthetic entry."""
    seconds = spec.get("seconds", 10.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(
            f"{where}: seconds: expected a number, got {seconds!r}{yaml_text_hint(seconds)}"
        )
    # The world of a seed is built whole: a typo of hours is refused, not a MemoryError.
    if not 0 < seconds <= MAX_SYNTHETIC_SECONDS:
        raise ValueError(
            f"{where}: seconds must be > 0 and at most {MAX_SYNTHETIC_SECONDS:.0f}, got {seconds!r}"
        )
    scene, lidar = spec.get("scene", "simple"), spec.get("lidar")
    if not isinstance(scene, str) or not (lidar is None or isinstance(lidar, str)):
        raise ValueError(f"{where}: scene and lidar: expected names, got {scene!r}, {lidar!r}")
    check_world_options(scene, lidar)
    return _seeds(spec["seeds"], where), float(seconds), scene, lidar


def _synthetic(spec: Mapping[str, Any], base_dir: Path, where: str) -> TrainingSource:
    seeds, seconds, scene, lidar = _synthetic_options(spec, where)
    try:
        return SyntheticSource(seeds, seconds, scene=scene, lidar=lidar)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _check_drive(spec: Mapping[str, Any], where: str) -> None:
    _path(spec["path"], Path("."), "path", where)


def _drive(spec: Mapping[str, Any], base_dir: Path, where: str) -> TrainingSource:
    path = _path(spec["path"], base_dir, "path", where)
    if not path.is_file():
        state = "is not a regular file (a folder or pipe)" if path.exists() else "does not exist"
        raise ValueError(f"{where}: drive {path} {state}")
    return DriveSource(path)


def _kitti_options(spec: Mapping[str, Any], where: str) -> tuple[list[str] | None, str]:
    """The frame ids (None: every labelled frame) and the labels of a KITTI entry."""
    _path(spec["root"], Path("."), "root", where)
    if spec.get("reference_dir") is not None:
        _path(spec["reference_dir"], Path("."), "reference_dir", where)
    frames = spec.get("frames")
    if frames is not None and (isinstance(frames, str) or not isinstance(frames, Sequence)):
        raise ValueError(f"{where}: frames: expected a list of frame ids, got {frames!r}")
    labels = spec.get("labels", "label_2")
    if labels not in KITTI_LABELS:
        raise ValueError(f"{where}: labels: {labels!r} is not one of {', '.join(KITTI_LABELS)}")
    # Ids as strings, zero-padded if YAML read them as numbers.
    ids = None if frames is None else [f"{f:06d}" if isinstance(f, int) else str(f) for f in frames]
    return ids, labels


def _kitti(spec: Mapping[str, Any], base_dir: Path, where: str) -> TrainingSource:
    ids, labels = _kitti_options(spec, where)
    root = _path(spec["root"], base_dir, "root", where)
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise ValueError(f"{where}: KITTI folder {root} {state}")
    ref = spec.get("reference_dir")
    reference_dir = None if ref is None else _path(ref, base_dir, "reference_dir", where)
    return KittiSource(root, ids, labels, reference_dir)


_CHECKS: dict[str, Callable[[Mapping[str, Any], str], object]] = {
    "synthetic": _synthetic_options,
    "drive": _check_drive,
    "kitti": _kitti_options,
}

_BUILDERS: dict[str, Callable[[Mapping[str, Any], Path, str], TrainingSource]] = {
    "synthetic": _synthetic,
    "drive": _drive,
    "kitti": _kitti,
}


def open_sources(specs: Sequence[Mapping[str, Any]], base_dir: Path) -> ConcatSource:
    """Every entry of a `sources:` list through `open_source`, chained.

    Raises ValueError as `open_source`, or for an empty list."""
    if not specs:
        raise ValueError("training sources: the list is empty")
    return ConcatSource([open_source(spec, base_dir) for spec in specs])
