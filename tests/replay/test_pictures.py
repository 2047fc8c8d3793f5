"""The frame pictures of `perception demo` and `perception show`: labels that do not overlap,
boxes drawn on the image and in the bird's-eye view, no blank strip."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from perception.msgs.types import CameraBox, Detection3D
from replay.evaluation import ReferenceBox
from replay.pictures import (
    CAMERA_BOX_BGR,
    REFERENCE_BGR,
    BirdEyeView,
    DrawnBox,
    Label,
    class_colour,
    draw_box_on_image,
    frame_picture,
    place_labels,
)
from replay.synth.world import CAMERA_NAME, synth_rig


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def longest_blank_run(picture: npt.NDArray[np.generic]) -> int:
    """The most consecutive rows of one colour each (a blank strip)."""
    flat = picture.reshape(picture.shape[0], -1, 3)
    blank = np.all(flat == flat[:, :1], axis=(1, 2))
    best = run = 0
    for b in blank:
        run = run + 1 if b else 0
        best = max(best, run)
    return best


def test_labels_of_overlapping_boxes_do_not_overlap() -> None:
    image = np.full((200, 400, 3), 128, np.uint8)
    # Twelve labels naming nearly the same pixel (far cars crowded at the horizon).
    labels = [Label(f"Car 0.{i:02d}", (200.0 + i, 120.0 + i % 3), (0, 140, 255)) for i in range(12)]
    rects = place_labels(image, labels)
    assert len(rects) == 12
    for i, a in enumerate(rects):
        assert 0 <= a[0] < a[2] <= 400 and 0 <= a[1] < a[3] <= 200
        assert not any(_overlap(a, b) for b in rects[i + 1 :]), (a, rects)
    # Drawn on a background of their colour: the label colour covers the rectangles.
    x1, y1, x2, y2 = rects[0]
    patch = image[y1:y2, x1:x2].reshape(-1, 3)
    assert np.mean(np.all(patch == (0, 140, 255), axis=1)) > 0.5


def test_a_label_moved_off_its_anchor_gets_a_leader_line() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    labels = [Label("same place", (200.0, 150.0), (255, 255, 255)) for _ in range(6)]
    rects = place_labels(image, labels)
    moved = [r for r in rects if not (r[0] - 1 <= 200 <= r[2] and r[1] - 1 <= 150 <= r[3])]
    assert len(moved) >= 4
    # Outside the labels, what is lit is the leaders and the dot on the anchor.
    lit = image.max(axis=2) > 0
    for x1, y1, x2, y2 in rects:
        lit[y1:y2, x1:x2] = False
    assert lit[150, 200]
    assert np.count_nonzero(lit) > 2 * len(moved)


def test_a_box_beside_the_camera_is_clipped_not_dropped() -> None:
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    cam_from_vehicle = rig.transform(f"camera/{CAMERA_NAME}", "vehicle")
    image = np.zeros((camera.height, camera.width, 3), np.uint8)
    # A car alongside: its rear is behind the camera, its front in view.
    box = Detection3D("Car", 0.9, (1.0, 3.0, -0.9), (4.5, 1.8, 1.5), 0.0)
    anchor = draw_box_on_image(image, box, camera, cam_from_vehicle, (0, 255, 0))
    assert anchor is not None
    assert np.count_nonzero(image[..., 1]) > 100


def test_frame_picture_has_both_views_and_no_blank_strip() -> None:
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    cam_from_vehicle = rig.transform(f"camera/{CAMERA_NAME}", "vehicle")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (camera.height, camera.width, 3), np.uint8)
    points = np.column_stack([rng.uniform(0, 50, 3000), rng.uniform(-25, 25, 3000),
                              rng.uniform(-1.8, 0.5, 3000)])  # fmt: skip
    ref = ReferenceBox("Car", (15.0, 2.0, -0.9), (4.0, 1.7, 1.5), 0.1)
    det = Detection3D("Car", 0.8, (15.3, 2.1, -0.9), (4.1, 1.7, 1.5), 0.1)
    boxes = [DrawnBox(ref, REFERENCE_BGR), DrawnBox(det, class_colour("Car"), "Car 0.80")]
    legend = [("ground truth", REFERENCE_BGR), ("car", class_colour("Car"))]
    picture = frame_picture(
        image, points, camera, cam_from_vehicle, boxes, title="frame 0", legend=legend
    )
    # The image is enlarged to the view's 500 px; the view sits at its right, as tall.
    scale = 500 / camera.height
    assert picture.shape[1] == round(camera.width * scale) + 6 + 500
    assert picture.shape[0] == 26 + 500 + 28
    bev = picture[26 : 26 + 500, -500:]
    for colour in (REFERENCE_BGR, class_colour("Car")):
        assert np.count_nonzero(np.all(bev == colour, axis=2)) > 20, colour
    # No strip of blank rows under the camera image (the demo picture had one).
    assert longest_blank_run(picture[:, : picture.shape[1] // 2]) < 12


def test_thousands_of_labels_are_placed_in_seconds() -> None:
    """A run may hold 2,000 detections a frame: scored spot by spot in Python, their labels
    took about a minute a picture."""
    rng = np.random.default_rng(0)
    image = np.zeros((500, 1650, 3), np.uint8)
    labels = [
        Label(
            f"Pedestrian 0.{i % 100:02d}", (rng.uniform(0, 1650), rng.uniform(0, 500)), (0, 0, 255)
        )
        for i in range(2000)
    ]
    start = time.monotonic()
    rects = place_labels(image, labels)
    assert time.monotonic() - start < 10.0
    assert len(rects) == 2000
    # Still placed as before: the first labels, with room, do not overlap.
    assert not any(_overlap(rects[0], b) for b in rects[1:20])


def test_boxes_of_absurd_but_finite_size_or_place_are_drawn_clipped() -> None:
    """The schema allows any finite box: one 1e12 m long crossed the int32 OpenCV takes (a
    RuntimeWarning on stderr, and the box was not drawn), and a camera box 1e30 px wide made
    OpenCV raise."""
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    cam_from_vehicle = rig.transform(f"camera/{CAMERA_NAME}", "vehicle")
    colour = (0, 0, 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bev = BirdEyeView(500)
        # 2 m wide, along x through the whole view: its long sides are columns 240 and 260.
        bev.box(Detection3D("Car", 0.9, (20.0, 0.0, -0.9), (1e12, 2.0, 1.5), 0.0), colour)
        bev.box(Detection3D("Car", 0.9, (1e30, -1e30, 0.0), (4.0, 2.0, 1.5), 0.3), colour)
        for u in (240, 260):
            assert np.count_nonzero(np.all(bev.image[:, u - 1 : u + 2] == colour, axis=2)) > 450
        huge = CameraBox(CAMERA_NAME, -1e30, 100.0, 1e30, 1e30)
        det = Detection3D("Car", 0.9, (15.0, 0.0, -0.9), (4.0, 1.7, 1.5), 0.0)
        image = np.zeros((camera.height, camera.width, 3), np.uint8)
        picture = frame_picture(
            image,
            np.zeros((0, 3)),
            camera,
            cam_from_vehicle,
            [DrawnBox(det, colour, "Car", camera_box=huge)],
        )
    # Only the box's top edge is in the image: one row of its colour across it.
    scale = 500 / camera.height
    rows = np.nonzero(np.all(picture == CAMERA_BOX_BGR, axis=2).sum(axis=1) > camera.width)[0]
    assert list(rows) == [round(100 * scale)]


def test_a_picture_goes_to_a_path_that_is_not_utf8(tmp_path: Path) -> None:
    """OpenCV's own writing crashed the process (SIGSEGV) on such a path (`--out` of a folder
    whose name is not UTF-8, as a Linux name may be): written in a process of its own, so that
    a crash fails this test rather than ending the run."""
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/pictures-\xff"))
    folder.mkdir()
    code = (
        "import sys, numpy as np; from pathlib import Path; from replay.pictures import "
        "write_picture; write_picture(Path(sys.argv[1]) / '00000.png', "
        "np.full((20, 30, 3), 77, np.uint8))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, folder], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    read = cv2.imdecode(np.fromfile(folder / "00000.png", np.uint8), cv2.IMREAD_COLOR)
    assert read is not None and np.array_equal(read, np.full((20, 30, 3), 77, np.uint8))
