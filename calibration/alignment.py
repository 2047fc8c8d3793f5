"""Camera-lidar alignment evidence that accumulates over many frames: depth edges against image
edges (Levinson and Thrun, "Automatic Online Calibration of Cameras and Lasers", RSS 2013).

Where the lidar's range jumps between neighbouring returns of one beam (the near side of an
object's silhouette), the camera usually sees an intensity edge. With the right extrinsic those
points project onto image edges; a rotation or a shift moves them off. One frame holds too few
such points to rank small errors (foliage and texture edges add noise), so the evidence is
summed over a window of frames: `EdgeAlignment.add` takes a frame, `scores` returns the
accumulated score of each candidate correction of the extrinsic.

- Image side (`edge_map`): the grey image's gradient magnitude, its strongest
  `EDGE_FRACTION` of pixels taken as edges, and each pixel scored exp(-d / `EDGE_SCALE_PX`) by
  its distance d to the nearest edge (an inverse distance transform, so that the score varies
  smoothly with small perturbations instead of only when a point lands exactly on an edge).
- Lidar side (`depth_edges`): the points split into beams by elevation, each beam ordered by
  azimuth; a point's weight is how much nearer it is than its farther neighbour (the
  foreground side of a depth step), square-rooted so that one big step does not dominate;
  points with a step below `MIN_STEP_M` are dropped.
- Score of one extrinsic: the weighted mean of the edge map at the projected points,
  sum(w * E(uv)) / sum(w) over all frames' visible edge points (0-1, larger is better aligned).

Measured (benchmarks/calibration_scores.py, benchmarks/RESULTS.md): as it stands this score is
biased. On the synthetic renders it peaks 0.5-1 degree off the true extrinsic, where more edge
points land in textured parts of the image, and over the eight KITTI object frames a 1-degree
pitch scores above the truth. Mutual information (calibration.check) ranks the truth first in
both; it is the score to build the calibration monitor on. A normalisation of the edge map by
its local texture is the next thing to try before this one is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel
from calibration.errors import CalibrationError
from calibration.transforms import RigidTransform

__all__ = ["DepthEdges", "EdgeAlignment", "depth_edges", "edge_map"]

FloatArray = npt.NDArray[np.float64]

#: Fraction of an image's pixels, by gradient magnitude, taken as edges.
EDGE_FRACTION = 0.08
#: Decay of the edge map with the distance to the nearest edge (pixels).
EDGE_SCALE_PX = 3.0
#: Beams are told apart by a gap in elevation larger than this (degrees).
BEAM_GAP_DEG = 0.12
#: Neighbours along a beam further apart in azimuth than this are not compared (degrees).
MAX_AZIMUTH_GAP_DEG = 1.0
#: Depth steps smaller than this are not edges (metres).
MIN_STEP_M = 0.5


def edge_map(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The image's edge map (H x W float32, 0-1): 1 on its strongest edges, falling off as
    exp(-d / EDGE_SCALE_PX) with the distance d (pixels) to the nearest one."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    strongest = float(magnitude.max())
    if strongest <= 0.0:
        return np.zeros(grey.shape, np.float32)  # a flat image has no edges
    # The strongest EDGE_FRACTION of pixels, but never gradients a tenth of the strongest (an
    # image with few edges would otherwise take its flat areas' noise for edges).
    threshold = max(float(np.quantile(magnitude, 1.0 - EDGE_FRACTION)), 0.1 * strongest)
    not_edge = (magnitude < threshold).astype(np.uint8)
    distance = cv2.distanceTransform(not_edge, cv2.DIST_L2, 3)
    out: npt.NDArray[np.float32] = np.exp(-distance / EDGE_SCALE_PX).astype(np.float32)
    return out


@dataclass(frozen=True)
class DepthEdges:
    """The foreground points of a sweep's depth steps: `points` (K x 3, the sweep's frame,
    metres) and their `weights` (K,, > 0)."""

    points: FloatArray
    weights: FloatArray


def depth_edges(points: npt.ArrayLike) -> DepthEdges:
    """The points of a sweep (N x 3+, its own frame, metres) on the near side of a depth step
    along their beam, with the square root of the step as weight (see the module docstring).

    Raises CalibrationError for points that are not N x 3 or more."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise CalibrationError(f"depth edges: points must be N x 3 or more, got {pts.shape}")
    xyz = pts[:, :3]
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    ranges = np.linalg.norm(xyz, axis=1)
    xyz, ranges = xyz[ranges > 0.5], ranges[ranges > 0.5]
    if len(xyz) < 3:
        return DepthEdges(np.zeros((0, 3)), np.zeros(0))
    elevation = np.degrees(np.arcsin(xyz[:, 2] / ranges))
    azimuth = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    # Beams: sorted by elevation, a new beam wherever the elevation jumps.
    order = np.argsort(elevation, kind="stable")
    beam_sorted = np.concatenate([[0], np.cumsum(np.diff(elevation[order]) > BEAM_GAP_DEG)])
    beam = np.empty(len(xyz), np.int64)
    beam[order] = beam_sorted
    # Along each beam by azimuth.
    order = np.lexsort((azimuth, beam))
    b, az, r = beam[order], azimuth[order], ranges[order]
    same = (b[1:] == b[:-1]) & (np.abs(az[1:] - az[:-1]) <= MAX_AZIMUTH_GAP_DEG)
    step = np.zeros(len(r))
    # How much nearer a point is than its neighbour before and after it (0 where none).
    before = np.where(same, r[:-1] - r[1:], 0.0)
    after = np.where(same, r[1:] - r[:-1], 0.0)
    step[1:] = np.maximum(step[1:], before)
    step[:-1] = np.maximum(step[:-1], after)
    edge = step >= MIN_STEP_M
    return DepthEdges(xyz[order][edge], np.sqrt(step[edge]))


@dataclass
class EdgeAlignment:
    """Edge-alignment evidence of candidate corrections of a camera's extrinsic, summed over
    the frames added. A candidate is a `perturbation` of the lidar frame: the extrinsic it
    scores is `camera_from_lidar @ perturbation`, so the evidence stays meaningful when the
    rig (or the camera) changes between frames. The identity scores the extrinsic as it is."""

    perturbations: Sequence[RigidTransform]
    _sums: FloatArray = field(init=False)
    _weights: FloatArray = field(init=False)
    frames: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not self.perturbations:
            raise CalibrationError("edge alignment: no candidate extrinsics to score")
        self._sums = np.zeros(len(self.perturbations))
        self._weights = np.zeros(len(self.perturbations))

    def add(
        self,
        edges: DepthEdges,
        image: npt.NDArray[np.uint8],
        camera: CameraModel,
        camera_from_lidar: RigidTransform,
    ) -> None:
        """Add one frame: its depth edges (lidar frame), its camera image (the camera's size),
        the camera and its extrinsic. Raises CalibrationError if the image size differs from
        the camera's."""
        if image.shape[0] != camera.height or image.shape[1] != camera.width:
            raise CalibrationError(
                f"{camera.context}: image is {image.shape[1]}x{image.shape[0]}, camera expects "
                f"{camera.width}x{camera.height}"
            )
        self.frames += 1
        if len(edges.points) == 0:
            return
        emap = edge_map(image)
        for i, perturbation in enumerate(self.perturbations):
            in_cam = (camera_from_lidar @ perturbation).apply(edges.points)
            _, _, visible = camera.visible(in_cam)
            if not visible.any():
                continue
            uv, _ = camera.project(in_cam[visible])
            u = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, camera.width - 1)
            v = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, camera.height - 1)
            w = edges.weights[visible]
            self._sums[i] += float(np.dot(w, emap[v, u]))
            self._weights[i] += float(w.sum())

    def scores(self) -> FloatArray:
        """Each candidate's accumulated score (0-1; 0 before any visible edge point)."""
        out: FloatArray = np.divide(
            self._sums, self._weights, out=np.zeros_like(self._sums), where=self._weights > 0
        )
        return out
