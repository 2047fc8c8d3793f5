"""Pictures of one frame's 3D boxes: drawn on the camera image and in a bird's-eye view with the
lidar points, labelled so that labels of overlapping boxes stay readable, with a legend.

The one place that draws boxes for people to look at: `perception demo`'s picture
(replay.synth.demo) and `perception show` / `replay --show` (replay.show) use it. Boxes are in
the vehicle frame (x forward, y left, z up; metres, radians), images are BGR uint8 as OpenCV
holds them.

Labels are placed greedily in the order given (put the most important first): each takes the
first spot around its anchor, stacking away from it, that overlaps no label placed before and
stays in the image; one moved off its anchor gets a leader line back to it. Every label has a
filled background in its colour, so it reads on sky, road and car bodies alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel
from calibration.images import encode_image
from calibration.transforms import RigidTransform
from perception.msgs.types import CameraBox, Detection3D
from replay.errors import ReplayError
from replay.evaluation import ReferenceBox, box_corners
from replay.output import atomic_output

__all__ = [
    "BGR",
    "CAMERA_BOX_BGR",
    "MISSED_BGR",
    "REFERENCE_BGR",
    "UNSCORED_BGR",
    "BirdEyeView",
    "DrawnBox",
    "ImageArray",
    "Label",
    "TrackMark",
    "class_colour",
    "draw_box_on_image",
    "frame_picture",
    "place_labels",
    "write_picture",
]

ImageArray = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]
BGR = tuple[int, int, int]

#: References (ground truth, labels, reference predictions) that are scored: green.
REFERENCE_BGR: BGR = (80, 220, 80)
#: References the scoring leaves out (too far, hidden, out of view, another class): dim green.
UNSCORED_BGR: BGR = (60, 120, 60)
#: A scored reference no detection matched: its label.
MISSED_BGR: BGR = (40, 40, 230)
#: The 2D boxes the camera detector found.
CAMERA_BOX_BGR: BGR = (255, 80, 255)
#: Detections by class; other labels (the lidar's `unknown`) grey.
_CLASS_BGR: dict[str, BGR] = {
    "Car": (0, 140, 255),
    "Pedestrian": (80, 80, 255),
    "Cyclist": (255, 200, 0),
}
_OTHER_BGR: BGR = (170, 170, 170)
_BACKGROUND_BGR: BGR = (32, 32, 32)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Corner pairs of box_corners' 8 corners: bottom face, top face, uprights.
_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7),
)  # fmt: skip


def class_colour(label: str) -> BGR:
    """The colour detections of `label` are drawn in."""
    return _CLASS_BGR.get(label, _OTHER_BGR)


def _text_colour(background: BGR) -> BGR:
    # Perceived luminance of a BGR colour: dark text on light labels, white on dark ones.
    b, g, r = background
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


# -- labels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """A text naming the pixel `anchor` (x, y), on a background of `colour`."""

    text: str
    anchor: tuple[float, float]
    colour: BGR


Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive)


def _covered(spots: npt.NDArray[np.int64], taken: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The area of `taken` (K x 4 rectangles) that each of `spots` (C x 4) overlaps (C)."""
    # Only the rectangles near the spots can overlap one.
    near = (
        (taken[:, 2] > spots[:, 0].min())
        & (taken[:, 0] < spots[:, 2].max())
        & (taken[:, 3] > spots[:, 1].min())
        & (taken[:, 1] < spots[:, 3].max())
    )
    t = taken[near]
    w = np.minimum(spots[:, None, 2], t[None, :, 2]) - np.maximum(spots[:, None, 0], t[None, :, 0])
    h = np.minimum(spots[:, None, 3], t[None, :, 3]) - np.maximum(spots[:, None, 1], t[None, :, 1])
    return np.asarray((np.clip(w, 0, None) * np.clip(h, 0, None)).sum(axis=1), np.int64)


def _candidates(anchor: tuple[int, int], w: int, h: int, size: tuple[int, int]) -> list[Rect]:
    """Spots for a w x h label inside the image, nearest to the anchor first (above it before
    below it at equal distance): right and left of it, stacked up and down in label heights,
    and shifted sideways in label widths."""
    ax, ay = anchor
    width, height = size
    spots: dict[Rect, tuple[float, bool, int]] = {}
    for col in (0, -1, 1, -2, 2, -3):
        for step in range(-12, 13):
            x = min(max(0, ax + col * w), max(0, width - w))
            y = min(max(0, ay - h + step * (h + 2)), max(0, height - h))
            # Distance from the anchor to the nearest pixel of the spot.
            dx = max(x - ax, 0, ax - (x + w - 1))
            dy = max(y - ay, 0, ay - (y + h - 1))
            spot = (x, y, x + w, y + h)
            spots.setdefault(spot, (math.hypot(dx, dy), y > ay - h, abs(x - ax)))
    return sorted(spots, key=spots.__getitem__)


def place_labels(
    image: ImageArray, labels: Sequence[Label], *, scale: float = 0.42, avoid: Sequence[Rect] = ()
) -> list[Rect]:
    """Draws `labels` on `image` (in place) where they overlap neither each other nor the
    rectangles of `avoid`, in order (see the module docstring); a label with no free spot
    takes the one it overlaps least. Returns the rectangles the labels took."""
    height, width = image.shape[:2]
    # The rectangles taken so far, as an array: each label's spots are scored against all of
    # them at once (one by one in Python, 2,000 labels took minutes a picture).
    taken = np.zeros((len(avoid) + len(labels), 4), np.int64)
    taken[: len(avoid)] = np.asarray(avoid, np.int64).reshape(-1, 4)
    count = len(avoid)
    placed: list[tuple[Label, Rect, tuple[int, int]]] = []
    for label in labels:
        (tw, th), base = cv2.getTextSize(label.text, _FONT, scale, 1)
        w, h = tw + 6, th + base + 4
        ax = min(max(0, round(label.anchor[0])), width - 1)
        ay = min(max(0, round(label.anchor[1])), height - 1)
        spots = _candidates((ax, ay), w, h, (width, height))
        covered = _covered(np.asarray(spots, np.int64), taken[:count])
        # The nearest free spot, else the one overlapping least (the first of equals).
        best = spots[int(np.argmin(covered))]
        taken[count] = best
        count += 1
        placed.append((label, best, (ax, ay)))
    # Leaders first, so that no leader runs over a label's text.
    for label, (x1, y1, x2, y2), (ax, ay) in placed:
        nx, ny = min(max(ax, x1), x2 - 1), min(max(ay, y1), y2 - 1)
        if math.hypot(nx - ax, ny - ay) > 3:
            cv2.line(image, (ax, ay), (nx, ny), label.colour, 1, cv2.LINE_AA)
            cv2.circle(image, (ax, ay), 2, label.colour, -1, cv2.LINE_AA)
    for label, (x1, y1, x2, y2), _ in placed:
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), label.colour, cv2.FILLED)
        (_, th), base = cv2.getTextSize(label.text, _FONT, scale, 1)
        cv2.putText(image, label.text, (x1 + 3, y1 + 2 + th), _FONT, scale,
                    _text_colour(label.colour), 1, cv2.LINE_AA)  # fmt: skip
    return [r for _, r, _ in placed]


# -- the camera image --------------------------------------------------------------------------


def draw_box_on_image(
    image: ImageArray,
    box: ReferenceBox | Detection3D,
    camera: CameraModel,
    camera_from_vehicle: RigidTransform,
    colour: BGR,
    *,
    thickness: int = 1,
    near_m: float = 0.5,
    pixel_scale: float = 1.0,
) -> tuple[float, float] | None:
    """Draws the 12 edges of `box` on `image` (in place), each clipped at `near_m` in front of
    the camera (so a box beside the vehicle still shows its front part); returns the pixel a
    label of it should name (the top left of what was drawn, in the image), or None when none of
    it is in view. `pixel_scale`: `image` is the camera's image resized by this factor."""
    corners = camera_from_vehicle.apply(box_corners(box))
    height, width = image.shape[:2]
    drawn: list[FloatArray] = []
    for i, j in _EDGES:
        a, b = corners[i], corners[j]
        if a[2] < near_m and b[2] < near_m:
            continue
        if a[2] < near_m:
            a = a + (near_m - a[2]) / (b[2] - a[2]) * (b - a)
        elif b[2] < near_m:
            b = b + (near_m - b[2]) / (a[2] - b[2]) * (a - b)
        uv, _ = camera.project(np.stack([a, b]))
        uv *= pixel_scale
        if not np.all(np.isfinite(uv)) or np.any(np.abs(uv) > 1e5):
            continue  # outside a distortion model's valid angle, or absurdly far off
        p, q = np.round(uv).astype(np.int64)
        cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), colour, thickness,
                 cv2.LINE_AA)  # fmt: skip
        drawn.append(uv)
    if not drawn:
        return None
    uv = np.concatenate(drawn)
    inside = uv[(uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)]
    if len(inside) == 0:
        return None
    return float(inside[:, 0].min()), float(inside[:, 1].min())


# -- the bird's-eye view -----------------------------------------------------------------------

#: Pixel coordinates farther off the view than this are clipped (OpenCV takes int32).
_FAR_PX = 1e5


def _clip_segment(
    a: FloatArray, b: FloatArray, lo: float, hi: float
) -> tuple[FloatArray, FloatArray] | None:
    """The part of the segment a-b (pixels) inside the square [lo, hi]^2, None when none is
    (Liang-Barsky)."""
    d = b - a
    t0, t1 = 0.0, 1.0
    for k in range(2):
        for den, num in ((-d[k], a[k] - lo), (d[k], hi - a[k])):
            if den == 0.0:
                if num < 0.0:
                    return None
                continue
            t = num / den
            if den < 0.0:
                t0 = max(t0, t)
            else:
                t1 = min(t1, t)
    if t0 > t1:
        return None
    # Rounding of points 1e30 px off must still leave the ends on the square.
    return np.clip(a + t0 * d, lo, hi), np.clip(a + t1 * d, lo, hi)


class BirdEyeView:
    """A square bird's-eye view of `size_px` pixels: x forward (up) from just behind the
    vehicle to `forward_m`, y left (left) +- `forward_m` / 2, range rings every 10 m, the
    vehicle as a triangle at the bottom centre. Draw into `image` with the methods."""

    def __init__(self, size_px: int, forward_m: float = 50.0) -> None:
        self.size_px = size_px
        self.scale = size_px / forward_m  # px per metre
        self._origin_px = size_px - 10
        self.image: ImageArray = np.full((size_px, size_px, 3), 24, np.uint8)
        centre = tuple(int(v) for v in self.to_px(np.zeros(2)))
        for r in range(10, int(forward_m * 1.2) + 1, 10):
            cv2.circle(self.image, centre, int(r * self.scale), (60, 60, 60), 1, cv2.LINE_AA)
            if r < forward_m:
                cv2.putText(self.image, f"{r} m", (centre[0] + 3, centre[1] - int(r * self.scale)
                            - 3), _FONT, 0.33, (110, 110, 110), 1, cv2.LINE_AA)  # fmt: skip

    def _px(self, xy: npt.ArrayLike) -> FloatArray:
        p = np.asarray(xy, dtype=np.float64)
        u = self.size_px / 2 - p[..., 1] * self.scale
        v = self._origin_px - p[..., 0] * self.scale
        return np.stack([u, v], -1)

    def to_px(self, xy: npt.ArrayLike) -> npt.NDArray[np.int32]:
        """Pixels (..., 2: column, row) of vehicle-frame points (..., >= 2: x, y; metres); one
        far outside the view is moved to `_FAR_PX` off it (the int32 OpenCV takes)."""
        return np.round(np.clip(self._px(xy), -_FAR_PX, _FAR_PX)).astype(np.int32)

    def _lines(self, xy: npt.ArrayLike, colour: BGR, thickness: int, *, closed: bool) -> None:
        """A line through vehicle-frame points (K x 2), closed into a polygon when `closed`."""
        px = self._px(xy)
        if np.all(np.abs(px) < _FAR_PX):
            points = np.round(px).astype(np.int32)
            cv2.polylines(self.image, [points], closed, colour, thickness, cv2.LINE_AA)
            return
        # A box of absurd size or place (finite, as the schema allows): clipped to the view
        # segment by segment, so that what shows of it keeps its direction.
        ends = np.roll(px, -1, axis=0) if closed else px[1:]
        margin = 2.0 * thickness
        for a, b in zip(px, ends, strict=False):
            piece = _clip_segment(a, b, -margin, self.size_px + margin)
            if piece is not None:
                p, q = (tuple(int(c) for c in np.round(e)) for e in piece)
                cv2.line(self.image, p, q, colour, thickness, cv2.LINE_AA)

    def points(self, points: npt.ArrayLike, ground_z_m: float = -1.4) -> None:
        """Lidar points (N x >= 3, vehicle frame): above `ground_z_m` light, the ground dark."""
        pts = np.asarray(points, dtype=np.float64)
        px = self.to_px(pts[:, :2])
        n = self.size_px
        ok = (px[:, 0] >= 0) & (px[:, 0] < n) & (px[:, 1] >= 0) & (px[:, 1] < n)
        high = pts[ok, 2] > ground_z_m
        self.image[px[ok][~high, 1], px[ok][~high, 0]] = (90, 90, 90)
        self.image[px[ok][high, 1], px[ok][high, 0]] = (200, 200, 200)

    def box(self, box: ReferenceBox | Detection3D, colour: BGR, thickness: int = 2) -> None:
        """The footprint of `box`, with a tick on its front half's centre line (its heading)."""
        corners = box_corners(box)[:4, :2]
        self._lines(corners, colour, thickness, closed=True)
        front = (corners[0] + corners[3]) / 2
        centre = corners.mean(axis=0)
        self._lines(np.stack([centre, front]), colour, 1, closed=False)

    def polyline(self, xy: npt.ArrayLike, colour: BGR) -> None:
        """A line through vehicle-frame points (K x 2)."""
        self._lines(xy, colour, 1, closed=False)

    def ego(self) -> None:
        """The vehicle, drawn last so that nothing hides it."""
        tri = self.to_px(np.array([[2.0, 0.0], [-1.5, 1.0], [-1.5, -1.0]]))
        cv2.fillPoly(self.image, [tri], (255, 200, 0), cv2.LINE_AA)


# -- one frame ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrawnBox:
    """A box to draw in `colour`, labelled `text` when given, with the detector's 2D box when
    given (`camera_box`)."""

    box: ReferenceBox | Detection3D
    colour: BGR
    text: str | None = None
    thickness: int = 1
    camera_box: CameraBox | None = None


@dataclass(frozen=True)
class TrackMark:
    """A tracked object: its id, colour, top centre (vehicle frame, m) and where it went
    (K x 2 vehicle-frame centres, oldest first)."""

    track_id: int
    colour: BGR
    top: tuple[float, float, float]
    trail: FloatArray


def _camera_panel(
    image: ImageArray,
    camera: CameraModel,
    camera_from_vehicle: RigidTransform,
    boxes: Sequence[DrawnBox],
    tracks: Sequence[TrackMark],
    *,
    scale: float,
) -> ImageArray:
    """The camera image resized by `scale` (drawn after resizing, so lines and text stay
    sharp) with the boxes and labels."""
    out = image.copy()
    if scale != 1.0:
        resized = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        out = np.asarray(resized, dtype=np.uint8)
    ranged: list[tuple[float, Label]] = []
    for item in boxes:
        anchor = draw_box_on_image(
            out,
            item.box,
            camera,
            camera_from_vehicle,
            item.colour,
            thickness=item.thickness,
            pixel_scale=scale,
        )
        b = item.camera_box
        if b is not None:
            height, width = out.shape[:2]
            # A side beyond the image is drawn just off it: the rectangle stays what shows of
            # the box (the schema allows any finite edge, and OpenCV takes int32).
            x1, x2 = (round(min(max(v * scale, -1.0), width)) for v in (b.x1, b.x2))
            y1, y2 = (round(min(max(v * scale, -1.0), height)) for v in (b.y1, b.y2))
            cv2.rectangle(out, (x1, y1), (x2, y2), CAMERA_BOX_BGR, 1)
            if (
                max(x1, x2) >= 0
                and min(x1, x2) < width
                and max(y1, y2) >= 0
                and min(y1, y2) < height
            ):
                anchor = (x1, y1)
        if item.text and anchor is not None:
            distance = math.hypot(item.box.center[0], item.box.center[1])
            ranged.append((distance, Label(item.text, anchor, item.colour)))
    # The nearest objects' labels first: they get the spots at their boxes, the far ones (small,
    # crowded near the horizon) stack above them.
    labels = [label for _, label in sorted(ranged, key=lambda p: p[0])]
    for t in tracks:
        uv, depth = camera.project(camera_from_vehicle.apply(np.array([t.top])))
        if depth[0] > 1.0 and np.all(np.isfinite(uv)) and camera.in_image(uv)[0]:
            u, v = (float(c) * scale for c in uv[0])
            labels.append(Label(f"#{t.track_id}", (u, v), t.colour))
    place_labels(out, labels)
    return out


def _bev_panel(
    size_px: int, points: npt.ArrayLike, boxes: Sequence[DrawnBox], tracks: Sequence[TrackMark]
) -> ImageArray:
    bev = BirdEyeView(size_px)
    bev.points(points)
    for item in boxes:
        bev.box(item.box, item.colour, item.thickness + 1)
    labels = []
    for t in tracks:
        bev.polyline(t.trail, t.colour)
        x, y = (int(v) for v in bev.to_px(t.trail[-1]))
        if 0 <= x < size_px and 0 <= y < size_px:  # not those behind the view
            cv2.circle(bev.image, (x, y), 2, (255, 255, 255), -1)
            labels.append(Label(f"#{t.track_id}", (x + 3.0, y - 3.0), t.colour))
    bev.ego()
    place_labels(bev.image, labels, scale=0.36)
    return bev.image


def _text_row(width: int, text: str, scale: float = 0.5) -> ImageArray:
    row = np.full((26, width, 3), _BACKGROUND_BGR, np.uint8)
    cv2.putText(row, text, (8, 18), _FONT, scale, (240, 240, 240), 1, cv2.LINE_AA)
    return row


def _legend_rows(width: int, items: Sequence[tuple[str, BGR]]) -> ImageArray:
    """Colour swatches with their meaning, wrapped into as many rows as the width needs."""
    rows: list[list[tuple[str, BGR, int]]] = [[]]
    x = 8
    for text, colour in items:
        (tw, _), _ = cv2.getTextSize(text, _FONT, 0.45, 1)
        need = 22 + tw + 18
        if x + need > width and rows[-1]:
            rows.append([])
            x = 8
        rows[-1].append((text, colour, x))
        x += need
    out = np.full((24 * len(rows) + 4, width, 3), _BACKGROUND_BGR, np.uint8)
    for i, row in enumerate(rows):
        y = 4 + 24 * i
        for text, colour, x0 in row:
            cv2.rectangle(out, (x0, y + 4), (x0 + 14, y + 16), colour, cv2.FILLED)
            cv2.putText(out, text, (x0 + 20, y + 15), _FONT, 0.45, (235, 235, 235), 1,
                        cv2.LINE_AA)  # fmt: skip
    return out


def frame_picture(
    image: ImageArray,
    points: npt.ArrayLike,
    camera: CameraModel,
    camera_from_vehicle: RigidTransform,
    boxes: Sequence[DrawnBox],
    *,
    tracks: Sequence[TrackMark] = (),
    title: str = "",
    legend: Sequence[tuple[str, BGR]] = (),
    min_height_px: int = 500,
) -> ImageArray:
    """One frame as a picture: `title` (a row above, when given), the camera `image` with the
    `boxes` and `tracks` drawn and labelled beside a bird's-eye view of the lidar `points`
    (N x >= 3, vehicle frame) with the same boxes, and the `legend` (text, colour) in rows
    below. Both panels are equally tall (so that neither leaves a blank strip), at least
    `min_height_px`: a lower image is enlarged to it, so that the view keeps enough pixels per
    metre. BGR uint8."""
    scale = max(1.0, min_height_px / image.shape[0])
    cam = _camera_panel(image, camera, camera_from_vehicle, boxes, tracks, scale=scale)
    bev = _bev_panel(cam.shape[0], points, boxes, tracks)
    gap = np.full((cam.shape[0], 6, 3), _BACKGROUND_BGR, np.uint8)
    panels = np.concatenate([cam, gap, bev], axis=1)
    rows = [panels]
    if title:
        rows.insert(0, _text_row(panels.shape[1], title))
    if legend:
        rows.append(_legend_rows(panels.shape[1], legend))
    return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.uint8)


def write_picture(path: Path, image: ImageArray, what: str = "the picture") -> None:
    """Writes `image` to `path` (PNG, or the format its suffix names), replacing an earlier one
    only once complete (replay.output.atomic_output).

    Raises:
        replay.output.OutputError: `path` cannot be written.
        replay.errors.ReplayError: OpenCV could not encode the image.
    """
    # Encoded here and written by Python: OpenCV's own writing crashed the process (SIGSEGV)
    # on a path that is not UTF-8, as a Linux file name may be.
    data = encode_image(image, path.suffix or ".png")
    if data is None:
        raise ReplayError(f"{path}: cannot write {what} (OpenCV could not encode it)")
    with atomic_output(path, what) as tmp:
        tmp.write_bytes(data)
