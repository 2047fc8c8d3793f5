"""Is a camera image fit to use? Too dark or too blurred, it is left out of the fusion.

A blind camera is worse than none to a fusion that learned from cameras which see: where it finds
no pedestrian, its silence reads as evidence against one (on unseen synthetic drives the learned
engine found fewer pedestrians with a dark camera than with no camera at all). So the node checks
each image before the camera encoder, as Autoware's image_diagnostics does for blockage and
darkness, and treats an unfit one as missing: the fusion runs on the lidar alone and the camera's
stream is listed among the DetectionList's degraded inputs.

Two measures, cheap enough for every frame (under a millisecond for a KITTI image):
- mean luma: the mean grey level, 0-255;
- sharpness: the RMS of the Laplacian of the grey image at a quarter of its size (area
  averaging, which also averages sensor noise away), in percent of the mean grey level, so a
  uniformly darker or lower-contrast exposure of a sharp scene keeps its sharpness.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from perception.config import CameraHealthConfig

__all__ = ["ImageQuality", "image_problem", "measure_image"]

#: The image is shrunk by this factor per side before the Laplacian.
_SHRINK = 4


@dataclass(frozen=True)
class ImageQuality:
    """What the camera health check measured of one image (see the module docstring)."""

    mean_luma: float
    sharpness: float


def measure_image(image: npt.NDArray[np.uint8]) -> ImageQuality:
    """The mean luma and relative sharpness of a BGR (H x W x 3) or grey (H x W) uint8 image."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    mean = float(grey.mean())
    h, w = grey.shape
    # Whole blocks only (the last rows and columns short of a block are left out): OpenCV
    # averages whole blocks in its fast path, a quarter of the time of a fractional factor
    # (0.35 against 1.44 ms on a 1242 x 375 frame, the check's largest cost).
    whole = grey[: h - h % _SHRINK or h, : w - w % _SHRINK or w]
    small = cv2.resize(
        whole,
        (max(1, w // _SHRINK), max(1, h // _SHRINK)),
        interpolation=cv2.INTER_AREA,
    ).astype(np.float32)
    laplacian = cv2.Laplacian(small, cv2.CV_32F)
    rms = float(np.sqrt(np.mean(np.square(laplacian))))
    return ImageQuality(mean_luma=mean, sharpness=100.0 * rms / max(mean, 1.0))


def image_problem(quality: ImageQuality, config: CameraHealthConfig) -> str | None:
    """Why an image of this quality is unfit to use (one phrase), or None when it is fit."""
    if not config.enabled:
        return None
    if quality.mean_luma < config.min_mean_luma:
        return f"too dark (mean luma {quality.mean_luma:.1f} < {config.min_mean_luma:g})"
    if quality.sharpness < config.min_sharpness:
        return f"too blurred (sharpness {quality.sharpness:.2f} < {config.min_sharpness:g})"
    return None
