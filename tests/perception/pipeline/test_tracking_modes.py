"""The stationary model beside the motion model (perception.pipeline.tracking.modes): the IMM
steps against their textbook definitions, on random states of both motion models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from perception.pipeline.tracking import modes, motion


def _random_tracks(
    n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n tracks, alternately CTRV and CV, with random states and positive definite
    covariances of both models."""
    rng = np.random.default_rng(seed)
    ctrv = np.arange(n) % 2 == 0
    x = rng.normal(0.0, 3.0, (n, motion.STATE_DIM))
    a = rng.normal(0.0, 0.5, (n, motion.STATE_DIM, motion.STATE_DIM))
    p = a @ a.transpose(0, 2, 1) + 0.05 * np.eye(motion.STATE_DIM)
    xs = x[:, :2] + rng.normal(0.0, 0.5, (n, 2))
    b = rng.normal(0.0, 0.3, (n, 2, 2))
    ps = b @ b.transpose(0, 2, 1) + 0.01 * np.eye(2)
    return x, p, xs, ps, ctrv


def _positive_definite(p: np.ndarray) -> bool:
    return bool(np.allclose(p, np.swapaxes(p, -1, -2)) and np.linalg.eigvalsh(p).min() > 0)


def test_switch_probability_is_a_poisson_process() -> None:
    assert modes.switch_probability(0.1, 0.0) == 0.0
    assert modes.switch_probability(0.1, 0.1) == pytest.approx(1.0 - math.exp(-0.01))
    assert modes.switch_probability(0.1, 0.1) == pytest.approx(0.01, rel=0.01)
    assert modes.switch_probability(10.0, 10.0) == pytest.approx(1.0)


def test_without_switching_each_model_keeps_its_own_estimate() -> None:
    x, p, xs, ps, ctrv = _random_tracks(6, 1)
    still = np.linspace(0.05, 0.95, 6)
    x0, p0, xs0, ps0, predicted = modes.mix(still, x=x, p=p, xs=xs, ps=ps, ctrv=ctrv, switch=0.0)
    np.testing.assert_allclose(predicted, still)
    np.testing.assert_allclose(xs0, xs)
    np.testing.assert_allclose(ps0, ps)
    np.testing.assert_allclose(x0[:, :3], x[:, :3])
    np.testing.assert_allclose(p0, p)


def test_mixing_weights_and_moments() -> None:
    x, p, xs, ps, ctrv = _random_tracks(4, 2)
    still = np.array([0.9, 0.5, 0.2, 0.7])
    switch = 0.1
    x0, p0, xs0, ps0, predicted = modes.mix(still, x=x, p=p, xs=xs, ps=ps, ctrv=ctrv, switch=switch)
    np.testing.assert_allclose(predicted, still * 0.9 + (1.0 - still) * 0.1)
    for i in range(4):
        # Into the stationary model: its centre and the motion model's, by Bayes' weights.
        w = (1.0 - still[i]) * switch / predicted[i]
        mean = (1.0 - w) * xs[i] + w * x[i, :2]
        np.testing.assert_allclose(xs0[i], mean)
        d_own, d_other = xs[i] - mean, x[i, :2] - mean
        cov = (1.0 - w) * (ps[i] + np.outer(d_own, d_own)) + w * (
            p[i, :2, :2] + np.outer(d_other, d_other)
        )
        np.testing.assert_allclose(ps0[i], cov)
        # Into the motion model: the stationary estimate carries zero motion.
        w_m = still[i] * switch / (1.0 - predicted[i])
        moving = [2, 4] if ctrv[i] else [2, 3]
        np.testing.assert_allclose(x0[i, moving], (1.0 - w_m) * x[i, moving])
        np.testing.assert_allclose(x0[i, :2], (1.0 - w_m) * x[i, :2] + w_m * xs[i])
    assert _positive_definite(p0)
    assert _positive_definite(ps0)


def test_a_certainly_stationary_track_restarts_its_motion_model_at_rest() -> None:
    x, p, xs, ps, ctrv = _random_tracks(2, 3)
    x0, p0, _, _, _ = modes.mix(np.ones(2), x=x, p=p, xs=xs, ps=ps, ctrv=ctrv, switch=0.05)
    np.testing.assert_allclose(x0[:, :2], xs)
    np.testing.assert_allclose(x0[0, [2, 4]], 0.0)  # CTRV: speed and yaw rate
    np.testing.assert_allclose(x0[1, [2, 3]], 0.0)  # CV: velocity
    np.testing.assert_allclose(p0[:, :2, :2], ps)
    # The motion elements keep their uncertainty: a standstill is not made certain.
    np.testing.assert_allclose(p0[0, 2, 2], p[0, 2, 2])
    np.testing.assert_allclose(p0[1, 3, 3], p[1, 3, 3])
    assert _positive_definite(p0)


def test_stationary_update_is_a_kalman_update() -> None:
    xs = np.array([[0.0, 0.0], [5.0, -1.0]])
    ps = np.array([np.eye(2) * 0.04, np.diag([0.01, 0.09])])
    r = np.array([np.eye(2) * 0.04, np.eye(2) * 0.09])
    z = np.array([[1.0, -2.0], [6.0, 0.0]])
    out, p_out, innovation, s = modes.update_stationary(xs, ps, z, r)
    np.testing.assert_allclose(out[0], [0.5, -1.0])  # equal variances: halfway
    np.testing.assert_allclose(p_out[0], np.eye(2) * 0.02)
    np.testing.assert_allclose(out[1], [5.0 + 0.1, -1.0 + 0.5])
    np.testing.assert_allclose(innovation, z - xs)
    np.testing.assert_allclose(s, ps + r)
    grown = modes.predict_stationary(ps, 0.1, 0.5)
    np.testing.assert_allclose(grown - ps, np.broadcast_to(np.eye(2) * 0.005, (2, 2, 2)))


def test_likelihood_is_the_gaussian_density_plus_the_outlier_floor() -> None:
    rng = np.random.default_rng(4)
    innovation = rng.normal(0.0, 0.5, (5, 2))
    a = rng.normal(0.0, 0.4, (5, 2, 2))
    s = a @ a.transpose(0, 2, 1) + 0.02 * np.eye(2)
    got = modes.xy_likelihood(innovation, s, 0.1)
    expected = [
        multivariate_normal(np.zeros(2), c).pdf(v) + 0.1 for v, c in zip(innovation, s, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_mode_probability_is_bayes() -> None:
    got = modes.mode_probability(
        np.array([0.5, 0.9, 0.2, 0.5]),
        np.array([1.0, 0.1, 3.0, 0.0]),
        np.array([1.0, 0.4, 1.0, 0.0]),
    )
    np.testing.assert_allclose(got, [0.5, 0.09 / (0.09 + 0.04), 0.6 / 1.4, 0.0])


def test_combined_velocity_and_covariance() -> None:
    x, p, _, _, ctrv = _random_tracks(6, 5)
    still = np.array([0.0, 1.0, 0.3, 0.6, 0.0, 1.0])
    v, cov = modes.combine(still, x, p, ctrv)
    v_moving = motion.velocity(x, ctrv)
    c_moving = motion.kinematic_covariance(x, p, ctrv)
    np.testing.assert_allclose(v, (1.0 - still)[:, None] * v_moving)
    np.testing.assert_allclose(cov[0], c_moving[0])
    np.testing.assert_allclose(cov[1, :2, :2], c_moving[1, :2, :2])
    np.testing.assert_allclose(cov[1, 2:, :], 0.0, atol=1e-12)
    # The mixture's moments, by sampling: position from the motion model in both modes.
    rng = np.random.default_rng(6)
    i = 2
    draws = rng.multivariate_normal(np.r_[x[i, :2], v_moving[i]], c_moving[i], 200_000)
    draws[rng.random(len(draws)) < still[i], 2:] = 0.0
    np.testing.assert_allclose(draws.mean(axis=0)[2:], v[i], atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), cov[i], atol=0.05)
    assert _positive_definite(cov[still < 1.0])
