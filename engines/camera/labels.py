"""COCO class names and their mapping to the node's labels (KITTI-style classes).

The node reports ``"Car"``, ``"Pedestrian"`` and ``"Cyclist"`` like KITTI; every other COCO class
keeps its COCO name. A COCO detector sees a KITTI cyclist as a *person* box over a *bicycle* box,
so :func:`merge_cyclists` fuses such pairs into a single bicycle-class box (label ``"Cyclist"``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BICYCLE_CLASS_ID",
    "CAR_CLASS_ID",
    "COCO_NAMES",
    "NODE_LABELS",
    "PERSON_CLASS_ID",
    "merge_cyclists",
    "node_label",
]

# Same order and spelling as camera_detector/coco.names (darknet spelling: "motorbike",
# "aeroplane", "sofa", ...); index = class id of both detectors.
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa", "pottedplant",
    "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

PERSON_CLASS_ID = 0
BICYCLE_CLASS_ID = 1
CAR_CLASS_ID = 2

# COCO name -> node label for the classes the node renames; all others keep the COCO name.
NODE_LABELS: dict[str, str] = {"person": "Pedestrian", "car": "Car", "bicycle": "Cyclist"}


def node_label(class_id: int) -> str:
    """The node label of a COCO class id (0-79).

    Raises:
        ValueError: ``class_id`` is outside 0..79.
    """
    if not 0 <= class_id < len(COCO_NAMES):
        raise ValueError(f"COCO class id must be in 0..{len(COCO_NAMES) - 1}, got {class_id}")
    name = COCO_NAMES[class_id]
    return NODE_LABELS.get(name, name)


def merge_cyclists(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    *,
    min_overlap: float = 0.25,
    min_x_overlap: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fuses each rider (person box over a bicycle box) into one bicycle-class box.

    A person and a bicycle form a rider when the person's box covers at least ``min_overlap`` of
    the bicycle box's area, their horizontal extents overlap by at least ``min_x_overlap`` of the
    narrower box, and the person's centre is above the bicycle's centre (image y grows
    downwards). Pairs are matched one-to-one, strongest overlap first. The merged box is the
    union of the two boxes with the higher score and the bicycle class id (node label
    ``"Cyclist"``); the person box is dropped.

    Args:
        boxes: (N, 4) float ``x1, y1, x2, y2`` in pixels.
        scores: (N,) float scores.
        class_ids: (N,) int COCO class ids.
        min_overlap: intersection / bicycle-box area needed for a pair.
        min_x_overlap: horizontal overlap / narrower width needed for a pair.

    Returns:
        ``(boxes, scores, class_ids)`` with riders merged; other rows are unchanged and keep
        their order (a merged box takes the bicycle's position).

    Raises:
        ValueError: the arrays' shapes disagree.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(class_ids):
        raise ValueError(
            f"boxes/scores/class_ids lengths differ: {len(boxes)}, {len(scores)}, {len(class_ids)}"
        )
    persons = np.flatnonzero(class_ids == PERSON_CLASS_ID)
    bikes = np.flatnonzero(class_ids == BICYCLE_CLASS_ID)
    if len(persons) == 0 or len(bikes) == 0:
        return boxes.copy(), scores.copy(), class_ids.copy()

    p = boxes[persons][:, None, :]  # (P, 1, 4)
    b = boxes[bikes][None, :, :]  # (1, B, 4)
    ix = np.clip(np.minimum(p[..., 2], b[..., 2]) - np.maximum(p[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(p[..., 3], b[..., 3]) - np.maximum(p[..., 1], b[..., 1]), 0, None)
    bike_area = np.maximum((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), 1e-9)
    narrower = np.maximum(
        np.minimum(p[..., 2] - p[..., 0], b[..., 2] - b[..., 0]),
        1e-9,
    )
    overlap = ix * iy / bike_area
    p_cy = (p[..., 1] + p[..., 3]) / 2
    b_cy = (b[..., 1] + b[..., 3]) / 2
    ok = (overlap >= min_overlap) & (ix / narrower >= min_x_overlap) & (p_cy < b_cy)

    out_boxes = boxes.copy()
    out_scores = scores.copy()
    drop = np.zeros(len(boxes), dtype=bool)
    used_p: set[int] = set()
    used_b: set[int] = set()
    pi, bi = np.nonzero(ok)
    # Strongest overlap first; ties broken by index so the result is deterministic.
    order = np.lexsort((bi, pi, -overlap[pi, bi]))
    for k in order:
        i, j = int(pi[k]), int(bi[k])
        if i in used_p or j in used_b:
            continue
        used_p.add(i)
        used_b.add(j)
        pr, br = int(persons[i]), int(bikes[j])
        out_boxes[br, :2] = np.minimum(boxes[pr, :2], boxes[br, :2])
        out_boxes[br, 2:] = np.maximum(boxes[pr, 2:], boxes[br, 2:])
        out_scores[br] = max(scores[pr], scores[br])
        drop[pr] = True
    keep = ~drop
    return out_boxes[keep], out_scores[keep], class_ids[keep].copy()
