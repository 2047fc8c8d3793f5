"""The calibration monitor's evidence: each frame's points as pixels with their change per step
of a correction, and the joint histograms (lidar intensity level x image grey level) of
candidate corrections, one frame at a time or over a whole window of frames at once.

A search scores hundreds of candidates over the same frames. Scored frame by frame, each score
costs a dozen numpy calls per frame, whose fixed cost outweighs the work on a few thousand
points; `PooledEvidence` lays the window's frames end to end (their pixels shifted to one
centre, their grey bands stacked in one image) so that one candidate over the whole window is
one projection, one OpenCV lookup and one count.

Counted hard, a point whose grey value crosses a level's edge moves its whole vote, so a
window's MI is rugged at the scale of a fraction of a pixel: a search that finds higher MI lands
on its bumps. `PooledEvidence.histogram(..., split=True)` splits each point's vote between the
two grey levels around its grey value, in proportion (linear binning): a candidate that moves
the points by part of a pixel moves part of their votes, and the score is smooth enough for a
joint search to climb.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["FrameEvidence", "PooledEvidence", "histograms"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class FrameEvidence:
    """One frame's evidence, kept so that candidates around a moved centre can be scored
    again without the frame: the points' pixels at the extrinsic ``origin`` (six values, rad
    and m, a correction) and their change per step along each axis (first order: a step moves
    a pixel by a few, the second-order term stays below 0.3 px within the reach), their
    point levels (the intensity level, in a block of its own for a class of points such as
    the ground's), the normalised grey image (uint8, only its rows the points can reach) from
    ``row0``, and the fold it belongs to."""

    uv: npt.NDArray[np.float32]
    jacobian: npt.NDArray[np.float32]
    level: npt.NDArray[np.int64]
    grey: npt.NDArray[np.uint8]
    row0: int
    width: int
    origin: FloatArray
    fold: int


def histograms(
    frame: FrameEvidence, offsets: npt.ArrayLike, bins: int, rows: int | None = None
) -> npt.NDArray[np.int32]:
    """The frame's joint histogram (``rows`` point levels, ``bins`` by default, x ``bins``
    grey levels) for each candidate (K x rows * bins): ``offsets`` K x 6, in steps from the
    frame's origin."""
    rows = bins if rows is None else rows
    steps = np.asarray(offsets, dtype=np.float32).reshape(-1, 6)
    k_count = len(steps)
    # Every candidate's pixels at once (K x N x 2), to first order in its offset.
    n = len(frame.uv)
    uv = frame.uv[None] + (steps @ frame.jacobian.reshape(6, n * 2)).reshape(-1, n, 2)
    uv[..., 1] -= frame.row0
    height = frame.grey.shape[0]
    inside = (
        (uv[..., 0] >= 0) & (uv[..., 0] < frame.width) & (uv[..., 1] >= 0) & (uv[..., 1] < height)
    )
    # OpenCV's bilinear lookup of every candidate's pixels (a K x N "image" of coordinates).
    g = cv2.remap(
        frame.grey, uv[..., 0], uv[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    k = np.arange(k_count)[:, None]
    cell = (k * rows + frame.level[None]) * bins + _grey_levels(g, bins)
    counts = np.bincount(cell[inside], minlength=k_count * rows * bins)
    out: npt.NDArray[np.int32] = counts.reshape(k_count, -1).astype(np.int32)
    return out


def _grey_levels(grey: npt.ArrayLike, bins: int) -> npt.NDArray[np.int64]:
    """Grey values 0-255 (OpenCV's lookup) as ``bins`` levels (the joint histogram's grey
    axis)."""
    levels: npt.NDArray[np.int64] = (np.asarray(grey, dtype=np.int64) * bins) >> 8
    return levels


#: A point's vote when it is split between two grey levels: an integer, so that the split
#: counts stay exact (a power of two well above the 256 grey values' resolution).
SPLIT_VOTE = 512


@functools.cache
def _split_matrix(bins: int) -> npt.NDArray[np.int64]:
    """256 x ``bins``: each grey value's vote (`SPLIT_VOTE` in all) split between the two
    levels whose centres lie on either side of it, in proportion to its distance from each
    (all of it to the first or last level beyond their centres). Built once per ``bins``
    (a search scores hundreds of candidates with it), read-only."""
    position = (np.arange(256) + 0.5) * bins / 256.0 - 0.5
    low = np.clip(np.floor(position), 0, bins - 1).astype(np.int64)
    high = np.minimum(low + 1, bins - 1)
    upper = np.rint(np.clip(position - low, 0.0, 1.0) * SPLIT_VOTE).astype(np.int64)
    upper[high == low] = 0
    out = np.zeros((256, bins), np.int64)
    rows = np.arange(256)
    out[rows, low] = SPLIT_VOTE - upper
    out[rows, high] += upper
    out.setflags(write=False)
    return out


#: OpenCV's remap takes images and maps of fewer than 2^15 - 1 rows and columns.
_REMAP_LIMIT = 32_000
#: The pooled points' map for OpenCV: rows of this many.
_MAP_COLUMNS = 4096


class PooledEvidence:
    """A window's frames laid end to end for scoring one candidate over all of them at once
    (see the module docstring): ``shifts`` (one per frame, six values in steps) moves each
    frame's pixels from its origin to the common centre the candidates are offsets from. The
    counts are `histograms`' summed over the frames, up to float32 rounding of the pixels
    (a thousandth of a pixel); with ``split=True`` each point's vote is split between grey
    levels (`SPLIT_VOTE` to a point, see the module docstring)."""

    def __init__(
        self,
        frames: Sequence[FrameEvidence],
        shifts: npt.ArrayLike,
        bins: int,
        rows: int | None = None,
    ) -> None:
        self.bins = bins
        self.rows = bins if rows is None else rows
        shift = np.asarray(shifts, dtype=np.float32)
        if shift.shape != (len(frames), 6):
            raise ValueError(f"shifts: one of 6 values per frame expected, got {shift.shape}")
        # Frames in groups whose stacked bands stay within OpenCV's limit.
        self._groups: list[_Group] = []
        group: list[tuple[FrameEvidence, npt.NDArray[np.float32]]] = []
        stacked = 0
        for frame, s in zip(frames, shift, strict=True):
            if group and stacked + frame.grey.shape[0] + 1 > _REMAP_LIMIT:
                self._groups.append(_Group(group, bins, self.rows))
                group, stacked = [], 0
            group.append((frame, s))
            stacked += frame.grey.shape[0] + 1
        if group:
            self._groups.append(_Group(group, bins, self.rows))

    def __len__(self) -> int:
        return sum(g.points for g in self._groups)

    def histogram(self, offset: npt.ArrayLike, *, split: bool = False) -> npt.NDArray[np.int64]:
        """The joint histogram (rows x bins) of one candidate over every frame: ``offset`` six
        values in steps from the common centre; ``split``: each point's vote split between
        the grey levels around its grey value."""
        step = np.asarray(offset, dtype=np.float32).reshape(1, 6)
        if not split:
            out = np.zeros(self.rows * self.bins, np.int64)
            for group in self._groups:
                out += group.histogram(step)
            return out
        # Counted at full grey resolution, then split by one product for the whole window.
        fine = np.zeros(self.rows * 256, np.int64)
        for group in self._groups:
            fine += group.histogram(step, fine=True)
        split_counts: npt.NDArray[np.int64] = (
            fine.reshape(self.rows, 256) @ _split_matrix(self.bins)
        ).ravel()
        return split_counts


class _Group:
    """Frames of a `PooledEvidence` whose grey bands fit one OpenCV image: their points'
    pixels at the common centre (float32, v in the stacked image), padded to whole rows of
    `_MAP_COLUMNS` with points outside every band."""

    def __init__(
        self,
        frames: Sequence[tuple[FrameEvidence, npt.NDArray[np.float32]]],
        bins: int,
        rows: int,
    ) -> None:
        self.bins = bins
        self.rows = rows
        width = max(f.grey.shape[1] for f, _ in frames)
        uvs, jacobians, levels, lows, highs, widths, bands = [], [], [], [], [], [], []
        top = 0
        for frame, s in frames:
            n = len(frame.uv)
            jac = frame.jacobian.reshape(6, n * 2)
            uv = frame.uv + (s[None] @ jac).reshape(n, 2)
            rows = frame.grey.shape[0]
            # Each band followed by a copy of its last row and widened by copies of its last
            # column: the bilinear lookup at a band's edge reads what BORDER_REPLICATE would.
            bands.append(
                np.pad(frame.grey, ((0, 1), (0, width - frame.grey.shape[1])), mode="edge")
            )
            uv[:, 1] += top - frame.row0
            uvs.append(uv)
            jacobians.append(jac.reshape(6, n, 2))
            levels.append(frame.level)
            lows.append(np.full(n, top, np.float32))
            highs.append(np.full(n, top + rows, np.float32))
            widths.append(np.full(n, frame.width, np.float32))
            top += rows + 1
        self.points = sum(len(u) for u in uvs)
        pad = -self.points % _MAP_COLUMNS
        # Padding points sit at u = -1: outside, never counted.
        uvs.append(np.full((pad, 2), -1.0, np.float32))
        jacobians.append(np.zeros((6, pad, 2), np.float32))
        levels.append(np.zeros(pad, np.int64))
        for parts in (lows, highs, widths):
            parts.append(np.zeros(pad, np.float32))
        self.size = self.points + pad
        uv = np.concatenate(uvs)
        jac = np.concatenate(jacobians, axis=1)
        # u and v apart and contiguous (OpenCV's two maps), the Jacobian likewise: one product
        # gives every point's change of u, then of v.
        self.u = np.ascontiguousarray(uv[:, 0])
        self.v = np.ascontiguousarray(uv[:, 1])
        self.jacobian = np.ascontiguousarray(np.concatenate([jac[..., 0], jac[..., 1]], axis=1))
        level = np.concatenate(levels)
        # Each point's row of the joint histogram, counted in grey levels or in grey values.
        self.level_row = level * bins
        self.level_fine = level * 256
        self.low = np.concatenate(lows)
        self.high = np.concatenate(highs)
        self.width = np.concatenate(widths)
        self.grey = np.concatenate(bands)

    def histogram(
        self, step: npt.NDArray[np.float32], *, fine: bool = False
    ) -> npt.NDArray[np.int64]:
        """One candidate's joint histogram over the group's frames: rows x bins, or with
        ``fine`` rows x 256 (point level x grey value)."""
        bins = self.bins
        moved = (step @ self.jacobian)[0]
        u = self.u + moved[: self.size]
        v = self.v + moved[self.size :]
        inside = (u >= 0) & (u < self.width) & (v >= self.low) & (v < self.high)
        shape = (-1, _MAP_COLUMNS)
        g = cv2.remap(
            self.grey,
            u.reshape(shape),
            v.reshape(shape),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if fine:
            counts: npt.NDArray[np.int64] = np.bincount(
                (self.level_fine + g.ravel())[inside], minlength=self.rows * 256
            )
            return counts
        cell = self.level_row + _grey_levels(g.ravel(), bins)
        out: npt.NDArray[np.int64] = np.bincount(cell[inside], minlength=self.rows * bins)
        return out
