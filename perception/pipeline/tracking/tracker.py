"""The multi-object tracker after fusion: detections of one sweep in, confirmed tracks out.

Tracks live in a world frame so that parked cars stand still while the ego drives: the local
ENU frame of the ego poses when the caller has them, else the vehicle frame of each sweep.
All tracks are rows of shared arrays (perception.pipeline.tracking.motion) so that a sweep costs
a fixed number of numpy calls, not a number per track. Deterministic: the same calls give the
same tracks (no randomness, no clock of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration import RigidTransform
from perception.config import TrackingConfig
from perception.msgs.types import Detection3D, Track
from perception.pipeline.tracking import modes, motion
from perception.pipeline.tracking.association import (
    assign,
    chi2_2dof_quantile,
    innovation_log_det,
    mahalanobis_sq,
)

__all__ = ["UNKNOWN_LABEL", "Tracker"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: The label of a detection no camera classified (lidar-only): it may match a track of any class.
UNKNOWN_LABEL = "unknown"

_NS = 1e-9
# A new CTRV track's yaw rate is unknown within about 30 degrees per second.
_INITIAL_YAW_RATE_STD = 0.5
# chi-square, 1 degree of freedom, 99%: a moving track's yaw innovation beyond this many
# variances is an outline error (a short or partial box), and the detection's yaw is not used.
_YAW_GATE = 6.635
_IGNORED_VARIANCE = 1e12
# The mean of chi-square with 2 degrees of freedom: the squared Mahalanobis distance of a
# typical 2D innovation.
_TYPICAL_D2 = 2.0


@dataclass(frozen=True)
class _Measurements:
    """One sweep's usable detections in the world frame: centre x, y (M, 2), z, yaw, size
    (M, 3), score clipped to [0, 1], label rows."""

    xy: FloatArray
    z: FloatArray
    yaw: FloatArray
    size: FloatArray
    score: FloatArray
    label: IntArray


class Tracker:
    """Multi-object tracker: `update` once per sweep with that sweep's fused detections.

    Counters: `resets` (times it started over: `reset()`, a gap longer than `max_gap_s`, the
    ego pose gained or lost), `out_of_order` (updates dropped for a stamp not after the last),
    `skipped_detections` (detections with non-finite values, never used). `world_frame` is
    `enu` while updates come with ego poses, else `vehicle`.
    """

    def __init__(self, config: TrackingConfig | None = None) -> None:
        self.config = config if config is not None else TrackingConfig()
        cfg = self.config
        self._gate = chi2_2dof_quantile(cfg.gate_probability)
        self._max_gap_ns = round(cfg.max_gap_s * 1e9)
        self._max_coast_ns = round(cfg.max_coast_s * 1e9)
        # Label -> row of the per-label parameter arrays; row 0 is `unknown`.
        self._label_rows: dict[str, int] = {}
        self._label_names: list[str] = []
        self._table: list[tuple[float, ...]] = []
        self._label_row(UNKNOWN_LABEL)
        self.resets = 0
        self.out_of_order = 0
        self.skipped_detections = 0
        self._next_id = 1
        self._posed = False
        self._last_ns: int | None = None
        self._clear()

    @property
    def world_frame(self) -> str:
        """`enu` when the tracks are in the ego poses' ENU frame, `vehicle` without poses."""
        return "enu" if self._posed else "vehicle"

    @property
    def last_stamp_ns(self) -> int | None:
        """Stamp of the last sweep taken (None before the first and after a reset)."""
        return self._last_ns

    def reset(self) -> None:
        """Drop every track and start over (a sensor clock jump, a lost ego pose). Track ids go
        on counting, so they stay unique over a drive."""
        self.resets += 1
        self._last_ns = None
        self._clear()

    def update(
        self,
        detections: Sequence[Detection3D],
        stamp_ns: int,
        world_from_vehicle: RigidTransform | None,
    ) -> tuple[Track, ...] | None:
        """Take one sweep's detections (vehicle frame; those scoring below the config's
        `min_score` are left out) at `stamp_ns` and return the confirmed tracks, by id.
        `world_from_vehicle` is the ego pose at the stamp (None: track in the vehicle frame). A
        stamp not after the last is dropped: returns None, state unchanged.

        Raises:
            ValueError: `world_from_vehicle` has non-finite values.
        """
        if self._last_ns is not None and stamp_ns <= self._last_ns:
            self.out_of_order += 1
            return None
        posed = world_from_vehicle is not None
        pose = world_from_vehicle if world_from_vehicle is not None else RigidTransform.identity()
        if not np.isfinite(pose.matrix).all():
            raise ValueError("world_from_vehicle: non-finite values")
        if self._last_ns is not None and (
            posed != self._posed or stamp_ns - self._last_ns > self._max_gap_ns
        ):
            self.reset()
        self._posed = posed
        predicted_still = self._still
        if self._last_ns is not None and len(self._ids):
            predicted_still = self._predict((stamp_ns - self._last_ns) * _NS)
        self._last_ns = stamp_ns

        meas = self._measurements(detections, pose)
        rows, cols, inflation = self._associate(meas, stamp_ns)
        self._correct(rows, cols, inflation, meas, stamp_ns, predicted_still=predicted_still)
        unmatched = np.ones(len(meas.xy), bool)
        unmatched[cols] = False
        self._birth(np.flatnonzero(unmatched), meas, stamp_ns)
        self._prune(stamp_ns)
        return self._output(stamp_ns, pose)

    # -- state ------------------------------------------------------------------------------

    def _clear(self) -> None:
        self._x = np.zeros((0, motion.STATE_DIM))
        self._p = np.zeros((0, motion.STATE_DIM, motion.STATE_DIM))
        # The stationary model of each track (perception.pipeline.tracking.modes): its centre,
        # the centre's covariance, and the model's probability.
        self._xs = np.zeros((0, 2))
        self._ps = np.zeros((0, 2, 2))
        self._still = np.zeros(0)
        self._ctrv = np.zeros(0, bool)
        self._label = np.zeros(0, np.int64)  # the track's label: its row of the label tables
        self._z = np.zeros(0)
        self._size = np.zeros((0, 3))
        self._existence = np.zeros(0)
        self._ids = np.zeros(0, np.int64)
        self._born_ns = np.zeros(0, np.int64)
        self._updated_ns = np.zeros(0, np.int64)
        self._hits = np.zeros(0, np.int64)
        self._misses = np.zeros(0, np.int64)
        self._sweeps = np.zeros(0, np.int64)
        self._confirmed = np.zeros(0, bool)
        self._votes: list[dict[str, float]] = []

    def _label_row(self, label: str) -> int:
        """The row of `label` in the per-label tables, added on its first sight."""
        row = self._label_rows.get(label)
        if row is not None:
            return row
        cfg = self.config

        def value(per_label: dict[str, float]) -> float:
            return per_label.get(label, per_label[UNKNOWN_LABEL])

        row = len(self._label_names)
        self._label_rows[label] = row
        self._label_names.append(label)
        self._table.append(
            (
                float(label in cfg.ctrv_labels),
                value(cfg.accel_std_mps2),
                value(cfg.yaw_accel_std_radps2),
                value(cfg.yaw_rate_std_radps),
                value(cfg.position_std_m),
                value(cfg.yaw_std_rad),
                value(cfg.initial_speed_std_mps),
                value(cfg.max_distance_m),
                value(cfg.max_speed_mps),
                float(self._group(label, row)),
                value(cfg.initial_stationary_probability),
            )
        )
        # Columns as arrays, indexed by the tracks' (or detections') label rows.
        table = np.array(self._table)
        self._label_ctrv = table[:, 0] > 0.0
        self._accel_std = table[:, 1]
        self._yaw_accel_std = table[:, 2]
        self._yaw_rate_std = table[:, 3]
        self._position_std = table[:, 4]
        self._yaw_std = table[:, 5]
        self._initial_speed_std = table[:, 6]
        self._max_distance = table[:, 7]
        self._max_speed = table[:, 8]
        self._label_group = table[:, 9]
        self._initial_still = table[:, 10]
        return row

    def _group(self, label: str, row: int) -> int:
        """The number of `label`'s group of compatible labels; a label in no group (`row` in
        the label tables) gets one of its own, -1 - row, never a group's number."""
        for number, group in enumerate(self.config.compatible_labels):
            if label in group:
                return number
        return -1 - row

    # -- steps ------------------------------------------------------------------------------

    def _predict(self, dt: float) -> FloatArray:
        """Both models of every track `dt` seconds on; returns the predicted probabilities of
        the stationary model."""
        cfg = self.config
        switch = modes.switch_probability(cfg.mode_switch_rate_hz, dt)
        self._x, self._p, self._xs, self._ps, predicted_still = modes.mix(
            self._still,
            x=self._x,
            p=self._p,
            xs=self._xs,
            ps=self._ps,
            ctrv=self._ctrv,
            switch=switch,
        )
        self._ps = modes.predict_stationary(self._ps, cfg.stationary_drift_mps, dt)
        row = self._label
        self._x, self._p = motion.predict(
            self._x,
            self._p,
            self._ctrv,
            dt,
            accel_std=self._accel_std[row],
            yaw_accel_std=self._yaw_accel_std[row],
            yaw_rate_std=self._yaw_rate_std[row],
        )
        motion.normalise_heading(self._x, self._p, self._ctrv, self.config.moving_speed_mps)
        return predicted_still

    def _measurements(
        self, detections: Sequence[Detection3D], pose: RigidTransform
    ) -> _Measurements:
        if not detections:
            empty = np.zeros(0)
            return _Measurements(
                np.zeros((0, 2)), empty, empty, np.zeros((0, 3)), empty, np.zeros(0, np.int64)
            )
        values = np.array(
            [(*d.center, d.yaw, *d.size, d.score) for d in detections], dtype=np.float64
        )
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            self.skipped_detections += int((~finite).sum())
        keep = np.flatnonzero(finite & (values[:, 7] >= self.config.min_score))
        values = values[keep]
        labels = np.array([self._label_row(detections[i].label) for i in keep.tolist()], np.int64)
        rotation = pose.rotation
        centers = values[:, :3] @ rotation.T + pose.translation
        # The box's length axis carried into the world frame (the ego may pitch and roll).
        axis = np.stack([np.cos(values[:, 3]), np.sin(values[:, 3]), np.zeros(len(keep))], axis=1)
        axis = axis @ rotation.T
        yaw = np.arctan2(axis[:, 1], axis[:, 0])
        score = np.clip(values[:, 7], 0.0, 1.0)
        return _Measurements(centers[:, :2], centers[:, 2], yaw, values[:, 4:7], score, labels)

    def _associate(
        self, meas: _Measurements, stamp_ns: int
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """Matched track rows and detection columns, and the factor each track's covariance
        must grow by before its update (1 inside the gate)."""
        xy, labels = meas.xy, meas.label
        n, m = len(self._ids), len(xy)
        if n == 0 or m == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        row = self._label
        d2 = mahalanobis_sq(self._x[:, :2], self._p[:, :2, :2], xy, self._position_std[labels] ** 2)
        distance = np.hypot(
            xy[None, :, 0] - self._x[:, 0, None], xy[None, :, 1] - self._x[:, 1, None]
        )
        since = (stamp_ns - self._updated_ns) * _NS
        cap = self._max_distance[row] + self._max_speed[row] * since
        # An unknown detection may feed a track of any class (lidar-only while the camera is
        # out), and an unknown track may take a class; other classes only if compatible.
        group = self._label_group
        same = (
            (group[row][:, None] == group[labels][None, :])
            | (labels == 0)[None, :]
            | (row == 0)[:, None]
        )
        feasible = same & (d2 <= self._gate) & (distance <= cap[:, None])
        # The cost is the pair's negative log-likelihood, not d2 alone: d2 favours the least
        # certain track, so a new track (its speed unknown, its gate wide) would take the
        # detection of a confirmed track that predicts it well, which then coasts off.
        cost = d2 + innovation_log_det(self._p[:, :2, :2], self._position_std[labels] ** 2)
        rows, cols = assign(cost, feasible)
        inflation = np.ones(rows.size)
        # A track that found nothing in its gate may be manoeuvring (braking hard, swerving)
        # beyond its process noise: it takes a detection left over within `max_distance_m`
        # of its prediction, with its covariance grown until that detection lies at a typical
        # distance (the mean of chi-square with 2 degrees of freedom), so that the filter
        # follows the manoeuvre instead of losing the object.
        free = np.ones((n, m), bool)
        free[rows, :] = False
        free[:, cols] = False
        near = free & same & (distance <= self._max_distance[row][:, None])
        if near.any():
            rescue_rows, rescue_cols = assign(distance, near)
            grow = np.maximum(1.0, d2[rescue_rows, rescue_cols] / _TYPICAL_D2)
            rows = np.concatenate([rows, rescue_rows])
            cols = np.concatenate([cols, rescue_cols])
            inflation = np.concatenate([inflation, grow])
        return rows, cols, inflation

    def _correct(
        self,
        rows: IntArray,
        cols: IntArray,
        inflation: FloatArray,
        meas: _Measurements,
        stamp_ns: int,
        *,
        predicted_still: FloatArray,
    ) -> None:
        cfg = self.config
        missed = np.ones(len(self._ids), bool)
        missed[rows] = False
        self._misses[missed] += 1
        self._existence[missed] *= cfg.existence_miss_decay
        self._sweeps += 1
        self._still = predicted_still.copy()  # a missed track learns nothing of its mode
        if rows.size == 0:
            return
        ctrv = self._ctrv[rows]
        noise = meas.label[cols]  # measurement noise is the detection's: lidar-only is rougher
        # The mode probabilities weigh how well each model predicted the centre, before a
        # rescue grows the motion model's covariance.
        r_xy = (self._position_std[noise] ** 2)[:, None, None] * np.eye(2)
        z_xy = meas.xy[cols]
        likely_moving = modes.xy_likelihood(
            z_xy - self._x[rows, :2], self._p[rows, :2, :2] + r_xy, cfg.outlier_density_per_m2
        )
        xs, ps, innovation, s_still = modes.update_stationary(
            self._xs[rows], self._ps[rows], z_xy, r_xy
        )
        likely_still = modes.xy_likelihood(innovation, s_still, cfg.outlier_density_per_m2)
        self._still[rows] = modes.mode_probability(
            predicted_still[rows], likely_still, likely_moving
        )
        # A detection far outside the stationary model's gate is not its object standing still:
        # the model keeps its centre (and is restarted from the motion model's by the mixing
        # while the motion model leads).
        d2_still = modes.paired_mahalanobis_sq(innovation, s_still)
        inside = d2_still <= self._gate
        self._xs[rows] = np.where(inside[:, None], xs, self._xs[rows])
        self._ps[rows] = np.where(inside[:, None, None], ps, self._ps[rows])
        x, p = self._x[rows], self._p[rows] * inflation[:, None, None]
        reference = motion.heading(x, ctrv, cfg.moving_speed_mps)
        measured_yaw = motion.align_yaw(meas.yaw[cols], reference)
        k = rows.size
        r = np.zeros((k, 3, 3))
        r[:, 0, 0] = r[:, 1, 1] = self._position_std[noise] ** 2
        # A slow track's centre is held against outliers (Huber-like): a detection beyond a
        # typical distance counts as a noisier one. A parked car's detected centre jumps by
        # decimetres as the outline the sensor sees changes, which would otherwise read as a
        # speed; a moving track keeps full weight, so that it follows braking and turns.
        slow = np.hypot(*motion.velocity(x, ctrv).T) < cfg.moving_speed_mps
        if slow.any():
            offset = z_xy - x[:, :2]
            d2 = modes.paired_mahalanobis_sq(offset, p[:, :2, :2] + r[:, :2, :2])
            scale = np.where(slow, np.maximum(1.0, d2 / _TYPICAL_D2), 1.0)
            r[:, 0, 0] *= scale
            r[:, 1, 1] *= scale
        r[:, 2, 2] = self._yaw_std[noise] ** 2
        # A moving track knows its heading from its motion: a yaw far off it is a bad outline.
        yaw_index = np.where(ctrv, motion.CTRV_MEASURED[2], motion.CV_MEASURED[2])
        predicted_yaw = x[np.arange(k), yaw_index]
        yaw_var = p[np.arange(k), yaw_index, yaw_index] + r[:, 2, 2]
        speed = np.hypot(*motion.velocity(x, ctrv).T)
        innovation = motion.wrap_angle(measured_yaw - predicted_yaw)
        outline = (speed > cfg.moving_speed_mps) & (innovation**2 > _YAW_GATE * yaw_var)
        measured_yaw = np.where(outline, predicted_yaw, measured_yaw)
        r[outline, 2, 2] = _IGNORED_VARIANCE
        z = np.column_stack([meas.xy[cols], measured_yaw])
        x, p = motion.update(x, p, ctrv, z, r)
        motion.normalise_heading(x, p, ctrv, cfg.moving_speed_mps)
        self._x[rows], self._p[rows] = x, p

        alpha = cfg.size_smoothing
        self._z[rows] += alpha * (meas.z[cols] - self._z[rows])
        self._size[rows] += alpha * (meas.size[cols] - self._size[rows])
        s = meas.score[cols]
        self._existence[rows] += (1.0 - self._existence[rows]) * s * cfg.existence_hit_gain
        self._hits[rows] += 1
        self._misses[rows] = 0
        self._updated_ns[rows] = stamp_ns
        for i, j, weight in zip(rows.tolist(), cols.tolist(), s.tolist(), strict=True):
            self._vote(i, self._label_names[meas.label[j]], weight)

    def _vote(self, i: int, label: str, weight: float) -> None:
        """Count a detection's class for track row `i` and give the track the class with the
        most score-weighted votes (`unknown` only while no real class voted)."""
        votes = self._votes[i]
        votes[label] = votes.get(label, 0.0) + weight
        current = self._label_names[self._label[i]]
        if label in (current, UNKNOWN_LABEL):
            return  # more votes for the winner, or none that count: the class stands
        real = {k: v for k, v in votes.items() if k != UNKNOWN_LABEL}
        # Ties go to the class that voted first (dicts keep insertion order): deterministic.
        best = max(real, key=real.__getitem__) if real else UNKNOWN_LABEL
        row = self._label_row(best)
        if row == self._label[i]:
            return
        self._label[i] = row
        ctrv = bool(self._label_ctrv[row])
        if ctrv != self._ctrv[i]:
            if ctrv:
                self._x[i], self._p[i] = motion.cv_to_ctrv(
                    self._x[i], self._p[i], self.config.moving_speed_mps, _INITIAL_YAW_RATE_STD
                )
            else:
                self._x[i], self._p[i] = motion.ctrv_to_cv(self._x[i], self._p[i])
            self._ctrv[i] = ctrv

    def _birth(
        self,
        new: IntArray,
        meas: _Measurements,
        stamp_ns: int,
    ) -> None:
        k = new.size
        if k == 0:
            return
        row = meas.label[new]
        yaw = meas.yaw[new]
        ctrv = self._label_ctrv[row]
        pos_var = self._position_std[row] ** 2
        speed_var = self._initial_speed_std[row] ** 2
        x = np.zeros((k, motion.STATE_DIM))
        x[:, :2] = meas.xy[new]
        # CTRV: x, y, v, yaw, yaw rate; CV: x, y, vx, vy, yaw. Both start at rest.
        x[:, 3] = np.where(ctrv, yaw, 0.0)
        x[:, 4] = np.where(ctrv, 0.0, yaw)
        p = np.zeros((k, motion.STATE_DIM, motion.STATE_DIM))
        p[:, 0, 0] = p[:, 1, 1] = pos_var
        p[:, 2, 2] = speed_var
        p[:, 3, 3] = np.where(ctrv, self._yaw_std[row] ** 2, speed_var)
        p[:, 4, 4] = np.where(ctrv, _INITIAL_YAW_RATE_STD**2, self._yaw_std[row] ** 2)
        ps = pos_var[:, None, None] * np.eye(2)
        ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
        self._next_id += k
        s = meas.score[new]
        stamp = np.full(k, stamp_ns, np.int64)
        self._x = np.concatenate([self._x, x])
        self._p = np.concatenate([self._p, p])
        self._xs = np.concatenate([self._xs, meas.xy[new]])
        self._ps = np.concatenate([self._ps, ps])
        self._still = np.concatenate([self._still, self._initial_still[row]])
        self._ctrv = np.concatenate([self._ctrv, ctrv])
        self._label = np.concatenate([self._label, row])
        self._z = np.concatenate([self._z, meas.z[new]])
        self._size = np.concatenate([self._size, meas.size[new]])
        self._existence = np.concatenate([self._existence, s * self.config.existence_hit_gain])
        self._ids = np.concatenate([self._ids, ids])
        self._born_ns = np.concatenate([self._born_ns, stamp])
        self._updated_ns = np.concatenate([self._updated_ns, stamp])
        self._hits = np.concatenate([self._hits, np.ones(k, np.int64)])
        self._misses = np.concatenate([self._misses, np.zeros(k, np.int64)])
        self._sweeps = np.concatenate([self._sweeps, np.ones(k, np.int64)])
        self._confirmed = np.concatenate([self._confirmed, np.zeros(k, bool)])
        names = self._label_names
        self._votes.extend({names[r]: w} for r, w in zip(row.tolist(), s.tolist(), strict=True))

    def _prune(self, stamp_ns: int) -> None:
        cfg = self.config
        self._confirmed |= self._hits >= cfg.confirm_hits
        stale = self._confirmed & (stamp_ns - self._updated_ns > self._max_coast_ns)
        # A tentative track must reach confirm_hits within its first confirm_window sweeps.
        hopeless = ~self._confirmed & (
            self._hits + (cfg.confirm_window - self._sweeps) < cfg.confirm_hits
        )
        drop = stale | hopeless
        if not drop.any():
            return
        keep = np.flatnonzero(~drop)
        for name in (
            "_x",
            "_p",
            "_xs",
            "_ps",
            "_still",
            "_ctrv",
            "_label",
            "_z",
            "_size",
            "_existence",
            "_ids",
            "_born_ns",
            "_updated_ns",
            "_hits",
            "_misses",
            "_sweeps",
            "_confirmed",
        ):
            setattr(self, name, getattr(self, name)[keep])
        self._votes = [self._votes[i] for i in keep.tolist()]

    def _output(self, stamp_ns: int, pose: RigidTransform) -> tuple[Track, ...]:
        shown = np.flatnonzero(self._confirmed)
        if shown.size == 0:
            return ()
        x, ctrv = self._x[shown], self._ctrv[shown]
        yaw_world = motion.heading(x, ctrv, self.config.moving_speed_mps)
        velocity_world, covariance = modes.combine(self._still[shown], x, self._p[shown], ctrv)
        center_world = np.column_stack([x[:, :2], self._z[shown]])
        # vehicle_from_world applied as row vectors: (p - t) R is R^T (p - t).
        rotation = pose.rotation
        center = (center_world - pose.translation) @ rotation
        velocity = np.column_stack([velocity_world, np.zeros(shown.size)]) @ rotation
        axis = np.stack([np.cos(yaw_world), np.sin(yaw_world), np.zeros(shown.size)], axis=1)
        axis = axis @ rotation
        yaw = np.arctan2(axis[:, 1], axis[:, 0])
        yaw_rate = np.where(ctrv, x[:, 4], 0.0)
        names = self._label_names
        return tuple(
            Track(
                track_id=track_id,
                label=names[label],
                score=score,
                center=(c[0], c[1], c[2]),
                size=(sz[0], sz[1], sz[2]),
                yaw=y,
                velocity_mps=(v[0], v[1]),
                center_world=(cw[0], cw[1], cw[2]),
                yaw_world=yw,
                velocity_world_mps=(vw[0], vw[1]),
                yaw_rate=w,
                covariance_world=tuple(cov),
                age_ns=age,
                hits=hits,
                misses=misses,
            )
            for track_id, label, score, c, sz, y, v, cw, yw, vw, w, cov, age, hits, misses in zip(
                self._ids[shown].tolist(),
                self._label[shown].tolist(),
                self._existence[shown].tolist(),
                center.tolist(),
                self._size[shown].tolist(),
                yaw.tolist(),
                velocity.tolist(),
                center_world.tolist(),
                yaw_world.tolist(),
                velocity_world.tolist(),
                yaw_rate.tolist(),
                covariance.reshape(shown.size, 16).tolist(),
                (stamp_ns - self._born_ns[shown]).tolist(),
                self._hits[shown].tolist(),
                self._misses[shown].tolist(),
                strict=True,
            )
        )
