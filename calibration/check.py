"""Calibration check: lidar points drawn on a camera image, and an alignment score.

The score is the mutual information (MI, nats) between the lidar return intensity and the image
grey level at the projected points (Pandey et al., "Automatic Targetless Extrinsic Calibration
of a 3D Lidar and Camera by Maximizing Mutual Information", AAAI 2012): bright road markings,
plates and signs return strongly, so with the right extrinsics intensity predicts grey level;
with wrong extrinsics the pairs are shuffled and the MI falls. 0 means independent; larger is
better. On the KITTI object frames here the nominal calibration scores about 0.1-0.2 nats and a
1 degree pitch/yaw error costs 10-45 % of it (see tests/calibration/test_check.py).

An edge-based score (lidar depth discontinuities against Canny edges, Levinson & Thrun 2013)
was tried first; on single frames it was dominated by foliage and did not fall reliably, so it
is not used. Translations along the optical axis change the projection very little (a 10 cm
error at 10 m is a 1 % scale change) and are barely observable by any single-frame score.

Points: N x 4 (x, y, z, intensity) in the lidar frame; without an intensity column (or with a
constant one) the score is 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel
from calibration.errors import CalibrationError, open_regular_file
from calibration.rig import VEHICLE_FRAME, Rig, camera_frame
from calibration.transforms import RigidTransform

__all__ = [
    "CheckResult",
    "alignment_score",
    "calibration_check",
    "describe_rig",
    "draw_before_after",
    "draw_overlay",
    "mutual_information",
    "read_kitti_bin",
    "read_scan",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MI_BINS = 16
# A slight blur makes the grey level at a projected point robust to sub-pixel jitter.
GREY_BLUR_SIGMA_PX = 1.0


@dataclass(frozen=True, eq=False)
class CheckResult:
    """`score`: mutual information (nats) of lidar intensity and image grey level at the visible
    points (larger = better aligned, 0 = independent); `n_points_in_image`: visible points;
    `overlay`: the image (BGR uint8) with the visible points coloured by depth (near red, far
    blue)."""

    score: float
    n_points_in_image: int
    overlay: npt.NDArray[np.uint8]


# -- scans -------------------------------------------------------------------------------------


def read_kitti_bin(path: Path, max_points: int | None = None) -> npt.NDArray[np.float32]:
    """A KITTI `.bin` scan as it is stored: N x 4 float32 (x, y, z, reflectance), N >= 1.
    `max_points`: the most points a scan may hold (a sweep's wire limit, `WireLimits.max_points`:
    a larger one can never be sent or recorded), checked from the file's size before it is read;
    None: no limit.

    Raises CalibrationError naming the file when it cannot be read or is not a regular file (a
    pipe would block the read for ever; `errors.open_regular_file`), holds more than
    `max_points` points, is empty (a sweep of 0 points is a broken file, not an empty scene: a
    spinning lidar always sees the ground) or is not a whole number of 16-byte points."""
    with open_regular_file(path, "lidar scan") as f:
        size = os.fstat(f.fileno()).st_size
        if max_points is not None and size // 16 > max_points:
            raise CalibrationError(
                f"{path}: lidar scan of {size} bytes ({size // 16} points), above the limit of "
                f"{max_points} points a sweep may hold"
            )
        try:
            # No more than its size: a file that grows while it is read stays within the limit.
            raw = f.read(size)
        except OSError as e:
            raise CalibrationError(f"{path}: cannot read lidar scan ({e.strerror or e})") from e
    if not raw:
        raise CalibrationError(f"{path}: empty lidar scan (0 bytes, 0 points)")
    if len(raw) % 16:
        raise CalibrationError(
            f"{path}: size {len(raw)} bytes is not a multiple of 16 (N x 4 float32)"
        )
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 4).astype(np.float32)


def read_scan(path: Path, max_points: int | None = None) -> npt.NDArray[np.float32]:
    """A lidar scan as N x 4 float32 (x, y, z, intensity) in the lidar frame (metres):
    a KITTI `.bin` (float32 N x 4) or a `.pcd` (any encoding, `calibration.pcd.read_pcd`);
    points with non-finite x/y/z are dropped. `max_points`: the most points the file may hold
    (`read_kitti_bin`), refused before its data is read; None: no limit.

    Raises CalibrationError naming the file when it cannot be read or parsed, is not a regular
    file, holds more than `max_points` points, or holds no point (an empty file is a broken
    scan, not an empty scene)."""
    path = Path(path)
    if path.suffix.lower() == ".pcd":
        from calibration.pcd import read_pcd  # noqa: PLC0415 (pypcd4: a slow import)

        points = read_pcd(path, max_points)
        if points.shape[0] == 0:
            raise CalibrationError(f"{path}: no points with finite x, y, z in the PCD file")
        return points
    points = read_kitti_bin(path, max_points)
    finite: npt.NDArray[np.float32] = points[np.all(np.isfinite(points[:, :3]), axis=1)]
    if finite.shape[0] == 0:
        raise CalibrationError(f"{path}: no points with finite x, y, z in the scan")
    return finite


# -- score -------------------------------------------------------------------------------------


def _grey(image: npt.NDArray[np.uint8]) -> FloatArray:
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.asarray(
        cv2.GaussianBlur(gray.astype(np.float32), (0, 0), GREY_BLUR_SIGMA_PX), dtype=np.float64
    )


def _unit_range(x: FloatArray) -> FloatArray:
    """Scale to [0, 1) between the 1st and 99th percentiles (robust to a few hot returns)."""
    lo, hi = np.percentile(x, [1.0, 99.0])
    if hi <= lo:
        return np.zeros_like(x)
    out: FloatArray = np.clip((x - lo) / (hi - lo), 0.0, 1.0 - 1e-9)
    return out


def mutual_information(a: FloatArray, b: FloatArray, bins: int = MI_BINS) -> float:
    """MI (nats) of two samples, each scaled to [0, 1) by its 1-99th percentiles first."""
    if a.size == 0:
        return 0.0
    joint, _, _ = np.histogram2d(
        _unit_range(a), _unit_range(b), bins=bins, range=[[0.0, 1.0], [0.0, 1.0]]
    )
    p = joint / joint.sum()
    pa = p.sum(axis=1, keepdims=True)
    pb = p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz])))


def alignment_score(
    camera: CameraModel,
    camera_from_lidar: RigidTransform,
    points: npt.ArrayLike,
    image: npt.NDArray[np.uint8],
) -> tuple[float, int]:
    """(score, n visible points): the MI of lidar intensity and image grey level at the points
    (N x 4, lidar frame, metres) visible in `image` (BGR or grey, the camera's size).

    Raises CalibrationError if the image size differs from the camera's.
    """
    if image.shape[0] != camera.height or image.shape[1] != camera.width:
        raise CalibrationError(
            f"{camera.context}: image is {image.shape[1]}x{image.shape[0]}, camera expects "
            f"{camera.width}x{camera.height}"
        )
    pts = np.asarray(points, dtype=np.float64)
    _, _, vis = camera.visible(camera_from_lidar.apply(pts))
    uv, _ = camera.project(camera_from_lidar.apply(pts[vis]))
    n = int(vis.sum())
    if n == 0 or pts.shape[1] < 4:
        return 0.0, n
    u = np.floor(uv[:, 0]).astype(np.int64)
    v = np.floor(uv[:, 1]).astype(np.int64)
    return mutual_information(pts[vis, 3], _grey(image)[v, u]), n


# -- overlay -----------------------------------------------------------------------------------


def draw_overlay(
    image: npt.NDArray[np.uint8],
    uv: FloatArray,
    depth: FloatArray,
    text: str = "",
    depth_range_m: tuple[float, float] = (2.0, 80.0),
) -> npt.NDArray[np.uint8]:
    """A BGR copy of `image` with points `uv` (pixels) drawn as square dots (2 px, larger on
    wide images) coloured by `depth` (metres) on a log scale over `depth_range_m` (JET: near red,
    far blue), far points first so near ones stay on top; `text` goes in the top-left corner,
    the colour scale with its depths in the bottom-right one."""
    out = image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = out.shape[:2]
    order = np.argsort(-depth)
    uv, depth = uv[order], depth[order]
    lo, hi = np.log(depth_range_m[0]), np.log(depth_range_m[1])
    level = np.clip(255.0 * (hi - np.log(np.maximum(depth, 1e-3))) / (hi - lo), 0, 255)
    # OpenCV 4 maps no points to None.
    levels = level.astype(np.uint8).reshape(-1, 1)
    colours = cv2.applyColorMap(levels, cv2.COLORMAP_JET) if len(levels) else levels
    colours = colours.reshape(-1, 3)
    u = np.floor(uv[:, 0]).astype(np.int64)
    v = np.floor(uv[:, 1]).astype(np.int64)
    dot = max(2, round(w / 640))
    for du in range(dot):
        for dv in range(dot):
            out[np.clip(v + dv, 0, h - 1), np.clip(u + du, 0, w - 1)] = colours
    if text:
        scale = max(0.6, w / 1800)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (0, 0), (tw + 16, th + base + 12), (0, 0, 0), cv2.FILLED)
        cv2.putText(
            out, text, (8, th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
    _depth_legend(out, depth_range_m)
    return np.asarray(out, dtype=np.uint8)


def draw_before_after(
    image: npt.NDArray[np.uint8],
    points: npt.ArrayLike,
    camera: CameraModel,
    panels: Sequence[tuple[RigidTransform, str]],
) -> npt.NDArray[np.uint8]:
    """`draw_overlay` of the same `points` (N x >=3, vehicle frame at the image's exposure) on
    the same `image` once per panel, each with its own ``(vehicle_from_camera, text)``, stacked
    top to bottom: the extrinsic a check was given above the one it estimates, so that a
    person sees the points move onto the edges they belong to."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    drawn = []
    for vehicle_from_camera, text in panels:
        uv, depth, seen = camera.visible(vehicle_from_camera.inverse().apply(xyz))
        drawn.append(draw_overlay(image, uv[seen], depth[seen], text=text))
    return np.asarray(np.vstack(drawn), dtype=np.uint8)


def _depth_legend(out: npt.NDArray[Any], depth_range_m: tuple[float, float]) -> None:
    """The dots' colour scale (near left, far right, log depth) with depth ticks, on a black
    box in the bottom-right corner of `out` (in place)."""
    h, w = out.shape[:2]
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, w / 2800)
    (_, th), base = cv2.getTextSize("0", font, scale, 1)
    bar_w, bar_h, pad = max(120, w // 4), max(8, h // 45), 8
    box_w, box_h = bar_w + 2 * pad, 2 * (th + base) + bar_h + 3 * pad
    x0, y0 = max(0, w - box_w), max(0, h - box_h)
    cv2.rectangle(out, (x0, y0), (w - 1, h - 1), (0, 0, 0), cv2.FILLED)
    title = "lidar depth, m (log scale)"
    cv2.putText(out, title, (x0 + pad, y0 + pad + th), font, scale, (255, 255, 255), 1,
                cv2.LINE_AA)  # fmt: skip
    bar_y = y0 + 2 * pad + th + base
    # The same mapping as the dots: level 255 (red) at the near end, 0 (blue) at the far end.
    levels = np.linspace(255.0, 0.0, bar_w).astype(np.uint8).reshape(-1, 1)
    colours = cv2.applyColorMap(levels, cv2.COLORMAP_JET).reshape(1, bar_w, 3)
    out[bar_y : bar_y + bar_h, x0 + pad : x0 + pad + bar_w] = colours
    lo, hi = np.log(depth_range_m[0]), np.log(depth_range_m[1])
    for tick in (1, 2, 5, 10, 20, 40, 80, 160):
        if not depth_range_m[0] <= tick <= depth_range_m[1]:
            continue
        x = x0 + pad + round((np.log(tick) - lo) / (hi - lo) * (bar_w - 1))
        cv2.line(out, (x, bar_y + bar_h), (x, bar_y + bar_h + 3), (255, 255, 255), 1)
        (tw, _), _ = cv2.getTextSize(str(tick), font, scale, 1)
        tx = min(max(x - tw // 2, x0 + 2), w - tw - 2)
        cv2.putText(out, str(tick), (tx, bar_y + bar_h + 5 + th), font, scale, (255, 255, 255),
                    1, cv2.LINE_AA)  # fmt: skip


def calibration_check(
    rig: Rig,
    camera_name: str,
    points: npt.ArrayLike,
    image: npt.NDArray[np.uint8],
    *,
    lidar_frame: str = "lidar",
    camera_from_lidar: RigidTransform | None = None,
) -> CheckResult:
    """Project `points` (N x >=3, `lidar_frame`, metres) into camera `camera_name` of `rig`,
    score the alignment with `image` (BGR uint8 as cv2 reads it, the camera's size) and draw the
    overlay. `camera_from_lidar` overrides the rig's extrinsics (e.g. to test a perturbation).

    Raises CalibrationError for an unknown camera or frame, or an image of the wrong size.
    """
    if camera_name not in rig.cameras:
        raise CalibrationError(
            f"{rig.source or 'rig'}: no camera {camera_name!r} (cameras: {', '.join(rig.cameras)})"
        )
    camera = rig.cameras[camera_name]
    if camera_from_lidar is None:
        camera_from_lidar = rig.transform(camera_frame(camera_name), lidar_frame)
    score, n_vis = alignment_score(camera, camera_from_lidar, points, image)
    uv, depth, vis = camera.visible(camera_from_lidar.apply(points))
    overlay = draw_overlay(
        image, uv[vis], depth[vis], text=f"{camera_name}: MI score {score:.4f}, {n_vis} points"
    )
    return CheckResult(score, n_vis, overlay)


# -- description -------------------------------------------------------------------------------


def _rpy_deg(r: FloatArray) -> tuple[float, float, float]:
    """(roll, pitch, yaw) degrees of a z-y'-x'' rotation."""
    yaw = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    pitch = np.degrees(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    return float(roll), float(pitch), float(yaw)


def _fmt_transform(t: RigidTransform) -> str:
    x, y, z = t.translation
    roll, pitch, yaw = _rpy_deg(t.rotation)
    return f"t=[{x:+.4f}, {y:+.4f}, {z:+.4f}] m  rpy=[{roll:+.3f}, {pitch:+.3f}, {yaw:+.3f}] deg"


def describe_rig(rig: Rig) -> str:
    """A readable multi-line description: the frame tree (each frame's `parent_from_frame` as
    translation and roll/pitch/yaw, and its origin in the vehicle frame), the cameras, the GNSS
    lever arm, the time offsets and the loader's warnings."""
    lines = [
        f"rig: {rig.source or '(no source)'}",
        "frames (parent_from_frame; origin in vehicle):",
    ]

    def walk(frame: str, prefix: str) -> None:
        kids = rig.children(frame)
        for i, child in enumerate(kids):
            last = i == len(kids) - 1
            edge = rig.edges[child]
            origin = rig.vehicle_from[child].translation
            lines.append(
                f"{prefix}{'└── ' if last else '├── '}{child}: "
                f"{_fmt_transform(edge.parent_from_frame)}"
                f"  (in vehicle: [{origin[0]:+.3f}, {origin[1]:+.3f}, {origin[2]:+.3f}] m)"
            )
            walk(child, prefix + ("    " if last else "│   "))

    lines.append(f"  {VEHICLE_FRAME}")
    walk(VEHICLE_FRAME, "  ")
    lines.append("cameras:")
    if not rig.cameras:
        lines.append("  (none)")
    for name, cam in rig.cameras.items():
        dist = ", ".join(f"{d:.6g}" for d in cam.distortion) or "none"
        lines.append(
            f"  {name} ({camera_frame(name)}): {cam.MODEL} {cam.width}x{cam.height} px, "
            f"fx={cam.fx:.4f} fy={cam.fy:.4f} cx={cam.cx:.4f} cy={cam.cy:.4f}, distortion [{dist}]"
        )
    arm = rig.gnss_lever_arm_m
    lines.append(
        "gnss lever arm (antenna in vehicle): "
        + ("not set" if arm is None else f"[{arm[0]:+.4f}, {arm[1]:+.4f}, {arm[2]:+.4f}] m")
    )
    offsets = ", ".join(f"{k} {v:+d} ns" for k, v in rig.time_offsets_ns.items())
    lines.append(f"time offsets: {offsets or 'none'}")
    if rig.warnings:
        lines.append("warnings:")
        lines.extend(f"  - {w}" for w in rig.warnings)
    return "\n".join(lines)
