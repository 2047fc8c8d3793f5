"""Spinning-lidar models: synth64 keeps the world's sensor bit for bit; the HDL-64E matches KITTI's
calibration; the Lambertian return model orders intensities and losses the way physics does."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from replay.synth.lidar_model import (
    LIDAR_MODELS,
    MATERIALS,
    LidarModel,
    Material,
    lidar_model,
    passes_through,
)


def _original_directions() -> tuple[np.ndarray, np.ndarray]:
    """The synthetic world's sensor as it was written before the lidar models existed."""
    beams, columns = 64, 1024
    elev = np.radians(np.linspace(2.0, -24.8, beams))
    col_t = (np.arange(columns) + 0.5) / columns * 100_000_000 * 1e-9
    az = math.pi - 2.0 * math.pi * (np.arange(columns) + 0.5) / columns
    ce = np.cos(elev)[:, None]
    dirs = np.stack(
        [
            ce * np.cos(az)[None],
            ce * np.sin(az)[None],
            np.broadcast_to(np.sin(elev)[:, None], (beams, columns)),
        ],
        axis=-1,
    )
    return dirs, col_t


def _noise_free(model: LidarModel) -> LidarModel:
    return dataclasses.replace(model, intensity_noise=0.0, dropout=0.0)


def test_synth64_directions_are_bit_identical_to_the_world() -> None:
    dirs, col_t = lidar_model("synth64").directions()
    ref_dirs, ref_t = _original_directions()
    assert dirs.shape == ref_dirs.shape == (64, 1024, 3)
    assert dirs.tobytes() == ref_dirs.tobytes()
    assert col_t.tobytes() == ref_t.tobytes()
    offsets = lidar_model("synth64").column_offsets_ns()
    assert np.array_equal(offsets, np.round(ref_t * 1e9).astype(np.int64))


def test_directions_are_unit_rays_turning_clockwise_from_the_rear() -> None:
    model = lidar_model("vlp32c")
    dirs, col_t = model.directions()
    assert dirs.shape == (32, model.columns, 3)
    assert np.allclose(np.linalg.norm(dirs, axis=-1), 1.0)
    assert np.allclose(np.degrees(np.arcsin(dirs[:, 0, 2])), model.elevations_deg)
    az = np.arctan2(dirs[0, :, 1], dirs[0, :, 0])
    assert az[0] > np.radians(179.0)  # starts at the rear, turning towards -y (clockwise)
    assert abs(az[model.columns // 2]) < np.radians(model.azimuth_step_deg)
    assert np.all(np.diff(col_t) > 0) and col_t[-1] < model.period_ns * 1e-9


def _old_world_returns(
    depth: np.ndarray, refl: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # replay.synth.world.lidar_sweep before the lidar model existed, verbatim.
    noise = rng.normal(0.0, 0.02, depth.shape)
    drop = rng.random(depth.shape) < 0.03
    inten_noise = rng.uniform(-0.05, 0.05, depth.shape)
    keep = np.isfinite(depth) & (depth <= 120.0) & ~drop
    return keep, depth + noise, np.clip(refl + inten_noise, 0.0, 1.0)


def test_flat_returns_reproduce_the_world_and_its_random_stream() -> None:
    setup = np.random.default_rng(7)
    depth = setup.uniform(1.0, 150.0, (64, 1024))
    depth[setup.random(depth.shape) < 0.2] = np.inf
    refl = setup.uniform(0.0, 1.0, depth.shape)
    cos = setup.uniform(0.0, 1.0, depth.shape)
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    got = lidar_model("synth64").returns(depth, refl, cos, a)
    keep, rng_m, inten = _old_world_returns(depth, refl, b)
    assert np.array_equal(got.keep, keep)
    assert 0.3 < keep.mean() < 0.9
    assert got.range_m[keep].tobytes() == rng_m[keep].tobytes()
    assert got.intensity[keep].tobytes() == inten[keep].tobytes()
    assert np.all(np.isinf(got.range_m[~keep]))
    assert a.random() == b.random()  # same number of draws consumed


def test_hdl64e_has_kittis_non_uniform_two_block_geometry() -> None:
    model = lidar_model("hdl64e")
    elev = np.array(model.elevations_deg)
    assert model.beams == 64
    assert 1.5 < elev[0] < 2.5 and -25.3 < elev[-1] < -24.5
    spacing = -np.diff(elev)
    assert np.all(spacing > 0)
    assert spacing.max() > 2 * spacing.min()  # not a linspace
    # Rows 0-31 are the upper block (hardware lasers 0-31), denser than the lower block.
    ids = np.array(model.laser_ids)
    assert set(ids[:32]) == set(range(32)) and set(ids[32:]) == set(range(32, 64))
    assert np.median(spacing[:31]) < 0.8 * np.median(spacing[32:])
    assert -8.9 < elev[31] < -8.2 and -9.2 < elev[32] < -8.7
    # KITTI's clouds: ~2083 firings a turn (0.17 deg); the datasheet's finest step is 0.09 deg.
    assert abs(model.azimuth_step_deg - 0.173) < 0.005
    assert abs(lidar_model("hdl64e-fine").azimuth_step_deg - 0.09) < 0.005
    assert model.range_noise_m <= 0.02 and model.intensity_model == "lambertian"


def test_other_profiles_have_their_beam_counts_and_fields_of_view() -> None:
    expected = {
        "vlp16": (16, 15.0, -15.0),
        "vlp32c": (32, 15.0, -25.0),
        "os1-64": (64, 16.6, -16.6),
    }
    for name, (beams, top, bottom) in expected.items():
        model = lidar_model(name)
        assert model.beams == beams
        assert model.vertical_fov_deg == pytest.approx((top, bottom))
    assert np.allclose(-np.diff(lidar_model("vlp16").elevations_deg), 2.0)
    vlp32c_spacing = -np.diff(lidar_model("vlp32c").elevations_deg)
    assert vlp32c_spacing.min() < 0.4 and vlp32c_spacing.max() > 4.0


def _intensity(model: LidarModel, material: str, depth: float, cos: float, n: int = 2000) -> Any:
    m = MATERIALS[material]
    out = model.returns(
        np.full(n, depth),
        m.reflectivity,
        cos,
        np.random.default_rng(3),
        retroreflective=m.retroreflective,
    )
    return out.intensity[out.keep]


def test_lambertian_intensity_follows_reflectivity_and_incidence() -> None:
    model = lidar_model("hdl64e")
    retro = _intensity(model, "retroreflector", 20.0, 1.0)
    paint = _intensity(model, "car_paint", 20.0, 1.0)
    asphalt = _intensity(model, "asphalt", 20.0, 1.0)
    assert retro.mean() > paint.mean() + 0.3
    assert paint.mean() > asphalt.mean() + 0.1
    assert retro.min() > 0.9  # saturates, whatever the angle:
    assert _intensity(model, "retroreflector", 20.0, 0.1).min() > 0.9
    grazing = _intensity(model, "car_paint", 20.0, 0.2)
    assert grazing.mean() < 0.5 * paint.mean()
    assert np.all((paint >= 0.0) & (paint <= 1.0))
    # Exactly reflectivity * cos * exp(-d / falloff) without noise.
    clean = _intensity(_noise_free(model), "car_paint", 20.0, 0.5, n=10)
    assert np.allclose(clean, 0.30 * 0.5 * np.exp(-20.0 / model.intensity_falloff_m))


def _kept_fraction(model: LidarModel, material: str, depth: float, cos: float) -> float:
    m = MATERIALS[material]
    out = model.returns(np.full(20_000, depth), m.reflectivity, cos, np.random.default_rng(5))
    return float(out.keep.mean())


def test_far_dark_and_grazing_targets_drop_more_than_near_bright_ones() -> None:
    model = lidar_model("hdl64e")
    near_bright = _kept_fraction(model, "vegetation", 10.0, 1.0)
    far_dark = _kept_fraction(model, "rubber", 110.0, 1.0)
    assert near_bright > 0.98
    assert far_dark < near_bright - 0.3
    assert (
        _kept_fraction(model, "asphalt", 50.0, 0.05)
        < _kept_fraction(model, "asphalt", 50.0, 1.0) - 0.5
    )
    # Random dropout alone is what a bright near target loses.
    assert near_bright == pytest.approx(1.0 - model.dropout, abs=0.01)
    # The flat model knows nothing of reflectivity or angle.
    flat = lidar_model("synth64")
    assert _kept_fraction(flat, "rubber", 110.0, 0.01) == pytest.approx(0.97, abs=0.01)


def test_range_gate_and_noise() -> None:
    model = lidar_model("hdl64e")
    depth = np.array([0.5, 5.0, 119.0, 121.0, np.inf] * 2000)
    out = model.returns(depth, 0.9, 1.0, np.random.default_rng(2))
    by_depth = out.keep.reshape(-1, 5).mean(axis=0)
    assert by_depth[0] == 0.0 and by_depth[3] == 0.0 and by_depth[4] == 0.0
    assert by_depth[1] > 0.98 and by_depth[2] > 0.9
    err = out.range_m[out.keep] - depth[out.keep]
    assert abs(err.std() - 0.02) < 0.002 and abs(err.mean()) < 0.002


def test_glass_transmits_about_its_transmittance() -> None:
    glass = MATERIALS["glass"]
    through = passes_through(np.full(50_000, glass.transmittance), np.random.default_rng(4))
    assert through.mean() == pytest.approx(glass.transmittance, abs=0.01)
    assert not passes_through(np.zeros(100), np.random.default_rng(4)).any()
    assert passes_through(np.ones(100), np.random.default_rng(4)).all()
    with pytest.raises(ValueError, match="transmittance"):
        passes_through(1.5, np.random.default_rng(4))


@pytest.mark.parametrize("name", sorted(LIDAR_MODELS))
def test_same_generator_state_gives_identical_returns(name: str) -> None:
    model = lidar_model(name)
    setup = np.random.default_rng(1)
    depth = setup.uniform(0.0, 130.0, (model.beams, 64))
    refl = setup.uniform(0.0, 1.0, depth.shape)
    cos = setup.uniform(0.0, 1.0, depth.shape)
    retro = setup.random(depth.shape) < 0.05
    a, b, c = (
        model.returns(depth, refl, cos, np.random.default_rng(s), retroreflective=retro)
        for s in (9, 9, 10)
    )
    for x, y in zip(a, b, strict=True):
        assert x.tobytes() == y.tobytes()
    assert a.range_m.tobytes() != c.range_m.tobytes()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("elevations_deg", ()),
        ("elevations_deg", (1.0, 1.0)),
        ("elevations_deg", (-1.0, 1.0)),
        ("elevations_deg", (95.0,)),
        ("columns", 0),
        ("period_ns", 0),
        ("min_range_m", -1.0),
        ("max_range_m", 0.0),
        ("range_noise_m", -0.01),
        ("dropout", 1.5),
        ("dropout", -0.1),
        ("intensity_model", "phong"),
        ("intensity_noise", 2.0),
        ("detection_range_m", 0.0),
        ("detection_steepness", -1.0),
        ("intensity_falloff_m", 0.0),
        ("laser_ids", (0, 0)),
    ],
)
def test_invalid_fields_raise_naming_the_field(field: str, value: Any) -> None:
    base = LidarModel("test", (2.0, 0.0), columns=8, laser_ids=(1, 0))
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(base, **{field: value})


def test_invalid_material_raises_naming_the_field() -> None:
    with pytest.raises(ValueError, match="reflectivity"):
        Material("mirror", 1.2)
    with pytest.raises(ValueError, match="transmittance"):
        Material("glass", 0.1, transmittance=-0.5)


def test_returns_rejects_arrays_that_do_not_fit_the_depth() -> None:
    with pytest.raises(ValueError, match="reflectivity"):
        lidar_model("hdl64e").returns(np.ones((4, 5)), np.ones(3), 1.0, np.random.default_rng(0))


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="hdl65") as err:
        lidar_model("hdl65")
    for name in ("synth64", "hdl64e", "vlp16", "vlp32c", "os1-64"):
        assert name in str(err.value)


def test_material_table_covers_the_scene() -> None:
    needed = {
        "asphalt", "lane_paint", "grass", "concrete", "brick", "vegetation", "bark", "car_paint",
        "glass", "metal", "fabric", "skin", "rubber", "retroreflector",
    }  # fmt: skip
    assert needed <= set(MATERIALS)
    assert MATERIALS["retroreflector"].retroreflective
    assert MATERIALS["glass"].transmittance > 0.5
    assert MATERIALS["asphalt"].reflectivity < MATERIALS["vegetation"].reflectivity
