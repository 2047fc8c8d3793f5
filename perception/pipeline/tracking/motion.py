"""Batched extended Kalman filters of the tracker: every track is one row of a state array.

Two motion models share one five-element state so that all tracks predict and update together
(a Python loop of tiny numpy calls per track costs ~10 us a call):
- CTRV (constant turn rate and velocity, vehicles): x, y, v, yaw, yaw_rate;
- CV (constant velocity): x, y, vx, vy, yaw, the yaw a random walk of its own (a pedestrian's
  heading does not follow from a turn rate).
Both measure the box centre (x, y) and its yaw. Positions are metres in the world frame,
velocities m/s, angles radians, time steps seconds.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "CTRV_MEASURED",
    "CV_MEASURED",
    "STATE_DIM",
    "align_yaw",
    "ctrv_to_cv",
    "cv_to_ctrv",
    "heading",
    "kinematic_covariance",
    "normalise_heading",
    "predict",
    "symmetric",
    "update",
    "velocity",
    "wrap_angle",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

STATE_DIM = 5
#: The state elements each model measures: centre x, y and the yaw.
CTRV_MEASURED = (0, 1, 3)
CV_MEASURED = (0, 1, 4)

_EYE = np.eye(STATE_DIM)
_H_CTRV = _EYE[list(CTRV_MEASURED)]
_H_CV = _EYE[list(CV_MEASURED)]
# Below this yaw rate (rad/s) CTRV moves on a straight line: v / yaw_rate would lose precision.
_STRAIGHT_YAW_RATE = 1e-4


def wrap_angle(a: FloatArray) -> FloatArray:
    """Angles wrapped to [-pi, pi)."""
    wrapped: FloatArray = (a + np.pi) % (2.0 * np.pi) - np.pi
    return wrapped


def align_yaw(measured: FloatArray, reference: FloatArray) -> FloatArray:
    """The measured yaw or its opposite (+ pi), whichever is nearer `reference`: a box's
    outline does not tell its front from its back."""
    aligned: FloatArray = reference + (measured - reference + np.pi / 2) % np.pi - np.pi / 2
    return aligned


def predict(
    x: FloatArray,
    p: FloatArray,
    ctrv: BoolArray,
    dt: float,
    *,
    accel_std: FloatArray,
    yaw_accel_std: FloatArray,
    yaw_rate_std: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """States (N, 5) and covariances (N, 5, 5) `dt` seconds on. `ctrv` picks each row's model;
    the process noises are per row: acceleration (m/s^2; CTRV: along the heading), CTRV yaw
    acceleration (rad/s^2), CV heading rate (rad/s)."""
    n = len(x)
    f = np.broadcast_to(_EYE, (n, STATE_DIM, STATE_DIM)).copy()
    q = np.zeros((n, STATE_DIM, STATE_DIM))
    out = x.copy()
    dt2 = 0.5 * dt * dt

    iv = np.flatnonzero(~ctrv)
    if iv.size:
        out[iv, 0] += x[iv, 2] * dt
        out[iv, 1] += x[iv, 3] * dt
        f[iv, 0, 2] = dt
        f[iv, 1, 3] = dt
        # White acceleration per axis, integrated over the step; the heading drifts freely.
        qa = accel_std[iv] ** 2
        for pos, vel in ((0, 2), (1, 3)):
            q[iv, pos, pos] = qa * dt2 * dt2
            q[iv, pos, vel] = q[iv, vel, pos] = qa * dt2 * dt
            q[iv, vel, vel] = qa * dt * dt
        q[iv, 4, 4] = (yaw_rate_std[iv] * dt) ** 2

    ic = np.flatnonzero(ctrv)
    if ic.size:
        v, yaw, w = x[ic, 2], x[ic, 3], x[ic, 4]
        yaw1 = yaw + w * dt
        s0, c0 = np.sin(yaw), np.cos(yaw)
        s1, c1 = np.sin(yaw1), np.cos(yaw1)
        straight = np.abs(w) < _STRAIGHT_YAW_RATE
        w_safe = np.where(straight, 1.0, w)
        ds, dc = s1 - s0, c0 - c1
        # Nearly straight: the chord of the arc, which leaves at the mean heading of the step.
        mid = yaw + 0.5 * w * dt
        sm, cm = np.sin(mid), np.cos(mid)
        dx = np.where(straight, v * cm * dt, v / w_safe * ds)
        dy = np.where(straight, v * sm * dt, v / w_safe * dc)
        out[ic, 0] += dx
        out[ic, 1] += dy
        out[ic, 3] = yaw1
        f[ic, 0, 2] = np.where(straight, cm * dt, ds / w_safe)
        f[ic, 1, 2] = np.where(straight, sm * dt, dc / w_safe)
        f[ic, 0, 3] = np.where(straight, -v * sm * dt, v / w_safe * (c1 - c0))
        f[ic, 1, 3] = np.where(straight, v * cm * dt, v / w_safe * ds)
        f[ic, 0, 4] = np.where(
            straight, -v * sm * dt2, v * dt * c1 / w_safe - v * ds / (w_safe * w_safe)
        )
        f[ic, 1, 4] = np.where(
            straight, v * cm * dt2, v * dt * s1 / w_safe - v * dc / (w_safe * w_safe)
        )
        f[ic, 3, 4] = dt
        # Noise enters as a longitudinal acceleration and a yaw acceleration over the step.
        g_a = np.zeros((ic.size, STATE_DIM))
        g_a[:, 0] = dt2 * c0
        g_a[:, 1] = dt2 * s0
        g_a[:, 2] = dt
        g_w = np.zeros((ic.size, STATE_DIM))
        g_w[:, 3] = dt2
        g_w[:, 4] = dt
        q[ic] = (accel_std[ic] ** 2)[:, None, None] * (g_a[:, :, None] * g_a[:, None, :]) + (
            yaw_accel_std[ic] ** 2
        )[:, None, None] * (g_w[:, :, None] * g_w[:, None, :])

    p_out = f @ p @ f.transpose(0, 2, 1) + q
    return out, symmetric(p_out)


def update(
    x: FloatArray, p: FloatArray, ctrv: BoolArray, z: FloatArray, r: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """States and covariances after measuring `z` (K, 3: x, y, yaw) with noise `r` (K, 3, 3);
    the measured yaw must already be aligned (`align_yaw`). Joseph form, which keeps the
    covariances positive definite through many updates."""
    h = np.where(ctrv[:, None, None], _H_CTRV, _H_CV)
    ht = h.transpose(0, 2, 1)
    innovation = z - np.einsum("kij,kj->ki", h, x)
    innovation[:, 2] = wrap_angle(innovation[:, 2])
    pht = p @ ht
    s = h @ pht + r
    gain = pht @ np.linalg.inv(s)
    out = x + np.einsum("kij,kj->ki", gain, innovation)
    i_kh = _EYE - gain @ h
    p_out = i_kh @ p @ i_kh.transpose(0, 2, 1) + gain @ r @ gain.transpose(0, 2, 1)
    return out, symmetric(p_out)


def normalise_heading(x: FloatArray, p: FloatArray, ctrv: BoolArray, moving_speed: float) -> None:
    """In place: a moving track's yaw points where it goes. A CTRV track going backwards
    faster than `moving_speed` turns round (v and yaw flip together: the same motion); a moving
    CV track's yaw is flipped when it is more than 90 degrees off its velocity. Yaws are then
    wrapped to [-pi, pi)."""
    back = ctrv & (x[:, 2] < -moving_speed)
    if back.any():
        ib = np.flatnonzero(back)
        x[ib, 2] = -x[ib, 2]
        x[ib, 3] += np.pi
        # Jacobian diag(1, 1, -1, 1, 1): the speed's row and column change sign.
        p[ib, 2, :] *= -1.0
        p[ib, :, 2] *= -1.0
    cv = ~ctrv
    speed = np.hypot(x[:, 2], x[:, 3])
    motion = np.arctan2(x[:, 3], x[:, 2])
    flip = cv & (speed > moving_speed) & (np.abs(wrap_angle(x[:, 4] - motion)) > np.pi / 2)
    x[flip, 4] += np.pi
    x[ctrv, 3] = wrap_angle(x[ctrv, 3])
    x[cv, 4] = wrap_angle(x[cv, 4])


def heading(x: FloatArray, ctrv: BoolArray, moving_speed: float) -> FloatArray:
    """Each track's heading: the CTRV yaw; a CV track's direction of motion when it moves
    faster than `moving_speed`, else its smoothed measured yaw."""
    speed = np.hypot(x[:, 2], x[:, 3])
    cv_yaw = np.where(speed > moving_speed, np.arctan2(x[:, 3], x[:, 2]), x[:, 4])
    out: FloatArray = np.where(ctrv, x[:, 3], cv_yaw)
    return out


def velocity(x: FloatArray, ctrv: BoolArray) -> FloatArray:
    """Velocity over the ground (N, 2), world frame."""
    vx = np.where(ctrv, x[:, 2] * np.cos(x[:, 3]), x[:, 2])
    vy = np.where(ctrv, x[:, 2] * np.sin(x[:, 3]), x[:, 3])
    return np.stack([vx, vy], axis=1)


def kinematic_covariance(x: FloatArray, p: FloatArray, ctrv: BoolArray) -> FloatArray:
    """Covariances (N, 4, 4) of (x, y, vx, vy): CV's directly, CTRV's through the Jacobian of
    (v cos yaw, v sin yaw)."""
    n = len(x)
    j = np.zeros((n, 4, STATE_DIM))
    j[:, 0, 0] = j[:, 1, 1] = 1.0
    c, s, v = np.cos(x[:, 3]), np.sin(x[:, 3]), x[:, 2]
    j[:, 2, 2] = np.where(ctrv, c, 1.0)
    j[:, 2, 3] = np.where(ctrv, -v * s, 0.0)
    j[:, 3, 2] = np.where(ctrv, s, 0.0)
    j[:, 3, 3] = np.where(ctrv, v * c, 1.0)
    out: FloatArray = j @ p @ j.transpose(0, 2, 1)
    return out


def cv_to_ctrv(
    x: FloatArray, p: FloatArray, moving_speed: float, yaw_rate_std: float
) -> tuple[FloatArray, FloatArray]:
    """One track's CV state (5,) and covariance (5, 5) as CTRV (its label became a vehicle's):
    moving, the yaw is the direction of motion; static, the yaw stays and the velocity is
    projected on it. The yaw rate starts at 0 with std `yaw_rate_std`."""
    vx, vy, yaw = float(x[2]), float(x[3]), float(x[4])
    speed = math.hypot(vx, vy)
    j = np.zeros((STATE_DIM, STATE_DIM))
    j[0, 0] = j[1, 1] = 1.0
    if speed > moving_speed:
        yaw = math.atan2(vy, vx)
        v = speed
        j[2, 2], j[2, 3] = vx / speed, vy / speed
        j[3, 2], j[3, 3] = -vy / speed**2, vx / speed**2
    else:
        c, s = math.cos(yaw), math.sin(yaw)
        v = vx * c + vy * s
        j[2, 2], j[2, 3], j[2, 4] = c, s, -vx * s + vy * c
        j[3, 4] = 1.0
    out = np.array([x[0], x[1], v, yaw, 0.0])
    p_out = j @ p @ j.T
    p_out[4, 4] = yaw_rate_std**2
    return out, symmetric(p_out)


def ctrv_to_cv(x: FloatArray, p: FloatArray) -> tuple[FloatArray, FloatArray]:
    """One track's CTRV state (5,) and covariance (5, 5) as CV (its label is no vehicle's)."""
    v, yaw = float(x[2]), float(x[3])
    c, s = math.cos(yaw), math.sin(yaw)
    j = np.zeros((STATE_DIM, STATE_DIM))
    j[0, 0] = j[1, 1] = 1.0
    j[2, 2], j[2, 3] = c, -v * s
    j[3, 2], j[3, 3] = s, v * c
    j[4, 3] = 1.0
    out = np.array([x[0], x[1], v * c, v * s, yaw])
    return out, symmetric(j @ p @ j.T)


def symmetric(p: FloatArray) -> FloatArray:
    """(p + p^T) / 2 over the last two axes: covariances kept exactly symmetric."""
    sym: FloatArray = 0.5 * (p + np.swapaxes(p, -1, -2))
    return sym
