"""Training samples of the learned fusion engine: targets, augmentation, modality dropout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engines.fusion.learned_config import LearnedFusionConfig
from engines.fusion.learned_graph import decode_heads
from replay.training.fusion_data import (
    AugmentConfig,
    DropoutConfig,
    PreparedSample,
    augment,
    drop_object_returns,
    gaussian_radius,
    make_targets,
    thin_beams,
)

CFG = LearnedFusionConfig(x_range_m=(0.0, 25.6), y_range_m=(-12.8, 12.8), max_detections=8)


def _sample() -> PreparedSample:
    boxes = np.array(
        [[0, 12.3, -2.1, -0.9, 4.2, 1.8, 1.5, 0.4, 5.0, 1.0, 1.0],
         [1, 7.7, 3.3, -0.8, 0.7, 0.6, 1.7, -2.0, math.nan, math.nan, 0.5],
         [2, 40.0, 0.0, -0.8, 1.8, 0.6, 1.7, 0.0, 0.0, 0.0, math.nan]],
        np.float32,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    pts = np.zeros((500, 8), np.float32)
    pts[:, :3] = rng.uniform([-5, -15, -2], [30, 15, 1], (500, 3))
    pts[:, 3] = rng.random(500)
    pts[:, 4:7] = rng.random((500, 3))
    pts[:, 7] = 1.0
    return PreparedSample("test", pts, boxes, np.zeros((0, 7), np.float32))


def test_targets_decode_back_to_the_boxes() -> None:
    """The heatmap and regression targets, read as the head's output, decode (as the export
    does) to the ground-truth boxes: the target and decoding conventions agree."""
    sample = _sample()
    t = make_targets(sample, CFG)
    assert t.mask.sum() == 2  # the cyclist at 40 m is outside the 25.6 m grid
    assert t.heatmap.max() == 1.0
    hx, hy = CFG.head_size
    heat = torch.logit(torch.from_numpy(t.heatmap).clamp(1e-6, 1 - 1e-6))
    reg = torch.zeros(len(t.regression[0]), hx * hy)
    for k in range(int(t.mask.sum())):
        reg[:, int(t.index[k])] = torch.from_numpy(t.regression[k])
    rows, _ = decode_heads(heat, reg.reshape(-1, hx, hy), CFG)
    found = rows[rows[:, 9] > 0.99].numpy()
    assert len(found) == 2
    for box in sample.boxes[:2]:
        (row,) = [r for r in found if int(r[10]) == int(box[0])]
        np.testing.assert_allclose(row[:6], box[1:7], atol=1e-5)
        assert row[6] == pytest.approx(box[7], abs=1e-6)
    (car,) = [r for r in found if r[10] == 0]
    np.testing.assert_allclose(car[7:9], [5.0, 1.0])
    # Nearest first: the pedestrian (8.4 m, velocity unknown), then the car.
    assert t.velocity_known[:2].tolist() == [0.0, 1.0]


def test_ignored_objects_carry_no_negative_loss() -> None:
    sample = _sample()
    ignored = PreparedSample(
        "i", sample.points, sample.boxes, np.array([[20.0, 5.0, -0.8, 5.0, 2.0, 2.5, 0.0]])
    )
    t = make_targets(ignored, CFG)
    cell = CFG.cell_m
    assert t.negative_weight[int(20.0 / cell), int((5.0 + 12.8) / cell)] == 0.0
    assert 0.9 < t.negative_weight.mean() < 1.0


def test_augmentation_moves_points_and_boxes_together() -> None:
    sample = _sample()
    rng = np.random.default_rng(5)
    aug = augment(
        sample, rng, AugmentConfig(rotate_deg=30, scale=(0.9, 1.1), flip_y=1.0),
        DropoutConfig(0, 0, 0), CFG,
    )  # fmt: skip
    # Each point keeps its position in each box's frame, up to the common scale.
    scale = aug.boxes[0, 4] / sample.boxes[0, 4]
    for before, after in zip(sample.boxes, aug.boxes, strict=True):

        def local(points: np.ndarray, box: np.ndarray) -> np.ndarray:
            c, s = math.cos(box[7]), math.sin(box[7])
            d = points[:, :2] - box[1:3]
            return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)

        flipped = local(sample.points, before) * [1, -1]  # a mirror flips the box's frame
        np.testing.assert_allclose(local(aug.points, after), flipped * scale, atol=1e-3)
        if math.isfinite(before[8]):
            assert math.hypot(*after[8:10]) == pytest.approx(scale * math.hypot(*before[8:10]))
    np.testing.assert_allclose(aug.points[:, 3:], sample.points[:, 3:])


def test_modality_dropout() -> None:
    sample = _sample()
    rng = np.random.default_rng(1)
    gone = augment(sample, rng, AugmentConfig(0, (1, 1), 0), DropoutConfig(1.0, 0, 0), CFG)
    assert not gone.points[:, 4:].any()
    blind = augment(sample, rng, AugmentConfig(0, (1, 1), 0), DropoutConfig(0, 1.0, 0), CFG)
    assert not blind.points[:, 4:7].any() and (blind.points[:, 7] == 1).all()
    with pytest.raises(ValueError, match="camera"):
        DropoutConfig(camera=0.8, camera_blind=0.5)


def test_object_returns_dropout_thins_only_the_chosen_objects() -> None:
    rng = np.random.default_rng(3)
    inside = np.column_stack([rng.uniform(9, 11, 400), rng.uniform(-0.8, 0.8, 400),
                              rng.uniform(-1.4, 0.0, 400), np.ones(400)])  # fmt: skip
    outside = np.column_stack([rng.uniform(20, 30, 300), rng.uniform(5, 9, 300),
                               rng.uniform(-1.7, 0.0, 300), np.ones(300)])  # fmt: skip
    points = np.vstack([inside, outside]).astype(np.float32)
    box = np.array([[0, 10.0, 0.0, -0.7, 4.0, 1.8, 1.5, 0.0, 0, 0, 1]], np.float32)
    kept = drop_object_returns(points, box, rng, probability=1.0, keep=(0.2, 0.2))
    in_box = (np.abs(kept[:, 0] - 10) <= 2.1) & (np.abs(kept[:, 1]) <= 1.0)
    assert (~in_box).sum() == 300  # the rest of the scene untouched
    assert 50 <= in_box.sum() <= 110  # about a fifth of the object's 400 returns
    assert len(drop_object_returns(points, box, rng, probability=0.0, keep=(0.2, 0.2))) == 700
    with pytest.raises(ValueError, match="object_keep"):
        DropoutConfig(object_keep=(0.5, 0.2))
    with pytest.raises(ValueError, match="object_returns"):
        DropoutConfig(object_returns=1.5)


def test_thinning_keeps_every_other_beam() -> None:
    elevations = np.radians(np.arange(-24.0, 2.0, 0.42) + 0.21)
    r = 20.0
    pts = np.stack(
        [r * np.cos(elevations), np.zeros_like(elevations), r * np.sin(elevations),
         np.zeros_like(elevations)], axis=1
    ).astype(np.float32)  # fmt: skip
    kept = thin_beams(pts)
    assert abs(len(kept) - len(pts) / 2) <= 1


def test_gaussian_radius_grows_with_the_object() -> None:
    assert gaussian_radius(2.0, 1.0) < gaussian_radius(7.0, 3.0)
    assert gaussian_radius(7.0, 3.0) > 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": (1.05, 0.95)}, r"augment\.scale must be \[low, high\] with low <= high"),
        ({"scale": (0.0, 1.0)}, r"augment\.scale must be a number in \(0, 10\], got 0\.0"),
        ({"scale": (0.9, 1.0, 1.1)}, r"augment\.scale must be a \[low, high\] pair"),
        ({"scale": (0.9, math.inf)}, r"augment\.scale must be a number in"),
        ({"rotate_deg": math.nan}, r"augment\.rotate_deg must be a number in \[0, 180\]"),
        ({"rotate_deg": "10"}, r"augment\.rotate_deg must be a number"),
        ({"flip_y": True}, r"augment\.flip_y must be a probability in \[0, 1\], got True"),
        ({"flip_y": -0.5}, r"augment\.flip_y must be a probability"),
    ],
)
def test_augment_config_refuses_what_numpy_would_refuse_later(
    kwargs: dict[str, object], message: str
) -> None:
    """Checked when the config is read, not when the first batch is drawn (minutes in)."""
    with pytest.raises(ValueError, match=message) as e:
        AugmentConfig(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"camera": math.nan}, r"dropout\.camera must be a probability in \[0, 1\], got nan"),
        ({"beams": math.inf}, r"dropout\.beams must be a probability"),
        ({"object_keep": (0.2,)}, r"dropout\.object_keep must be a \[low, high\] pair"),
        ({"object_keep": ("a", "b")}, r"dropout\.object_keep must be a number in \[0, 1\]"),
    ],
)
def test_dropout_config_refuses_non_finite_and_malformed_values(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DropoutConfig(**kwargs)  # type: ignore[arg-type]
