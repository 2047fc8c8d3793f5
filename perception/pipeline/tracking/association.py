"""Track-to-detection association: gated Mahalanobis costs and an optimal assignment.

The assignment is the Hungarian method (scipy.optimize.linear_sum_assignment) on the costs of
the pairs inside the gate; the others cost more than any matching could save, so as many tracks
as possible find a detection, and of those matchings the least costly wins.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

__all__ = ["assign", "chi2_2dof_quantile", "innovation_log_det", "mahalanobis_sq"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def chi2_2dof_quantile(probability: float) -> float:
    """The chi-square quantile with 2 degrees of freedom: the squared Mahalanobis distance that
    holds `probability` of a 2D Gaussian (0.99 -> 9.21)."""
    return float(-2.0 * np.log1p(-probability))


def mahalanobis_sq(
    means: FloatArray, covariances: FloatArray, points: FloatArray, point_variances: FloatArray
) -> FloatArray:
    """Squared Mahalanobis distances (N, M) of M 2D `points` (M, 2) from N Gaussians with
    `means` (N, 2) and `covariances` (N, 2, 2), each point with its own isotropic variance
    (M,) added (a measurement's noise)."""
    a = covariances[:, 0, 0, None] + point_variances[None, :]
    b = covariances[:, 0, 1, None]
    c = covariances[:, 1, 1, None] + point_variances[None, :]
    dx = points[None, :, 0] - means[:, 0, None]
    dy = points[None, :, 1] - means[:, 1, None]
    # The 2 x 2 inverse written out: one pass over (N, M) instead of a batched solve.
    d2: FloatArray = (c * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / (a * c - b * b)
    return d2


def innovation_log_det(covariances: FloatArray, point_variances: FloatArray) -> FloatArray:
    """ln det S (N, M) of the innovation covariances S = covariance + variance I of N tracks
    and M points (the arguments of `mahalanobis_sq`)."""
    a = covariances[:, 0, 0, None] + point_variances[None, :]
    b = covariances[:, 0, 1, None]
    c = covariances[:, 1, 1, None] + point_variances[None, :]
    out: FloatArray = np.log(a * c - b * b)
    return out


def assign(cost: FloatArray, feasible: BoolArray) -> tuple[IntArray, IntArray]:
    """The optimal matching of rows to columns over the `feasible` pairs of `cost` (R, C): as
    many pairs as possible, and of those matchings the one of least total cost (the Hungarian
    method: scipy's linear_sum_assignment). Returns the matched rows (ascending) and their
    columns."""
    n_rows, n_cols = feasible.shape
    if n_rows == 0 or n_cols == 0 or not feasible.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # An infeasible pair costs more than any set of feasible ones could save, so the solver
    # takes as many feasible pairs as it can, and the least costly such matching.
    big = 2.0 * float(np.abs(cost[feasible]).sum()) + 1.0
    rows, cols = linear_sum_assignment(np.where(feasible, cost, big))
    keep = feasible[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)
