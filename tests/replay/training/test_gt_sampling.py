"""Ground-truth sampling: the object bank cut from synthetic training samples, and pasting
(no overlaps, occluded scene points removed, points and painting carried, counts, determinism),
and decoys (shapes without their camera scores, no box)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from engines.fusion.learned_config import LearnedFusionConfig
from perception.pipeline.boxes import bev_iou
from replay.training.fusion_data import PreparedSample, prepare
from replay.training.gt_sampling import (
    MARGIN_XY_M,
    MARGIN_Z_M,
    BankObject,
    GtSampler,
    GtSamplingConfig,
    ObjectBank,
    as_decoys,
    insert_decoys,
    insert_objects,
    paste,
    pick_objects,
)
from replay.training.sources import open_source

CLASSES = LearnedFusionConfig().classes
ALL = {0: 10, 1: 10, 2: 10}


class _Box:
    def __init__(self, row: npt.NDArray[np.float32]) -> None:
        self.center = (float(row[0]), float(row[1]), float(row[2]))
        self.size = (float(row[3]), float(row[4]), float(row[5]))
        self.yaw = float(row[6])


def _inside(points: np.ndarray, row7: np.ndarray) -> np.ndarray:
    """Brute force over every point: inside the box (x y z l w h yaw) with the margins."""
    x, y, z, length, width, height, yaw = (float(v) for v in row7[:7])
    d = points[:, :3].astype(np.float64) - [x, y, z]
    c, s = np.cos(yaw), np.sin(yaw)
    along, across = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    return (
        (np.abs(along) <= length / 2 + MARGIN_XY_M)
        & (np.abs(across) <= width / 2 + MARGIN_XY_M)
        & (np.abs(d[:, 2]) <= height / 2 + MARGIN_Z_M)
    )


@pytest.fixture(scope="module")
def samples() -> list[PreparedSample]:
    source = open_source({"kind": "synthetic", "seeds": [100], "seconds": 1.0}, Path("."))
    out = [prepare(source[i], None, LearnedFusionConfig()) for i in range(len(source))]
    assert len(out) == 10
    # Painted channels (scores and camera flag) that differ point by point, so that a point
    # copied from the wrong row or with the wrong columns shows.
    rng = np.random.default_rng(5)
    painted = []
    for s in out:
        pts = s.points.copy()
        pts[:, 4:7] = rng.random((len(pts), 3), dtype=np.float32)
        pts[:, 7] = rng.random(len(pts)) < 0.5
        painted.append(replace(s, points=pts))
    return painted


@pytest.fixture(scope="module")
def bank(samples: list[PreparedSample]) -> ObjectBank:
    return ObjectBank.from_samples(samples)


def _same_row(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def _find(bank: ObjectBank, row: np.ndarray) -> BankObject:
    (obj,) = [o for o in bank.objects[int(row[0])] if _same_row(o.box, row)]
    return obj


def test_bank_objects_are_the_points_inside_their_boxes(
    samples: list[PreparedSample], bank: ObjectBank
) -> None:
    """Each bank object holds exactly the rows of its sample inside its box (painted channels
    included, in order), and exactly the boxes with >= min_points points above their bottom
    are kept."""
    assert set(bank.counts()) == {0, 1, 2} and all(n > 0 for n in bank.counts().values())
    kept = 0
    for source, sample in enumerate(samples):
        objs = [o for c in bank.objects for o in bank.objects[c] if o.source == source]
        for row in sample.boxes:
            mask = _inside(sample.points, row[1:8])
            above = np.count_nonzero(sample.points[mask, 2] >= row[3] - row[6] / 2)
            match = [o for o in objs if _same_row(o.box, row)]
            if above < 5:
                assert not match, (source, row)
                continue
            (obj,) = match
            np.testing.assert_array_equal(obj.points, sample.points[mask])
            assert obj.points.dtype == np.float32 and obj.points.shape[1] == 8
            assert np.all(_inside(obj.points, row[1:8]))
            kept += 1
    assert kept == len(bank)
    # Some boxes are skipped (no returns), and min_points is honoured.
    assert len(bank) < sum(len(s.boxes) for s in samples)
    strict = ObjectBank.from_samples(samples, min_points=50)
    assert 0 < len(strict) < len(bank)
    assert all(
        np.count_nonzero(o.points[:, 2] >= o.box[3] - o.box[6] / 2) >= 50
        for objs in strict.objects.values()
        for o in objs
    )


def test_ground_returns_in_the_margin_do_not_make_an_object() -> None:
    """A box with only ground returns just under its bottom (inside the z margin) is skipped;
    the same box with returns on its body is kept, the ground returns coming along."""
    box = np.array([[1, 5.0, 2.0, -0.8, 0.8, 0.6, 1.8, 0.3, np.nan, np.nan, 1.0]], np.float32)
    ground = np.zeros((8, 8), np.float32)
    ground[:, 0] = np.linspace(4.7, 5.3, 8)
    ground[:, 1] = 2.0
    ground[:, 2] = -1.7 - 0.02  # 2 cm below the bottom face at -1.7
    body = ground.copy()
    body[:, 2] = np.linspace(-1.5, 0.0, 8)
    far = np.array([[20.0, 0.0, -1.72, 0.5, 0, 0, 0, 0]], np.float32)
    empty = np.zeros((0, 7), np.float32)
    only_ground = PreparedSample("ground", np.concatenate([ground, far]), box, empty)
    assert len(ObjectBank.from_samples([only_ground])) == 0
    with_body = PreparedSample("body", np.concatenate([ground, far, body]), box, empty)
    bank = ObjectBank.from_samples([with_body])
    (obj,) = bank.objects[1]
    np.testing.assert_array_equal(obj.points, np.concatenate([ground, body]))
    assert obj.source == 0 and _same_row(obj.box, box[0])


def _check_paste(
    sample: PreparedSample, out: PreparedSample, bank: ObjectBank, source_index: int | None
) -> list[BankObject]:
    """All the promises of one paste; returns the pasted objects."""
    m = len(sample.boxes)
    np.testing.assert_array_equal(out.boxes[:m], sample.boxes)
    np.testing.assert_array_equal(out.ignore, sample.ignore)
    pasted = [_find(bank, row) for row in out.boxes[m:]]
    assert all(o.source != source_index for o in pasted)
    # No footprint overlaps an existing box, an ignore box or another pasted one.
    others = [_Box(r[1:8]) for r in sample.boxes] + [_Box(r) for r in sample.ignore]
    for k, obj in enumerate(pasted):
        box = _Box(obj.box[1:8])
        for other in others + [_Box(o.box[1:8]) for o in pasted[:k]]:
            assert bev_iou(box, other) == 0.0
    # The scene lost exactly its points inside the pasted boxes; the objects' points follow.
    gone = np.zeros(len(sample.points), bool)
    for obj in pasted:
        gone |= _inside(sample.points, obj.box[1:8])
    n = int(np.count_nonzero(~gone))
    np.testing.assert_array_equal(out.points[:n], sample.points[~gone])
    tail = [o.points for o in pasted] or [np.zeros((0, 8), np.float32)]
    np.testing.assert_array_equal(out.points[n:], np.concatenate(tail))
    for obj in pasted:
        assert not np.any(_inside(out.points[:n], obj.box[1:8]))
    assert out.points.dtype == np.float32 and out.boxes.dtype == np.float32
    return pasted


def test_paste_into_real_scenes(samples: list[PreparedSample], bank: ObjectBank) -> None:
    """Pasting into every sample of the synthetic world, asking for more than fits: the
    candidates that collide with the scene (the same world's objects a frame apart) are
    rejected, the rest pasted without overlap, counts respected."""
    pasted_total, per_class = 0, np.zeros(3, int)
    for i, sample in enumerate(samples):
        for seed in range(2):
            out = paste(sample, bank, np.random.default_rng(seed), ALL, source_index=i)
            pasted = _check_paste(sample, out, bank, i)
            classes = np.bincount([int(o.box[0]) for o in pasted], minlength=3)
            assert np.all(classes <= 10)
            pasted_total += len(pasted)
            per_class += classes
    assert pasted_total > 0 and np.all(per_class > 0)
    # Static cars sit where they were in every frame: far fewer pasted than tried.
    assert per_class[0] < 10 * len(samples) * 2


def test_ignore_boxes_and_own_sample_are_avoided(
    samples: list[PreparedSample], bank: ObjectBank
) -> None:
    """In a scene emptied of its boxes, the sample's own objects would fit: they are pasted
    when no source_index is given and never when it is; ignore boxes block what they cover."""
    empty = replace(samples[4], boxes=np.zeros((0, 11), np.float32))
    own_without, own_with = 0, 0
    for seed in range(8):
        free = paste(empty, bank, np.random.default_rng(seed), ALL)
        own_without += sum(o.source == 4 for o in _check_paste(empty, free, bank, None))
        out = paste(empty, bank, np.random.default_rng(seed), ALL, source_index=4)
        own_with += sum(o.source == 4 for o in _check_paste(empty, out, bank, 4))
    assert own_without > 0
    assert own_with == 0

    first = paste(empty, bank, np.random.default_rng(0), ALL, source_index=4)
    blocked = first.boxes[:, 1:8].copy()
    assert len(blocked) > 0
    fenced = replace(empty, ignore=blocked)
    again = paste(fenced, bank, np.random.default_rng(0), ALL, source_index=4)
    _check_paste(fenced, again, bank, 4)  # bev_iou == 0 with every ignore box


def test_counts_and_classes(samples: list[PreparedSample], bank: ObjectBank) -> None:
    """Exactly the asked counts where there is room; classes not asked for never appear."""
    empty = replace(samples[0], boxes=np.zeros((0, 11), np.float32))
    for seed in range(5):
        rng = np.random.default_rng(seed)
        out = paste(empty, bank, rng, {1: 2, 2: 1, 0: 0}, source_index=0)
        _check_paste(empty, out, bank, 0)
        assert np.bincount(out.boxes[:, 0].astype(int), minlength=3).tolist() == [0, 2, 1]
    out = paste(samples[0], bank, np.random.default_rng(0), {}, source_index=0)
    assert out is samples[0]
    out = paste(samples[0], bank, np.random.default_rng(0), {7: 3}, source_index=0)
    assert out is samples[0]


def test_deterministic_for_a_seed(samples: list[PreparedSample], bank: ObjectBank) -> None:
    a = paste(samples[3], bank, np.random.default_rng(42), ALL, source_index=3)
    b = paste(samples[3], bank, np.random.default_rng(42), ALL, source_index=3)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    picks = {
        tuple(np.round(paste(samples[3], bank, np.random.default_rng(s), ALL, source_index=3)
                       .boxes[len(samples[3].boxes):, 1], 3))
        for s in range(6)
    }  # fmt: skip
    assert len(picks) > 1
    objs = pick_objects(samples[3], bank, np.random.default_rng(42), ALL, source_index=3)
    c = insert_objects(samples[3], objs)
    np.testing.assert_array_equal(c.points, a.points)


def test_point_width_mismatch_is_refused(samples: list[PreparedSample], bank: ObjectBank) -> None:
    narrow = replace(samples[0], points=samples[0].points[:, :4], boxes=samples[0].boxes[:0])
    with pytest.raises(ValueError, match="point columns"):
        paste(narrow, bank, np.random.default_rng(0), ALL, source_index=0)
    with pytest.raises(ValueError, match="widths"):
        ObjectBank.from_samples([samples[0], narrow])
    with pytest.raises(ValueError, match="min_points"):
        ObjectBank.from_samples(samples, min_points=0)


def test_sampler_probability_and_wiring(samples: list[PreparedSample]) -> None:
    never = GtSampler.build(GtSamplingConfig(probability=0.0), samples, CLASSES)
    assert never.counts == {1: 4, 2: 4}
    assert never(samples[1], np.random.default_rng(0), 1) is samples[1]
    always = GtSampler.build(
        GtSamplingConfig(counts={"Pedestrian": 3}, probability=1.0), samples, CLASSES
    )
    out = always(samples[1], np.random.default_rng(0), 1)
    new = out.boxes[len(samples[1].boxes) :]
    assert 0 < len(new) <= 3 and set(new[:, 0].astype(int).tolist()) == {1}
    _check_paste(samples[1], out, always.bank, 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"counts": {"Pedestrian": -1}}, "gt_sampling.counts.Pedestrian"),
        ({"counts": {"Pedestrian": 1.5}}, "gt_sampling.counts.Pedestrian"),
        ({"counts": {"Cyclist": True}}, "gt_sampling.counts.Cyclist"),
        ({"counts": {"Car": 129}}, "gt_sampling.counts.Car must be an integer from 0 to 128"),
        ({"counts": {3: 1}}, "gt_sampling.counts"),
        ({"counts": [("Car", 1)]}, "gt_sampling.counts"),
        ({"min_points": 0}, "gt_sampling.min_points"),
        ({"min_points": 2.0}, "gt_sampling.min_points"),
        ({"probability": 1.5}, "gt_sampling.probability"),
        ({"probability": -0.1}, "gt_sampling.probability"),
        ({"probability": "half"}, "gt_sampling.probability"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as e:
        GtSamplingConfig(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


def test_config_defaults_and_classes() -> None:
    config = GtSamplingConfig()
    assert config.counts == {"Car": 0, "Pedestrian": 4, "Cyclist": 4}
    assert (config.min_points, config.probability) == (5, 0.5)
    assert config.class_counts(CLASSES) == {1: 4, 2: 4}
    with pytest.raises(ValueError, match=r"gt_sampling\.counts: unknown class\(es\) Truck"):
        GtSamplingConfig(counts={"Truck": 2}).class_counts(CLASSES)
    source = {"Car": 1}
    config = GtSamplingConfig(counts=source)
    source["Car"] = 9
    assert config.counts == {"Car": 1}


def test_decoys_keep_shape_and_flag_lose_scores_and_add_no_box(
    samples: list[PreparedSample], bank: ObjectBank
) -> None:
    """A decoy is its object's points with the class scores zeroed and the camera flag kept;
    it clears the scene's points inside its box like an object and adds no box."""
    sample = samples[2]
    picked = pick_objects(sample, bank, np.random.default_rng(3), ALL, source_index=2)
    assert picked
    decoys = as_decoys(picked)
    for obj, decoy in zip(picked, decoys, strict=True):
        assert decoy.box is obj.box and decoy.source == obj.source
        assert not decoy.points[:, 4:7].any()
        kept = [0, 1, 2, 3, 7]  # x, y, z, intensity, the camera flag
        np.testing.assert_array_equal(decoy.points[:, kept], obj.points[:, kept])
        assert obj.points[:, 4:7].any()  # the bank itself is untouched
    out = insert_decoys(sample, decoys)
    np.testing.assert_array_equal(out.boxes, sample.boxes)
    np.testing.assert_array_equal(out.ignore, sample.ignore)
    n = len(out.points) - sum(len(d.points) for d in decoys)
    np.testing.assert_array_equal(out.points[n:], np.concatenate([d.points for d in decoys]))
    for decoy in decoys:
        assert not np.any(_inside(out.points[:n], decoy.box[1:8]))
    assert insert_decoys(sample, []) is sample


def test_sampler_pastes_decoys_clear_of_the_objects(samples: list[PreparedSample]) -> None:
    """With decoys asked for, the sampler pastes its objects (boxes added), then decoys (points
    only, scores zero) whose footprints overlap no box; deterministic for a seed."""
    config = GtSamplingConfig(
        counts={"Pedestrian": 2}, probability=1.0, decoys={"Car": 2, "Pedestrian": 2}
    )
    sampler = GtSampler.build(config, samples, CLASSES)
    assert sampler.decoys == {0: 2, 1: 2}
    total = 0
    for i, sample in enumerate(samples[:6]):
        out = sampler(sample, np.random.default_rng(i), i)
        rng = np.random.default_rng(i)
        rng.random()  # the sampler's probability draw
        pasted = paste(sample, sampler.bank, rng, sampler.counts, source_index=i)
        assert sampler.decoy_bank is not None
        picked = pick_objects(pasted, sampler.decoy_bank, rng, sampler.decoys, source_index=i)
        expected = insert_decoys(pasted, as_decoys(picked))
        np.testing.assert_array_equal(out.points, expected.points)
        np.testing.assert_array_equal(out.boxes, pasted.boxes)
        for decoy in picked:
            assert all(bev_iou(_Box(decoy.box[1:8]), _Box(row[1:8])) == 0 for row in out.boxes)
            assert np.mean(decoy.points[:, -1] > 0.5) >= 0.5  # where a camera looks
        tail = out.points[len(out.points) - sum(len(d.points) for d in picked) :]
        assert not tail[:, 4:7].any()
        total += len(picked)
    assert total > 0


def test_decoys_come_from_objects_a_camera_saw(
    samples: list[PreparedSample], bank: ObjectBank
) -> None:
    seen = bank.seen_by_a_camera()
    assert 0 < len(seen) < len(bank)
    for c, objs in bank.objects.items():
        want = [o for o in objs if np.mean(o.points[:, -1] > 0.5) >= 0.5]
        assert list(seen.objects[c]) == want
    # Samples with no painted channels (no camera at all) have no decoys to give.
    unpainted = [replace(s, points=s.points[:, :4]) for s in samples]
    assert len(ObjectBank.from_samples(unpainted).seen_by_a_camera()) == 0


def test_bad_decoys_are_refused() -> None:
    with pytest.raises(ValueError, match=r"gt_sampling\.decoys\.Car must be an integer"):
        GtSamplingConfig(decoys={"Car": -1})
    with pytest.raises(ValueError, match=r"gt_sampling\.decoys: unknown class\(es\) Truck"):
        GtSamplingConfig(decoys={"Truck": 1}).decoy_counts(CLASSES)
    assert GtSamplingConfig().decoys == {}
