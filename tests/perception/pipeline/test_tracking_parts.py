"""The tracker's parts: the assignment solver, the motion models' Jacobians, the config."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from perception.config import TrackingConfig, parse_config
from perception.errors import ConfigError
from perception.pipeline.tracking import assign, motion
from perception.pipeline.tracking.association import chi2_2dof_quantile, mahalanobis_sq

# -- assignment ------------------------------------------------------------------------------


def _best(cost: np.ndarray, feasible: np.ndarray) -> tuple[int, float]:
    """(pairs, cost) of the best matching by brute force: most pairs, then least cost."""
    n_rows, n_cols = cost.shape
    best = (0, 0.0)
    for cols in itertools.product([None, *range(n_cols)], repeat=n_rows):
        used = [c for c in cols if c is not None]
        if len(used) != len(set(used)):
            continue
        pairs = [(r, c) for r, c in enumerate(cols) if c is not None]
        if not all(feasible[r, c] for r, c in pairs):
            continue
        total = float(sum(cost[r, c] for r, c in pairs))
        if len(pairs) > best[0] or (len(pairs) == best[0] and total < best[1] - 1e-12):
            best = (len(pairs), total)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_assignment_is_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows, n_cols = rng.integers(1, 6, 2)
    cost = rng.uniform(0.0, 9.0, (n_rows, n_cols))
    feasible = rng.random((n_rows, n_cols)) < rng.uniform(0.2, 1.0)
    rows, cols = assign(cost, feasible)
    assert list(rows) == sorted(set(rows.tolist()))
    assert len(set(cols.tolist())) == len(cols)
    assert all(feasible[rows, cols])
    pairs, total = _best(cost, feasible)
    assert len(rows) == pairs
    assert float(cost[rows, cols].sum()) == pytest.approx(total)


def test_assignment_prefers_more_pairs_to_cheaper_ones() -> None:
    # Greedy would give row 0 its cheap column 0 and leave row 1 without one.
    cost = np.array([[0.1, 5.0], [1.0, 9.0]])
    feasible = np.array([[True, True], [True, False]])
    rows, cols = assign(cost, feasible)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_assignment_edge_cases() -> None:
    for shape in ((0, 3), (3, 0), (0, 0)):
        rows, cols = assign(np.zeros(shape), np.zeros(shape, bool))
        assert rows.size == cols.size == 0
    rows, cols = assign(np.ones((3, 3)), np.zeros((3, 3), bool))
    assert rows.size == 0
    # Separate clusters (a lone pair, a contested pair of rows) solve independently.
    cost = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    feasible = np.array([[True, False, False], [False, True, True], [False, True, True]])
    rows, cols = assign(cost, feasible)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 2, 1]


def test_assignment_of_fifty_well_separated_objects() -> None:
    rng = np.random.default_rng(0)
    d2 = rng.uniform(10.0, 100.0, (50, 50))
    truth = rng.permutation(50)
    d2[np.arange(50), truth] = rng.uniform(0.0, 2.0, 50)
    rows, cols = assign(d2, d2 < chi2_2dof_quantile(0.99))
    assert rows.tolist() == list(range(50)) and cols.tolist() == truth.tolist()


def test_gate_and_mahalanobis() -> None:
    assert chi2_2dof_quantile(0.99) == pytest.approx(9.2103, abs=1e-4)
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    cov = np.array([[[4.0, 0.0], [0.0, 1.0]], [[1.0, 0.5], [0.5, 1.0]]])
    points = np.array([[2.0, 0.0], [0.0, 2.0], [11.0, 1.0]])
    variances = np.array([0.0, 1.0, 0.5])
    d2 = mahalanobis_sq(means, cov, points, variances)
    for i, j in itertools.product(range(2), range(3)):
        s = cov[i] + variances[j] * np.eye(2)
        diff = points[j] - means[i]
        assert d2[i, j] == pytest.approx(diff @ np.linalg.solve(s, diff))


# -- motion models ---------------------------------------------------------------------------

STATES = {
    "ctrv_turning": (np.array([1.0, 2.0, 8.0, 0.7, 0.4]), True),
    "ctrv_straight": (np.array([1.0, 2.0, 8.0, -2.0, 1e-6]), True),
    "ctrv_reversing": (np.array([-3.0, 0.5, -2.0, 2.5, -0.3]), True),
    "cv": (np.array([1.0, 2.0, 1.2, -0.8, 0.3]), False),
}


def _transition(x: np.ndarray, ctrv: bool, dt: float) -> np.ndarray:
    zero = np.zeros(1)
    out, _ = motion.predict(
        x[None],
        np.zeros((1, 5, 5)),
        np.array([ctrv]),
        dt,
        accel_std=zero,
        yaw_accel_std=zero,
        yaw_rate_std=zero,
    )
    return out[0]


def _numeric_jacobian(f, x: np.ndarray, rows: int, h: float = 1e-6) -> np.ndarray:
    j = np.zeros((rows, len(x)))
    for i in range(len(x)):
        e = np.zeros(len(x))
        e[i] = h
        j[:, i] = (f(x + e) - f(x - e)) / (2 * h)
    return j


@pytest.mark.parametrize("name", STATES)
def test_prediction_covariance_uses_the_model_jacobian(name: str) -> None:
    x, ctrv = STATES[name]
    dt = 0.3
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    p = a @ a.T + np.eye(5)
    zero = np.zeros(1)
    _, p_out = motion.predict(
        x[None], p[None], np.array([ctrv]), dt, accel_std=zero, yaw_accel_std=zero,
        yaw_rate_std=zero,
    )  # fmt: skip
    j = _numeric_jacobian(lambda s: _transition(s, ctrv, dt), x, 5)
    np.testing.assert_allclose(p_out[0], j @ p @ j.T, rtol=1e-5, atol=1e-6)


def test_ctrv_follows_a_circle_exactly() -> None:
    radius, speed = 20.0, 8.0
    x = np.array([0.0, 0.0, speed, 0.0, speed / radius])
    for _ in range(25):
        x = _transition(x, True, 0.2)
    angle = speed / radius * 5.0
    np.testing.assert_allclose(
        x[:4], [radius * math.sin(angle), radius * (1 - math.cos(angle)), speed, angle], atol=1e-9
    )


def test_process_noise_grows_with_the_time_step() -> None:
    x = np.array([[0.0, 0.0, 10.0, 0.3, 0.1], [0.0, 0.0, 1.0, 1.0, 0.0]])
    ctrv = np.array([True, False])
    stds = {"accel_std": np.ones(2), "yaw_accel_std": np.ones(2), "yaw_rate_std": np.ones(2)}
    traces = [
        np.trace(motion.predict(x, np.zeros((2, 5, 5)), ctrv, dt, **stds)[1], axis1=1, axis2=2)
        for dt in (0.1, 0.2, 0.5)
    ]
    assert np.all(traces[0] < traces[1]) and np.all(traces[1] < traces[2])


@pytest.mark.parametrize("name", STATES)
def test_kinematic_covariance_jacobian(name: str) -> None:
    x, ctrv = STATES[name]
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    p = a @ a.T

    def kinematics(s: np.ndarray) -> np.ndarray:
        return np.concatenate([s[:2], motion.velocity(s[None], np.array([ctrv]))[0]])

    j = _numeric_jacobian(kinematics, x, 4)
    cov = motion.kinematic_covariance(x[None], p[None], np.array([ctrv]))[0]
    np.testing.assert_allclose(cov, j @ p @ j.T, rtol=1e-6, atol=1e-8)


def test_model_conversions_keep_the_motion() -> None:
    x_cv = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    p = np.diag([0.1, 0.1, 1.0, 1.0, 0.2])
    x_ctrv, p_ctrv = motion.cv_to_ctrv(x_cv, p, 1.0, 0.5)
    assert x_ctrv.tolist() == pytest.approx([1.0, 2.0, 5.0, math.atan2(4.0, 3.0), 0.0])
    assert p_ctrv[4, 4] == pytest.approx(0.25)
    back, p_back = motion.ctrv_to_cv(x_ctrv, p_ctrv)
    assert back[:4].tolist() == pytest.approx(x_cv[:4].tolist())
    np.testing.assert_allclose(p_back[:4, :4], p[:4, :4], atol=1e-12)
    # Static: the yaw stays and the velocity is projected on it.
    slow, _ = motion.cv_to_ctrv(np.array([0.0, 0.0, 0.3, 0.1, 0.5]), p, 1.0, 0.5)
    assert slow[3] == 0.5
    assert slow[2] == pytest.approx(0.3 * math.cos(0.5) + 0.1 * math.sin(0.5))


def test_heading_normalisation_and_yaw_alignment() -> None:
    x = np.array([[0.0, 0.0, -5.0, 0.2, 0.1], [0.0, 0.0, -0.5, 0.2, 0.1], [0, 0, 2.0, 0, 3.0]])
    p = np.broadcast_to(np.eye(5), (3, 5, 5)).copy()
    p[0, 2, 3] = p[0, 3, 2] = 0.3
    ctrv = np.array([True, True, False])
    motion.normalise_heading(x, p, ctrv, 1.0)
    # Going backwards fast: turned round, same velocity; slowly: left as it is.
    assert x[0, 2:4].tolist() == pytest.approx([5.0, 0.2 - math.pi])
    assert p[0, 2, 3] == pytest.approx(-0.3)
    assert x[1, 2:4].tolist() == pytest.approx([-0.5, 0.2])
    assert x[2, 4] == pytest.approx(3.0 - math.pi)  # flipped to its direction of motion
    aligned = motion.align_yaw(np.array([0.1, 3.0, -3.0, 1.6]), np.zeros(4))
    np.testing.assert_allclose(aligned, [0.1, 3.0 - math.pi, math.pi - 3.0, 1.6 - math.pi])


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"confirm_hits": 0}, "confirm_hits: must be >= 1"),
        ({"confirm_hits": 4, "confirm_window": 3}, "confirm_window: must be >= confirm_hits"),
        ({"max_coast_s": 0.0}, "max_coast_s: must be a finite number > 0"),
        ({"max_gap_s": math.inf}, "max_gap_s: must be a finite number > 0"),
        ({"moving_speed_mps": -1.0}, "moving_speed_mps: must be a finite number > 0"),
        ({"gate_probability": 1.0}, r"gate_probability: must be in \(0, 1\)"),
        ({"size_smoothing": 0.0}, r"size_smoothing: must be in \(0, 1\]"),
        ({"existence_hit_gain": 1.5}, r"existence_hit_gain: must be in \(0, 1\]"),
        ({"existence_miss_decay": 1.0}, r"existence_miss_decay: must be in \(0, 1\)"),
        ({"ctrv_labels": ("Car", "")}, "ctrv_labels: labels must not be empty"),
        (
            {"compatible_labels": (("Car",), ())},
            "compatible_labels: groups and labels must not be empty",
        ),
        (
            {"compatible_labels": (("Car", "unknown"),)},
            "compatible_labels: `unknown` is compatible with every label already",
        ),
        (
            {"compatible_labels": (("Car", "Van"), ("Van", "Truck"))},
            "compatible_labels: 'Van' is in more than one group",
        ),
        ({"mode_switch_rate_hz": 0.0}, "mode_switch_rate_hz: must be a finite number > 0"),
        ({"stationary_drift_mps": math.inf}, "stationary_drift_mps: must be a finite number"),
        ({"outlier_density_per_m2": -1.0}, "outlier_density_per_m2: must be a finite number"),
        (
            {"initial_stationary_probability": {"unknown": 1.0}},
            r"initial_stationary_probability.unknown: must be in \(0, 1\)",
        ),
        (
            {"initial_stationary_probability": {"Car": 0.5}},
            "initial_stationary_probability: needs an `unknown` entry",
        ),
        ({"accel_std_mps2": {"Car": 1.0}}, "accel_std_mps2: needs an `unknown` entry"),
        (
            {"position_std_m": {"Car": -0.1, "unknown": 0.3}},
            "position_std_m.Car: must be a finite number > 0",
        ),
        ({"max_speed_mps": {"unknown": math.nan}}, "max_speed_mps.unknown: must be a finite"),
    ],
)
def test_config_errors_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        TrackingConfig(**changes)


def test_tracking_section_of_the_node_config() -> None:
    cfg = parse_config({"tracking": {"confirm_hits": 2, "max_distance_m": {"unknown": 2.5}}})
    assert cfg.tracking.confirm_hits == 2
    assert cfg.tracking.max_distance_m == {"unknown": 2.5}
    assert parse_config({}).tracking == TrackingConfig()
    groups = parse_config({"tracking": {"compatible_labels": [["Car", "Van"], ["Cyclist"]]}})
    assert groups.tracking.compatible_labels == (("Car", "Van"), ("Cyclist",))
    with pytest.raises(ConfigError, match=r"^node\.yaml: tracking\.yaw_std_rad\.Car: must"):
        parse_config({"tracking": {"yaw_std_rad": {"Car": 0, "unknown": 1}}}, "node.yaml")
    with pytest.raises(ConfigError, match=r"tracking\.confirm_hits: expected an integer"):
        parse_config({"tracking": {"confirm_hits": 2.5}})
