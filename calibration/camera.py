"""Camera models: pinhole with plumb-bob (Brown-Conrady) distortion, and equidistant (fisheye).

Camera frame: x right, y down, z forward along the optical axis (metres). Pixels: u right,
v down, as OpenCV (the centre of the top-left pixel is (0, 0)). `depth` is the z coordinate in
the camera frame (metres), not the range.

Both models follow OpenCV (`cv2.projectPoints`, `cv2.fisheye.projectPoints`; the plumb-bob one
computed in numpy, within 1e-12 px of OpenCV's, tested), so the undistortion maps and the
projections agree with each other.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError, shown

__all__ = ["CAMERA_MODELS", "CameraModel", "FisheyeCamera", "PinholeCamera", "camera_from_dict"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Points closer than this to the camera plane are "behind": their projection is meaningless.
MIN_DEPTH_M = 1e-6
#: The widest and tallest image a camera may have (pixels): OpenCV sizes are 32-bit, and the
#: undistortion maps of a larger image would not fit in memory anyway.
MAX_IMAGE_SIDE_PX = 65_536
#: Focal lengths a camera may have, as multiples of its image's longer side (pixels): a fisheye
#: that sees all around has about 0.16, the narrowest automotive telephoto about 6.
MIN_FOCAL_PER_SIDE, MAX_FOCAL_PER_SIDE = 0.01, 100.0
#: The most a lens's radial distortion may stretch the image at its corners (distorted over
#: undistorted radius): pincushion lenses stretch by a few percent, barrel and fisheye shrink.
MAX_CORNER_STRETCH = 10.0
# The normalised radii (tan of the off-axis angle) the radial distortion is sampled at.
_RADII = np.linspace(0.0, 20.0, 200_001)
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
# OpenCV 4 (JetPack's among them) takes the criteria in a call of its own; OpenCV 5 in
# undistortPoints itself.
_UNDISTORT_ITER = getattr(cv2, "undistortPointsIter", None)


@dataclass(frozen=True, eq=False)
class CameraModel(ABC):
    """Intrinsics `k` (3 x 3, pixels), `distortion` coefficients and image size (pixels).

    `context` prefixes validation errors (a rig loader passes `"<file>: cameras.<name>"`).
    Construction raises CalibrationError for a non-finite or malformed `k`, focal lengths
    outside `MIN_FOCAL_PER_SIDE`..`MAX_FOCAL_PER_SIDE` times the image's longer side (zero or
    negative among them), a skew larger than fx, a principal point outside the image, an image
    size not in 1..`MAX_IMAGE_SIDE_PX` or a distortion vector of the wrong length.
    """

    k: FloatArray
    distortion: tuple[float, ...]
    width: int
    height: int
    context: str = field(default="camera", kw_only=True, repr=False, compare=False)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    MODEL: ClassVar[str] = ""
    DISTORTION_SIZES: ClassVar[tuple[int, ...]] = ()
    DISTORTION_NAMES: ClassVar[str] = ""

    def __post_init__(self) -> None:
        ctx = self.context
        try:
            k = np.array(self.k, dtype=np.float64)
            dist = tuple(float(v) for v in self.distortion)
        except (TypeError, ValueError, OverflowError) as e:
            raise CalibrationError(f"{ctx}: intrinsics must be numbers ({shown(str(e))})") from e
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "distortion", dist)
        if k.shape != (3, 3):
            raise CalibrationError(f"{ctx}.k: expected a 3x3 matrix, got shape {k.shape}")
        if not np.all(np.isfinite(k)):
            raise CalibrationError(f"{ctx}.k: non-finite values")
        if not np.allclose(k[2], [0.0, 0.0, 1.0], rtol=0.0, atol=1e-9) or k[1, 0] != 0.0:
            raise CalibrationError(
                f"{ctx}.k: expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {k.tolist()}"
            )
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            raise CalibrationError(
                f"{ctx}.k: focal lengths must be positive, got fx={k[0, 0]}, fy={k[1, 1]}"
            )
        if (
            isinstance(self.width, bool)
            or isinstance(self.height, bool)
            or int(self.width) != self.width
            or int(self.height) != self.height
            or self.width <= 0
            or self.height <= 0
        ):
            raise CalibrationError(
                f"{ctx}: image size must be positive integers, got "
                f"{shown(self.width)}x{shown(self.height)}"
            )
        if self.width > MAX_IMAGE_SIDE_PX or self.height > MAX_IMAGE_SIDE_PX:
            # shown(): a size of 400 digits made an error line of 400 digits.
            raise CalibrationError(
                f"{ctx}: image size {shown(self.width)}x{shown(self.height)} is above "
                f"{MAX_IMAGE_SIDE_PX} pixels a side"
            )
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        side = max(self.width, self.height)
        for axis, focal in (("fx", k[0, 0]), ("fy", k[1, 1])):
            if not MIN_FOCAL_PER_SIDE * side <= focal <= MAX_FOCAL_PER_SIDE * side:
                # A unit slip (millimetres for pixels, an exponent off by three) would otherwise
                # be taken as a camera that sees a fraction of a degree, or overflow projecting.
                raise CalibrationError(
                    f"{ctx}.k: {axis}={focal:.6g} px is no focal length of a "
                    f"{self.width}x{self.height} camera (from {MIN_FOCAL_PER_SIDE * side:g} to "
                    f"{MAX_FOCAL_PER_SIDE * side:g} px: {MIN_FOCAL_PER_SIDE:g} to "
                    f"{MAX_FOCAL_PER_SIDE:g} times its longer side, a fisheye to a half-degree "
                    "telephoto)"
                )
        if not abs(k[0, 1]) <= k[0, 0]:
            # A skew of 1e300 passed, and every point then projected off the image: a check
            # found no lidar point in it and said so with exit 0, the rig never named.
            raise CalibrationError(
                f"{ctx}.k: skew s={k[0, 1]:.6g} px is beyond fx={k[0, 0]:.6g} px (pixel axes "
                "more than 45 degrees from square): no camera is so"
            )
        if not (0.0 <= k[0, 2] <= self.width and 0.0 <= k[1, 2] <= self.height):
            raise CalibrationError(
                f"{ctx}.k: principal point ({k[0, 2]}, {k[1, 2]}) lies outside the "
                f"{self.width}x{self.height} image"
            )
        if len(dist) not in self.DISTORTION_SIZES:
            sizes = ", ".join(str(n) for n in self.DISTORTION_SIZES)
            raise CalibrationError(
                f"{ctx}.distortion: {self.MODEL} model takes {sizes} coefficients "
                f"({self.DISTORTION_NAMES}), got {len(dist)}"
            )
        if not all(np.isfinite(dist)):
            raise CalibrationError(f"{ctx}.distortion: non-finite values {list(dist)}")
        if self.has_distortion:
            self._check_distortion_reaches_the_corners()

    def _check_distortion_reaches_the_corners(self) -> None:
        """Refuse coefficients no lens has: a radial distortion that folds back before a tenth of
        the way to the image's corners (a camera that sees nothing past it), or that stretches them
        more than `MAX_CORNER_STRETCH` times (k1 = 1e300 left a camera of 1e-100 radians).
        Calibrations that fold short of the corners, as polynomials fitted to wide lenses do,
        are kept."""
        k = self.k
        corners = np.array(
            [[0.0, 0.0], [self.width, 0.0], [0.0, self.height], [self.width, self.height]]
        )
        corner = float(
            np.hypot((corners[:, 0] - k[0, 2]) / k[0, 0], (corners[:, 1] - k[1, 2]) / k[1, 1]).max()
        )
        r, rd = _RADII, self._radial_distorted_radius(_RADII)
        fold = self._max_valid_radius(rd)  # the samples once, for both
        reach = float(np.nanmax(rd[r <= fold])) if np.isfinite(fold) else float(rd[-1])
        coefficients = shown(list(self.distortion))
        if not reach >= 0.1 * corner:
            raise CalibrationError(
                f"{self.context}.distortion: {coefficients} folds back {reach * k[0, 0]:.3g} px "
                "from the principal point, short of a tenth of the way to the image's farthest "
                f"corner ({corner * k[0, 0]:.0f} px): no lens distorts so"
            )
        # Where the image's farthest corner lies undistorted (or the fold, if nearer).
        at = int(np.argmax(rd >= min(corner, reach)))
        stretch = float(rd[at] / r[at]) if at > 0 else math.inf
        if stretch > MAX_CORNER_STRETCH:
            raise CalibrationError(
                f"{self.context}.distortion: {coefficients} stretches the image's corners "
                f"{stretch:.3g} times (a lens at most {MAX_CORNER_STRETCH:g}): no lens distorts so"
            )

    # -- intrinsics -----------------------------------------------------------------------

    @property
    def fx(self) -> float:
        return float(self.k[0, 0])

    @property
    def fy(self) -> float:
        return float(self.k[1, 1])

    @property
    def cx(self) -> float:
        return float(self.k[0, 2])

    @property
    def cy(self) -> float:
        return float(self.k[1, 2])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    @property
    def has_distortion(self) -> bool:
        return any(abs(c) > 0.0 for c in self.distortion)

    def _dist_array(self) -> FloatArray:
        return np.asarray(self.distortion, dtype=np.float64)

    # -- projection -----------------------------------------------------------------------

    def project(self, points_cam: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Project N x 3 points in the camera frame (metres) to pixels, with distortion.

        Returns (uv N x 2 float64 pixels, depth N = z in metres). Points with depth <= 1e-6 m,
        or outside the angle where the distortion model is monotonic (where it would fold far
        points back into the image), get NaN pixels.
        """
        p = np.asarray(points_cam, dtype=np.float64).reshape(-1, np.shape(points_cam)[-1])[:, :3]
        depth = p[:, 2].copy()
        uv = np.full((p.shape[0], 2), np.nan)
        front = depth > MIN_DEPTH_M
        if not np.any(front):
            return uv, depth
        # Row selections by np.compress, and none where every row is kept (points culled to a
        # view usually are): a boolean index of rows costs several times the projection.
        every = bool(front.all())
        q = p if every else np.compress(front, p, axis=0)
        if not self.has_distortion:
            # Plain float64 K·p / z: for rectified (KITTI) cameras this reproduces P·X exactly.
            h = q @ self.k.T
            uv[front] = h[:, :2] / h[:, 2:3]
            return uv, depth
        r = np.hypot(q[:, 0], q[:, 1]) / q[:, 2]
        ok = r <= self._max_valid_radius()
        if every and bool(ok.all()):
            return self._distort_project(q), depth
        idx = np.flatnonzero(front)[ok]
        if idx.size:
            uv[idx] = self._distort_project(np.compress(ok, q, axis=0))
        return uv, depth

    def in_image(self, uv: FloatArray) -> BoolArray:
        """Mask of pixels inside the image, [0, width) x [0, height) (NaN pixels are outside)."""
        with np.errstate(invalid="ignore"):
            return (
                (uv[:, 0] >= 0)
                & (uv[:, 0] < self.width)
                & (uv[:, 1] >= 0)
                & (uv[:, 1] < self.height)
            )

    def visible(self, points_cam: npt.ArrayLike) -> tuple[FloatArray, FloatArray, BoolArray]:
        """`project` plus the visibility mask (in front of the camera and inside the image)."""
        uv, depth = self.project(points_cam)
        return uv, depth, self.in_image(uv) & (depth > MIN_DEPTH_M)

    def in_view(self, points_cam: npt.ArrayLike) -> tuple[npt.NDArray[np.intp], FloatArray]:
        """The points (N x 3, camera frame) `visible` finds in the image, as (their indices,
        their pixels), without projecting the points that cannot reach it: a spinning lidar's
        sweep is mostly behind or beside a camera, and the distortion model is the costly part
        of `project`. The cull keeps every point whose undistorted normalised coordinates fall
        in the box that holds the image's border undistorted (grown by 2%), so the points and
        pixels are `visible`'s exactly."""
        p = np.asarray(points_cam, dtype=np.float64).reshape(-1, np.shape(points_cam)[-1])[:, :3]
        depth = p[:, 2]
        lo, hi = self._normalized_bounds()
        with np.errstate(divide="ignore", invalid="ignore"):
            x = p[:, 0] / depth
            y = p[:, 1] / depth
        near = np.flatnonzero(
            (depth > MIN_DEPTH_M) & (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
        )
        # Gathered per coordinate: points given as rows (`RigidTransform.apply_rows(...).T`)
        # stay rows, so `project` works along contiguous memory too.
        uv, _, seen = self.visible(p.T[:, near].T)
        return near[seen], np.compress(seen, uv, axis=0)

    def _normalized_bounds(self) -> tuple[FloatArray, FloatArray]:
        """(low, high) normalised coordinates (x/z, y/z) of a box holding every point that
        projects into the image (see `in_view`); unbounded where the border does not
        undistort to finite values."""
        cached = self._cache.get("normalized_bounds")
        if cached is None:
            w, h = float(self.width), float(self.height)
            u = np.linspace(-0.5, w - 0.5, max(self.width // 4, 2) + 1)
            v = np.linspace(-0.5, h - 0.5, max(self.height // 4, 2) + 1)
            border = np.concatenate(
                [
                    np.column_stack([u, np.full_like(u, -0.5)]),
                    np.column_stack([u, np.full_like(u, h - 0.5)]),
                    np.column_stack([np.full_like(v, -0.5), v]),
                    np.column_stack([np.full_like(v, w - 0.5), v]),
                ]
            )
            xy = self.normalized(border)
            cached = (np.full(2, -np.inf), np.full(2, np.inf))
            # Only a border that the model reaches bounds the view: where the image's corners
            # lie beyond the distortion's monotonic range, the undistorted border is no
            # outline of it (the projection back onto the border tells).
            back, _ = self.project(np.column_stack([xy, np.ones(len(xy))]))
            if np.all(np.isfinite(back)) and float(np.abs(back - border).max()) < 0.5:
                lo, hi = xy.min(axis=0), xy.max(axis=0)
                grow = 0.02 * (hi - lo)
                cached = (lo - grow, hi + grow)
            self._cache["normalized_bounds"] = cached
        bounds: tuple[FloatArray, FloatArray] = cached
        return bounds

    def back_project(self, uv: npt.ArrayLike, depth: npt.ArrayLike) -> FloatArray:
        """Pixels (N x 2) with depths (N, z in metres) -> N x 3 points in the camera frame.

        The inverse of `project` for points inside the valid field of view; the distortion is
        inverted iteratively (OpenCV, 100 iterations, 1e-12 tolerance).
        """
        pix = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        z = np.broadcast_to(np.asarray(depth, dtype=np.float64), (pix.shape[0],))
        xy = self.normalized(pix)
        return np.column_stack([xy * z[:, None], z])

    def normalized(self, uv: npt.ArrayLike) -> FloatArray:
        """Pixels (N x 2) -> undistorted normalised image coordinates (x/z, y/z), N x 2."""
        pix = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if pix.shape[0] == 0:
            return np.zeros((0, 2))
        if not self.has_distortion:
            h = np.column_stack([pix, np.ones(pix.shape[0])]) @ np.linalg.inv(self.k).T
            return h[:, :2] / h[:, 2:3]
        return self._undistort_normalized(pix)

    # -- undistortion maps ----------------------------------------------------------------

    def undistort_maps(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(map_x, map_y) for `cv2.remap` to an undistorted image with the same K and size.

        Computed once per camera object and cached (the maps are read-only).
        """
        maps = self._cache.get("undistort_maps")
        if maps is None:
            mx, my = self._init_maps()
            mx.setflags(write=False)
            my.setflags(write=False)
            maps = (mx, my)
            self._cache["undistort_maps"] = maps
        out: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] = maps
        return out

    def undistort_image(
        self, image: npt.NDArray[np.uint8], interpolation: int = cv2.INTER_LINEAR
    ) -> npt.NDArray[np.uint8]:
        """The image as seen by an undistorted pinhole camera with the same K (cached maps).

        Raises CalibrationError if the image size differs from the camera's.
        """
        if image.shape[1] != self.width or image.shape[0] != self.height:
            raise CalibrationError(
                f"{self.context}: image is {image.shape[1]}x{image.shape[0]}, camera is "
                f"{self.width}x{self.height}"
            )
        if not self.has_distortion:
            return image
        mx, my = self.undistort_maps()
        return np.asarray(cv2.remap(image, mx, my, interpolation), dtype=np.uint8)

    def undistorted(self) -> CameraModel:
        """The model of `undistort_image`'s output: a pinhole camera of the same K and size
        without distortion (this camera itself when it has none)."""
        if isinstance(self, PinholeCamera) and not self.has_distortion:
            return self
        return PinholeCamera(self.k.copy(), (), self.width, self.height, context=self.context)

    def _max_valid_radius(self, rd: FloatArray | None = None) -> float:
        """Largest normalised radius (tan of the off-axis angle) where distortion is monotonic.
        `rd`: `_radial_distorted_radius(_RADII)`, where the caller has it already."""
        cached = self._cache.get("max_radius")
        if cached is None:
            if rd is None:
                rd = self._radial_distorted_radius(_RADII)
            bad = np.flatnonzero((np.diff(rd) <= 0.0) | ~np.isfinite(rd[1:]))
            cached = float(_RADII[bad[0]]) if bad.size else float("inf")
            self._cache["max_radius"] = cached
        value: float = cached
        return value

    def to_dict(self) -> dict[str, Any]:
        """The rig-file form: model, width, height, k (rows), distortion."""
        return {
            "model": self.MODEL,
            "width": self.width,
            "height": self.height,
            "k": self.k.tolist(),
            "distortion": list(self.distortion),
        }

    @abstractmethod
    def _distort_project(self, q: FloatArray) -> FloatArray: ...

    @abstractmethod
    def _undistort_normalized(self, pix: FloatArray) -> FloatArray: ...

    @abstractmethod
    def _radial_distorted_radius(self, r: FloatArray) -> FloatArray: ...

    @abstractmethod
    def _init_maps(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...


@dataclass(frozen=True, eq=False)
class PinholeCamera(CameraModel):
    """Pinhole camera with OpenCV plumb-bob distortion: () or (k1, k2, p1, p2[, k3[, k4, k5,
    k6]]). An empty tuple is an ideal (e.g. rectified) camera."""

    MODEL: ClassVar[str] = "pinhole"
    DISTORTION_SIZES: ClassVar[tuple[int, ...]] = (0, 4, 5, 8)
    DISTORTION_NAMES: ClassVar[str] = "k1 k2 p1 p2 [k3 [k4 k5 k6]]"

    def _distort_project(self, q: FloatArray) -> FloatArray:
        # OpenCV's model (cv2.projectPoints: x = X * (1/Z), the rational radial term, the
        # tangential terms, then fx, fy, cx, cy; K's skew is ignored, as OpenCV's inverse and
        # undistortion maps ignore it) in numpy: within 1e-12 px of cv2.projectPoints and 35
        # times faster on 20k points (6.2 against 0.18 ms median; benchmarks/RESULTS.md).
        k1, k2, p1, p2, k3, k4, k5, k6 = (*self.distortion, *(0.0,) * 8)[:8]
        inv_z = 1.0 / q[:, 2]
        x = q[:, 0] * inv_z
        y = q[:, 1] * inv_z
        x2, y2, xy = x * x, y * y, x * y
        r2 = x2 + y2
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        if k4 or k5 or k6:
            radial /= 1.0 + r2 * (k4 + r2 * (k5 + r2 * k6))
        fx, fy, cx, cy = self.k[0, 0], self.k[1, 1], self.k[0, 2], self.k[1, 2]
        out: FloatArray = np.empty((len(q), 2))
        out[:, 0] = (x * radial + 2.0 * p1 * xy + p2 * (r2 + 2.0 * x2)) * fx + cx
        out[:, 1] = (y * radial + p1 * (r2 + 2.0 * y2) + 2.0 * p2 * xy) * fy + cy
        return out

    def _undistort_normalized(self, pix: FloatArray) -> FloatArray:
        src = pix.reshape(-1, 1, 2)
        if _UNDISTORT_ITER is not None:  # OpenCV 4 (JetPack's): the criteria has its own call
            out = _UNDISTORT_ITER(src, self.k, self._dist_array(), None, None, _UNDISTORT_CRITERIA)
        else:
            out = cv2.undistortPoints(
                src, self.k, self._dist_array(), None, None, None, _UNDISTORT_CRITERIA
            )
        res: FloatArray = np.asarray(out, dtype=np.float64).reshape(-1, 2)
        return res

    def _radial_distorted_radius(self, r: FloatArray) -> FloatArray:
        d = list(self.distortion) + [0.0] * (8 - len(self.distortion))
        k1, k2, _, _, k3, k4, k5, k6 = d
        r2 = r * r
        num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
        with np.errstate(divide="ignore", invalid="ignore"):
            out: FloatArray = np.where(num / den > 0, r * num / den, np.nan)
        return out

    def _init_maps(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        mx, my = cv2.initUndistortRectifyMap(
            self.k, self._dist_array(), None, self.k, (self.width, self.height), cv2.CV_32FC1
        )
        return np.asarray(mx, np.float32), np.asarray(my, np.float32)


@dataclass(frozen=True, eq=False)
class FisheyeCamera(CameraModel):
    """Equidistant fisheye camera (OpenCV `cv2.fisheye`): distortion (k1, k2, k3, k4) on the
    off-axis angle θ, θ_d = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸). Only points in front of the
    camera (z > 0) are projected."""

    MODEL: ClassVar[str] = "fisheye"
    DISTORTION_SIZES: ClassVar[tuple[int, ...]] = (4,)
    DISTORTION_NAMES: ClassVar[str] = "k1 k2 k3 k4"

    @property
    def has_distortion(self) -> bool:
        # Even with k = 0 the equidistant mapping is not a pinhole one.
        return True

    def _distort_project(self, q: FloatArray) -> FloatArray:
        pts, _ = cv2.fisheye.projectPoints(
            q.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), self.k, self._dist_array()
        )
        out: FloatArray = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        return out

    def _undistort_normalized(self, pix: FloatArray) -> FloatArray:
        out = cv2.fisheye.undistortPoints(
            pix.reshape(-1, 1, 2), self.k, self._dist_array(), None, None, None, _UNDISTORT_CRITERIA
        )
        res: FloatArray = np.asarray(out, dtype=np.float64).reshape(-1, 2)
        return res

    def _radial_distorted_radius(self, r: FloatArray) -> FloatArray:
        k1, k2, k3, k4 = self.distortion
        t = np.arctan(r)
        t2 = t * t
        out: FloatArray = t * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        return out

    def _init_maps(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        mx, my = cv2.fisheye.initUndistortRectifyMap(
            self.k, self._dist_array(), np.eye(3), self.k, (self.width, self.height), cv2.CV_32FC1
        )
        return np.asarray(mx, np.float32), np.asarray(my, np.float32)


CAMERA_MODELS: dict[str, type[CameraModel]] = {
    PinholeCamera.MODEL: PinholeCamera,
    FisheyeCamera.MODEL: FisheyeCamera,
}


def camera_from_dict(doc: Any, context: str = "camera") -> CameraModel:
    """A camera from its rig-file form (see `CameraModel.to_dict`); `model` defaults to pinhole.

    Raises CalibrationError naming `context` and the field for missing or invalid fields.
    """
    if not isinstance(doc, dict):
        raise CalibrationError(f"{context}: expected a mapping, got {type(doc).__name__}")
    model = doc.get("model", PinholeCamera.MODEL)
    cls = CAMERA_MODELS.get(model) if isinstance(model, str) else None
    if cls is None:
        raise CalibrationError(
            f"{context}.model: unknown camera model {shown(model)} "
            f"(known: {', '.join(CAMERA_MODELS)})"
        )
    for key in ("k", "width", "height"):
        if key not in doc:
            raise CalibrationError(f"{context}: missing field {key!r}")
    unknown = set(doc) - {"model", "k", "width", "height", "distortion"}
    if unknown:
        raise CalibrationError(
            f"{context}: unknown field(s) {sorted(str(k)[:80] for k in unknown)}"
        )
    width, height = doc["width"], doc["height"]
    for key, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise CalibrationError(f"{context}.{key}: expected an integer, got {shown(value)}")
    distortion = doc.get("distortion") or []
    if not isinstance(distortion, list | tuple):
        raise CalibrationError(f"{context}.distortion: expected a list, got {shown(distortion)}")
    if cls is FisheyeCamera and not distortion:
        distortion = [0.0] * 4
    return cls(doc["k"], tuple(distortion), width, height, context=context)
