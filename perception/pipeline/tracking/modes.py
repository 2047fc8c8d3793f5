"""A stationary model beside each track's motion model, mixed as an interacting multiple model.

A parked car seen by a moving sensor drifts: the part of it the lidar sees changes as the ego
passes, so its detected centre wanders by decimetres per second, and a motion model alone turns
that into a speed. Each track therefore also runs a stationary filter (its centre, x and y, a
slow random walk), and a mode probability says which of the two explains the detections
(Blom and Bar-Shalom's IMM with two models: mixing, per-model filtering, mode probabilities
from the measurement likelihoods, a combined output). The motion model is the tracker's EKF
(perception.pipeline.tracking.motion); its motion elements (CTRV: speed and yaw rate; CV: the
velocity) are zero in the stationary model. The likelihoods have a floor (a uniform outlier
density), so that one stray detection, which neither model explains, does not flip the mode.

Batched like the motion models: one row per track.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from perception.pipeline.tracking import motion

__all__ = [
    "combine",
    "mix",
    "mode_probability",
    "paired_mahalanobis_sq",
    "predict_stationary",
    "switch_probability",
    "update_stationary",
    "xy_likelihood",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# The motion elements of each model's state: zero in the stationary model.
_CTRV_MOTION = (2, 4)  # speed, yaw rate
_CV_MOTION = (2, 3)  # vx, vy


def switch_probability(rate_hz: float, dt: float) -> float:
    """The probability that an object starts or stops within `dt` seconds, at `rate_hz` such
    changes per second (a Poisson process)."""
    return float(-np.expm1(-rate_hz * dt))


def _motion_mask(ctrv: BoolArray) -> BoolArray:
    """(N, 5): the motion elements of each row's model."""
    mask = np.zeros((len(ctrv), motion.STATE_DIM), bool)
    mask[:, _CTRV_MOTION[0]] = True  # element 2 is motion in both models
    mask[ctrv, _CTRV_MOTION[1]] = True
    mask[~ctrv, _CV_MOTION[1]] = True
    return mask


def _as_motion_state(
    x: FloatArray, p: FloatArray, xs: FloatArray, ps: FloatArray, ctrv: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """The stationary estimate written in the motion model's state: the centre and its
    covariance from the stationary filter, the motion elements zero (their variances kept, so
    that mixing does not make the motion model sure of a standstill), the yaw as it was."""
    mask = _motion_mask(ctrv)
    xa = np.where(mask, 0.0, x)
    xa[:, :2] = xs
    keep = ~mask
    keep[:, :2] = False
    pa = p * (keep[:, :, None] & keep[:, None, :])
    pa[:, :2, :2] = ps
    diag = np.arange(motion.STATE_DIM)
    pa[:, diag, diag] = np.where(mask, p[:, diag, diag], pa[:, diag, diag])
    return xa, pa


def _state_difference(a: FloatArray, b: FloatArray, ctrv: BoolArray) -> FloatArray:
    """a - b with the yaw element wrapped."""
    d = a - b
    yaw = np.where(ctrv, 3, 4)
    rows = np.arange(len(d))
    d[rows, yaw] = motion.wrap_angle(d[rows, yaw])
    return d


def mix(
    stationary: FloatArray,
    *,
    x: FloatArray,
    p: FloatArray,
    xs: FloatArray,
    ps: FloatArray,
    ctrv: BoolArray,
    switch: float,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """The IMM's interaction step: each model's filter restarts from the mixture of both
    estimates, weighted by how likely each model was to lead to it. `stationary` (N,) is each
    track's probability of the stationary model, `switch` the probability of a change of model
    over the step. Returns the motion model's state and covariance, the stationary centre and
    covariance, and the predicted probability of the stationary model."""
    to_still = stationary * (1.0 - switch)
    from_moving_to_still = (1.0 - stationary) * switch
    predicted = to_still + from_moving_to_still
    still_moving = (1.0 - stationary) * (1.0 - switch)
    from_still_to_moving = stationary * switch
    moving = still_moving + from_still_to_moving
    tiny = np.finfo(np.float64).tiny
    # Into the motion model: its own estimate, and the stationary one as a motion state.
    w = from_still_to_moving / np.maximum(moving, tiny)
    xa, pa = _as_motion_state(x, p, xs, ps, ctrv)
    d = _state_difference(xa, x, ctrv)
    x0 = x + w[:, None] * d
    d_own = _state_difference(x, x0, ctrv)
    d_other = _state_difference(xa, x0, ctrv)
    p0 = (1.0 - w)[:, None, None] * (p + d_own[:, :, None] * d_own[:, None, :]) + w[
        :, None, None
    ] * (pa + d_other[:, :, None] * d_other[:, None, :])
    # Into the stationary model: its own centre, and the motion model's.
    ws = from_moving_to_still / np.maximum(predicted, tiny)
    xs0 = xs + ws[:, None] * (x[:, :2] - xs)
    e_own = xs - xs0
    e_other = x[:, :2] - xs0
    ps0 = (1.0 - ws)[:, None, None] * (ps + e_own[:, :, None] * e_own[:, None, :]) + ws[
        :, None, None
    ] * (p[:, :2, :2] + e_other[:, :, None] * e_other[:, None, :])
    x0[ctrv, 3] = motion.wrap_angle(x0[ctrv, 3])
    x0[~ctrv, 4] = motion.wrap_angle(x0[~ctrv, 4])
    return x0, motion.symmetric(p0), xs0, motion.symmetric(ps0), predicted


def predict_stationary(ps: FloatArray, drift_std: float, dt: float) -> FloatArray:
    """Stationary covariances `dt` seconds on: the centre a random walk of `drift_std` m per
    square-root second (a parked object's detected centre wanders as the view of it changes)."""
    out: FloatArray = ps + (drift_std * drift_std * dt) * np.eye(2)
    return out


def paired_mahalanobis_sq(innovation: FloatArray, s: FloatArray) -> FloatArray:
    """Squared Mahalanobis lengths (K,) of 2D innovations (K, 2), each with its own covariance
    (K, 2, 2); the 2 x 2 inverse written out, as association.mahalanobis_sq does for all
    track-detection pairs."""
    det = s[:, 0, 0] * s[:, 1, 1] - s[:, 0, 1] * s[:, 1, 0]
    dx, dy = innovation[:, 0], innovation[:, 1]
    d2: FloatArray = (
        s[:, 1, 1] * dx * dx - 2.0 * s[:, 0, 1] * dx * dy + s[:, 0, 0] * dy * dy
    ) / det
    return d2


def xy_likelihood(innovation: FloatArray, s: FloatArray, outlier_density: float) -> FloatArray:
    """The density (per m^2) of 2D innovations (K, 2) with covariances `s` (K, 2, 2), plus a
    uniform `outlier_density`: a detection neither model explains weighs the same in both."""
    det = s[:, 0, 0] * s[:, 1, 1] - s[:, 0, 1] * s[:, 1, 0]
    d2 = paired_mahalanobis_sq(innovation, s)
    out: FloatArray = np.exp(-0.5 * d2) / (2.0 * np.pi * np.sqrt(det)) + outlier_density
    return out


def update_stationary(
    xs: FloatArray, ps: FloatArray, z: FloatArray, r: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The stationary filters after measuring centres `z` (K, 2) with noise `r` (K, 2, 2).
    Returns centres, covariances, and the innovations and their covariances (for
    `xy_likelihood`)."""
    innovation = z - xs
    s = ps + r
    gain = ps @ np.linalg.inv(s)
    out = xs + np.einsum("kij,kj->ki", gain, innovation)
    i_k = np.eye(2) - gain
    p_out = i_k @ ps @ i_k.transpose(0, 2, 1) + gain @ r @ gain.transpose(0, 2, 1)
    return out, motion.symmetric(p_out), innovation, s


def mode_probability(
    predicted: FloatArray, likelihood_stationary: FloatArray, likelihood_moving: FloatArray
) -> FloatArray:
    """The stationary model's probability after a measurement (Bayes over the two models)."""
    a = predicted * likelihood_stationary
    b = (1.0 - predicted) * likelihood_moving
    out: FloatArray = a / np.maximum(a + b, np.finfo(np.float64).tiny)
    return out


def combine(
    stationary: FloatArray, x: FloatArray, p: FloatArray, ctrv: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """The tracks' velocities (N, 2) for output and the covariances (N, 4, 4) of (x, y, vx,
    vy): the mixture of the motion model's velocity and the stationary model's zero. The
    centre stays the motion model's: the stationary model's lags a moving object by up to a
    sweep's travel (it is restarted from the motion model's only by the mixing), which a
    mixture would show as a position error even at a small stationary probability."""
    mu = stationary[:, None]
    v_moving = motion.velocity(x, ctrv)
    cov = motion.kinematic_covariance(x, p, ctrv)
    v = (1.0 - mu) * v_moving
    d_moving = v_moving - v
    cov[:, 2:, 2:] = (1.0 - mu)[:, :, None] * (
        cov[:, 2:, 2:] + d_moving[:, :, None] * d_moving[:, None, :]
    ) + mu[:, :, None] * (v[:, :, None] * v[:, None, :])
    cov[:, :2, 2:] *= 1.0 - mu[:, :, None]
    cov[:, 2:, :2] *= 1.0 - mu[:, :, None]
    return v, motion.symmetric(cov)
