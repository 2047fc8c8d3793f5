"""Ground-truth sampling (SECOND, Yan et al. 2018): objects cut with their points from the
training samples and pasted into other samples, so that the rare classes are seen more often.

An object is pasted where it was recorded (vehicle frame), as SECOND does: its range, its beam
pattern and the camera scores painted on its points stay those its sensors gave it, so the
bank and the samples it is pasted into should come from the same rig (one source kind). A
candidate whose BEV footprint (grown by the point margin) overlaps a box of the sample, one of
its ``ignore`` boxes or an object pasted before it is rejected; the scene's points inside a
pasted object's box (plus the margin) are removed, as the object would hide them.

Rows follow ``replay.training.fusion_data.PreparedSample``: boxes are (class index, x, y, z,
length, width, height, yaw, vx, vy, visibility), the centre is the box's 3D centre, the length
runs along the yaw; metres and radians in the vehicle frame.

Decoys (``decoys`` in the config) are bank objects pasted the same way but as lidar-ambiguous
negatives: their points keep their shape, range and the camera flag ("a camera saw this point")
but lose the painted class scores, and they add no box, so the target there is background. They
stand for what a lidar alone cannot tell from a road user at range (a bin, a post box, a
statue, a parked trailer) and a camera can: a cluster the camera saw and did not name is not an
object. Without them nothing in synthetic training makes the camera matter (the lidar's shape
alone finds every object), and the camera's contribution to a detection's score stays at a few
thousandths. Decoys are drawn from the objects a camera saw (most of their points flagged), so
they stand where a camera looks: outside every camera's view the lidar stays the only judge,
and stays sure. In camera-free samples (modality dropout clears their flag as everyone's) they
teach the engine that, in a camera's view, lidar alone is less sure.

Wiring into a training loop (a sampler built once from the prepared training set; each picked
sample pasted into before ``augment``)::

    sampler = GtSampler.build(config.gt_sampling, train_set, model_cfg.classes)
    sample = sampler(train_set[i], rng, source_index=i)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from engines.checks import check_count, check_probability
from perception.pipeline.boxes import bev_iou
from replay.training.fusion_data import MAX_OBJECTS, PreparedSample

__all__ = [
    "MARGIN_XY_M",
    "MARGIN_Z_M",
    "BankObject",
    "GtSampler",
    "GtSamplingConfig",
    "ObjectBank",
    "as_decoys",
    "insert_decoys",
    "insert_objects",
    "paste",
    "pick_objects",
    "points_in_boxes",
]

#: Points this far outside a box's sides (box frame, x and y) still belong to it: returns on
#: the surface scatter by a few centimetres and labels are not tight.
MARGIN_XY_M = 0.1
#: The same below the bottom and above the top of a box.
MARGIN_Z_M = 0.05
#: Candidates tried per object asked for (the others collide with the scene).
TRIES_PER_OBJECT = 4

F32 = npt.NDArray[np.float32]
Index = npt.NDArray[np.intp]


def points_in_boxes(
    points: F32,
    boxes: F32,
    *,
    margin_xy_m: float = MARGIN_XY_M,
    margin_z_m: float = MARGIN_Z_M,
) -> list[Index]:
    """For each of ``boxes`` (K x 7 rows of x, y, z, length, width, height, yaw), the indices
    (increasing) of ``points`` (N x >= 3, x y z first) inside it: in the box frame
    |dx| <= l/2 + margin_xy_m, |dy| <= w/2 + margin_xy_m, |dz| <= h/2 + margin_z_m.

    The points are sorted by x once; each box tests only the slice within its bounding radius.
    """
    if len(boxes) == 0:
        return []
    order = np.argsort(points[:, 0], kind="stable")
    xs = points[order, 0]
    out: list[Index] = []
    for x, y, z, length, width, height, yaw in np.asarray(boxes, np.float64)[:, :7]:
        hl, hw, hh = length / 2 + margin_xy_m, width / 2 + margin_xy_m, height / 2 + margin_z_m
        reach = float(np.hypot(hl, hw))
        lo = int(np.searchsorted(xs, x - reach, side="left"))
        hi = int(np.searchsorted(xs, x + reach, side="right"))
        idx = order[lo:hi]
        p = points[idx, :3].astype(np.float64)
        dx, dy, dz = p[:, 0] - x, p[:, 1] - y, p[:, 2] - z
        c, s = np.cos(yaw), np.sin(yaw)
        along, across = c * dx + s * dy, -s * dx + c * dy
        inside = (np.abs(along) <= hl) & (np.abs(across) <= hw) & (np.abs(dz) <= hh)
        out.append(np.sort(idx[inside]))
    return out


@dataclass(frozen=True, eq=False)
class BankObject:
    """One object of the bank: its ``box`` row (11 values, see the module docstring), its
    ``points`` (K x the samples' columns, painted channels included) as they were in the
    sample, and ``source``, the index of that sample in the list the bank was built from."""

    box: F32
    points: F32
    source: int


@dataclass(frozen=True, eq=False)
class ObjectBank:
    """Objects per class index, each with its points; ``columns`` is the samples' point width,
    the margins those the points were cut with (and pasted objects clear the scene with)."""

    objects: Mapping[int, tuple[BankObject, ...]]
    columns: int
    margin_xy_m: float = MARGIN_XY_M
    margin_z_m: float = MARGIN_Z_M
    _sources: Mapping[int, npt.NDArray[np.int64]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        sources = {c: np.array([o.source for o in objs], np.int64)
                   for c, objs in self.objects.items()}  # fmt: skip
        object.__setattr__(self, "_sources", sources)

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[PreparedSample],
        *,
        min_points: int = 5,
        margin_xy_m: float = MARGIN_XY_M,
        margin_z_m: float = MARGIN_Z_M,
    ) -> ObjectBank:
        """Every box of ``samples`` with the points inside it (see :func:`points_in_boxes`),
        those with at least ``min_points`` points at or above the box's bottom face (ground
        returns within the margin below do not make an empty box count).

        Raises:
            ValueError: ``min_points`` < 1, or samples of different point widths.
        """
        if min_points < 1:
            raise ValueError(f"min_points must be >= 1, got {min_points}")
        widths = {s.points.shape[1] for s in samples}
        if len(widths) > 1:
            raise ValueError(f"samples have points of different widths {sorted(widths)}")
        objects: dict[int, list[BankObject]] = {}
        for source, sample in enumerate(samples):
            inside = points_in_boxes(
                sample.points, sample.boxes[:, 1:8], margin_xy_m=margin_xy_m, margin_z_m=margin_z_m
            )
            for row, idx in zip(sample.boxes, inside, strict=True):
                bottom = row[3] - row[6] / 2
                if int(np.count_nonzero(sample.points[idx, 2] >= bottom)) < min_points:
                    continue
                obj = BankObject(row.copy(), sample.points[idx].copy(), source)
                objects.setdefault(int(row[0]), []).append(obj)
        return cls(
            {c: tuple(objs) for c, objs in sorted(objects.items())},
            widths.pop() if widths else 0,
            margin_xy_m,
            margin_z_m,
        )

    def __len__(self) -> int:
        return sum(len(objs) for objs in self.objects.values())

    def counts(self) -> dict[int, int]:
        """Objects per class index."""
        return {c: len(objs) for c, objs in self.objects.items()}

    def seen_by_a_camera(self) -> ObjectBank:
        """The objects most of whose points a camera saw (the camera flag, the last painted
        column, set); none when the samples carry no painted channels."""
        painted = self.columns > 4
        objects = {
            c: tuple(o for o in objs if painted and float(np.mean(o.points[:, -1] > 0.5)) >= 0.5)
            for c, objs in self.objects.items()
        }
        return ObjectBank(objects, self.columns, self.margin_xy_m, self.margin_z_m)

    def sources(self, class_index: int) -> npt.NDArray[np.int64]:
        """The source sample of each object of ``class_index``, in the bank's order."""
        return self._sources.get(class_index, np.zeros(0, np.int64))


class _Footprint(NamedTuple):
    """A BEV footprint in the form ``bev_iou`` reads."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float


def _footprint(xyz_lwh_yaw: npt.NDArray[np.float32], grow_m: float) -> _Footprint:
    x, y, z, length, width, height, yaw = (float(v) for v in xyz_lwh_yaw[:7])
    return _Footprint((x, y, z), (length + 2 * grow_m, width + 2 * grow_m, height), yaw)


def _collides(candidate: _Footprint, occupied: Sequence[_Footprint]) -> bool:
    """Whether ``candidate`` overlaps any of ``occupied`` in BEV: bounding circles first, the
    rotated rectangles' intersection for those that may touch."""
    if not occupied:
        return False
    centers = np.array([o.center[:2] for o in occupied])
    radii = np.array([0.5 * np.hypot(o.size[0], o.size[1]) for o in occupied])
    dist = np.hypot(centers[:, 0] - candidate.center[0], centers[:, 1] - candidate.center[1])
    near = np.flatnonzero(dist < radii + 0.5 * np.hypot(candidate.size[0], candidate.size[1]))
    return any(bev_iou(candidate, occupied[int(i)]) > 0.0 for i in near)


def pick_objects(
    sample: PreparedSample,
    bank: ObjectBank,
    rng: np.random.Generator,
    counts: Mapping[int, int],
    *,
    source_index: int | None = None,
) -> list[BankObject]:
    """Up to ``counts[c]`` objects of each class index ``c`` (in increasing class order) drawn
    from ``bank`` without the objects of sample ``source_index``, none of whose footprints
    (grown by ``bank.margin_xy_m``) overlaps a box or ``ignore`` box of ``sample`` or another
    picked object. At most ``TRIES_PER_OBJECT`` candidates are tried per object asked for.
    Deterministic for a given ``rng`` state."""
    grow = bank.margin_xy_m
    occupied = [_footprint(row[1:8], grow) for row in sample.boxes]
    occupied += [_footprint(row, grow) for row in sample.ignore]
    picked: list[BankObject] = []
    for c in sorted(counts):
        wanted = int(counts[c])
        objs = bank.objects.get(c, ())
        if wanted <= 0 or not objs:
            continue
        allowed = np.flatnonzero(bank.sources(c) != source_index)
        if len(allowed) == 0:
            continue
        tries = rng.choice(
            allowed, size=min(len(allowed), wanted * TRIES_PER_OBJECT), replace=False
        )
        taken = 0
        for i in tries:
            obj = objs[int(i)]
            candidate = _footprint(obj.box[1:8], grow)
            if _collides(candidate, occupied):
                continue
            occupied.append(candidate)
            picked.append(obj)
            taken += 1
            if taken == wanted:
                break
    return picked


def insert_objects(
    sample: PreparedSample,
    objects: Sequence[BankObject],
    *,
    margin_xy_m: float = MARGIN_XY_M,
    margin_z_m: float = MARGIN_Z_M,
) -> PreparedSample:
    """``sample`` with ``objects`` in it: the scene's points inside each object's box (plus the
    margins) removed, the objects' points and box rows appended in order.

    Raises:
        ValueError: the objects' points are not as wide as the sample's.
    """
    if not objects:
        return sample
    width = sample.points.shape[1]
    for obj in objects:
        if obj.points.shape[1] != width:
            raise ValueError(
                f"{sample.name}: a pasted object has {obj.points.shape[1]} point columns, "
                f"the sample {width}"
            )
    boxes = np.stack([obj.box for obj in objects]).astype(np.float32)
    keep = np.ones(len(sample.points), bool)
    for idx in points_in_boxes(
        sample.points, boxes[:, 1:8], margin_xy_m=margin_xy_m, margin_z_m=margin_z_m
    ):
        keep[idx] = False
    points = np.concatenate([sample.points[keep], *(obj.points for obj in objects)])
    return replace(
        sample,
        points=points.astype(np.float32, copy=False),
        boxes=np.concatenate([sample.boxes, boxes]).astype(np.float32, copy=False),
    )


def as_decoys(objects: Sequence[BankObject]) -> list[BankObject]:
    """``objects`` as decoys: the painted class scores of their points zeroed (the columns
    between the intensity and the camera flag, the last column), the flag and everything else
    kept."""
    decoys = []
    for obj in objects:
        points = obj.points.copy()
        if points.shape[1] > 5:
            points[:, 4:-1] = 0.0
        decoys.append(replace(obj, points=points))
    return decoys


def insert_decoys(
    sample: PreparedSample,
    decoys: Sequence[BankObject],
    *,
    margin_xy_m: float = MARGIN_XY_M,
    margin_z_m: float = MARGIN_Z_M,
) -> PreparedSample:
    """``sample`` with the points of ``decoys`` (see :func:`as_decoys`) in it, the scene's points
    inside their boxes removed, and no box added (the target there stays background)."""
    if not decoys:
        return sample
    with_boxes = insert_objects(sample, decoys, margin_xy_m=margin_xy_m, margin_z_m=margin_z_m)
    return replace(with_boxes, boxes=sample.boxes)


def paste(
    sample: PreparedSample,
    bank: ObjectBank,
    rng: np.random.Generator,
    counts: Mapping[int, int],
    *,
    source_index: int | None = None,
) -> PreparedSample:
    """A copy of ``sample`` with up to ``counts[c]`` objects of each class index ``c`` from
    ``bank`` pasted in at their recorded positions (:func:`pick_objects`, then
    :func:`insert_objects`); ``source_index`` is ``sample``'s own index in the bank's samples,
    whose objects are never pasted back. Deterministic for a given ``rng`` state."""
    objects = pick_objects(sample, bank, rng, counts, source_index=source_index)
    return insert_objects(sample, objects, margin_xy_m=bank.margin_xy_m, margin_z_m=bank.margin_z_m)


def _default_counts() -> dict[str, int]:
    return {"Car": 0, "Pedestrian": 4, "Cyclist": 4}


def _check_counts(counts: object, name: str) -> dict[str, int]:
    if not isinstance(counts, Mapping):
        raise ValueError(f"gt_sampling.{name} must map class names to counts, got {counts!r}")
    for label, n in counts.items():
        if not isinstance(label, str):
            raise ValueError(f"gt_sampling.{name}: class names must be strings, got {label!r}")
        # More than a sample's targets hold would only be dropped again (farthest first).
        check_count(n, f"gt_sampling.{name}.{label}", 0, MAX_OBJECTS)
    return dict(counts)


def _by_index(counts: Mapping[str, int], classes: Sequence[str], name: str) -> dict[int, int]:
    unknown = sorted(set(counts) - set(classes))
    if unknown:
        raise ValueError(
            f"gt_sampling.{name}: unknown class(es) {', '.join(unknown)} "
            f"(classes: {', '.join(classes)})"
        )
    return {classes.index(label): n for label, n in counts.items() if n > 0}


@dataclass(frozen=True)
class GtSamplingConfig:
    """Ground-truth sampling of a training run: with ``probability`` per sample, up to
    ``counts[name]`` objects of each class pasted in (classes left out: none), then up to
    ``decoys[name]`` objects of each class pasted as decoys (see the module docstring; none by
    default); bank objects need ``min_points`` points.

    Raises:
        ValueError: a bad value (one line naming the field).
    """

    counts: Mapping[str, int] = field(default_factory=_default_counts)
    min_points: int = 5
    probability: float = 0.5
    decoys: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", _check_counts(self.counts, "counts"))
        object.__setattr__(self, "decoys", _check_counts(self.decoys, "decoys"))
        m = self.min_points
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ValueError(f"gt_sampling.min_points must be an integer >= 1, got {m!r}")
        check_probability(self.probability, "gt_sampling.probability")

    def class_counts(self, classes: Sequence[str]) -> dict[int, int]:
        """``counts`` by class index in ``classes`` (the head's classes).

        Raises:
            ValueError: a name that is not one of ``classes``.
        """
        return _by_index(self.counts, classes, "counts")

    def decoy_counts(self, classes: Sequence[str]) -> dict[int, int]:
        """``decoys`` by class index in ``classes``.

        Raises:
            ValueError: a name that is not one of ``classes``.
        """
        return _by_index(self.decoys, classes, "decoys")


@dataclass(frozen=True, eq=False)
class GtSampler:
    """The training loop's side: a bank, the counts by class index and the probability, and
    the decoys by class index."""

    bank: ObjectBank
    counts: Mapping[int, int]
    probability: float
    decoys: Mapping[int, int] = field(default_factory=dict)
    decoy_bank: ObjectBank | None = None

    @classmethod
    def build(
        cls, config: GtSamplingConfig, samples: Sequence[PreparedSample], classes: Sequence[str]
    ) -> GtSampler:
        """The bank of ``samples`` (the prepared training set) under ``config``.

        Raises:
            ValueError: a class of ``config.counts`` not in ``classes``.
        """
        counts = config.class_counts(classes)
        decoys = config.decoy_counts(classes)
        bank = ObjectBank.from_samples(samples, min_points=config.min_points)
        decoy_bank = bank.seen_by_a_camera() if decoys else None
        return cls(bank, counts, config.probability, decoys, decoy_bank)

    def __call__(
        self, sample: PreparedSample, rng: np.random.Generator, source_index: int | None = None
    ) -> PreparedSample:
        """``sample`` pasted into with ``probability`` (one draw of ``rng`` always), else
        ``sample`` itself: the objects first, then the decoys clear of them."""
        if rng.random() >= self.probability:
            return sample
        pasted = paste(sample, self.bank, rng, self.counts, source_index=source_index)
        if not self.decoys or self.decoy_bank is None:
            return pasted
        bank = self.decoy_bank
        picked = pick_objects(pasted, bank, rng, self.decoys, source_index=source_index)
        return insert_decoys(
            pasted, as_decoys(picked), margin_xy_m=bank.margin_xy_m, margin_z_m=bank.margin_z_m
        )
