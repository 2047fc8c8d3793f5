"""Camera encoder: a COCO-pretrained 2D detector (YOLOX-Nano or Yolo-FastestV2) on any Engine.

The network runs through an :class:`~engines.engine.Engine` (ONNX Runtime, TensorRT, as
``engines.factory.EngineFactory.camera_encoder`` built it); the detector owns what surrounds it.
The stages (:meth:`CameraDetector.preprocess`, :meth:`~CameraDetector.infer`,
:meth:`~CameraDetector.decode`) are public so the pipeline can time them separately;
:meth:`CameraDetector.detect` runs all three.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engines.camera.labels import COCO_NAMES, merge_cyclists, node_label
from engines.engine import Engine
from engines.errors import EngineError

__all__ = ["KINDS", "Box2D", "CameraDetector", "Letterbox"]

KINDS: tuple[str, ...] = ("yolox", "yolo_fastestv2")

_NUM_CLASSES = len(COCO_NAMES)
_YOLOX_STRIDES = (8, 16, 32)
_YOLOX_PAD = 114
# Yolo-FastestV2 COCO anchors (w, h) in input pixels at 352x352, per stride (data README §4).
_FASTEST_ANCHORS: dict[int, tuple[tuple[float, float], ...]] = {
    16: ((12.64, 19.39), (37.88, 51.48), (55.71, 138.31)),
    32: ((126.91, 78.23), (131.57, 214.55), (279.92, 258.87)),
}
_FASTEST_STRIDES = (16, 32)
_FASTEST_COLS = 15 + _NUM_CLASSES  # 3x4 box + 3 objectness + 80 classes


@dataclass(frozen=True)
class Box2D:
    """A detection in original-image pixels (``x2``/``y2`` exclusive edges, clipped to the image).

    ``label`` is the node label (``"Car"``, ``"Pedestrian"``, ``"Cyclist"`` or a COCO name),
    ``class_id`` the COCO class id, ``score`` in [0, 1].
    """

    label: str
    class_id: int
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Letterbox:
    """How an image was mapped onto the model input.

    ``scale_x``/``scale_y`` are model-input pixels per original pixel (equal for a letterbox,
    content pasted at the top-left); ``width``/``height`` are the original image size in pixels.
    """

    scale_x: float
    scale_y: float
    width: int
    height: int


def _yolox_rows(size_h: int, size_w: int) -> int:
    return sum((size_h // s) * (size_w // s) for s in _YOLOX_STRIDES)


def _fastest_rows(size_h: int, size_w: int) -> int:
    return sum((size_h // s) * (size_w // s) for s in _FASTEST_STRIDES)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS; returns kept indices in descending score order (ties by index)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = np.clip(
            np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]),
            0,
            None,
        )
        iy = np.clip(
            np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]),
            0,
            None,
        )
        inter = ix * iy
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class CameraDetector:
    """A COCO 2D detector on one BGR camera image.

    Args:
        engine: the network: ``yolox_nano_coco_416`` or ``yolo_fastestv2_coco_352`` (or a model
            with the same head), e.g. from ``EngineFactory.camera_encoder``.
        kind: ``"yolox"``, ``"yolo_fastestv2"`` or ``"auto"`` (inferred from the output shape).
        score_threshold: ``objectness * class`` scores above this are kept, in [0, 1].
        nms_iou: IoU above which a lower-scored box of the same class is suppressed.

    Raises:
        EngineError: unknown ``kind``, thresholds out of range, or a model whose input/output
            shapes do not fit the kind; the message names the model.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        kind: str = "auto",
        score_threshold: float = 0.25,
        nms_iou: float = 0.45,
    ) -> None:
        name = engine.describe().model or "camera encoder"
        #: The model's name in messages (its file name for ONNX Runtime).
        self.name = name
        if kind != "auto" and kind not in KINDS:
            raise EngineError(f"{name}: unknown detector kind {kind!r}; use auto or {KINDS}")
        if not 0.0 <= score_threshold <= 1.0:
            raise EngineError(f"{name}: score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise EngineError(f"{name}: nms_iou must be in (0, 1], got {nms_iou}")
        self.engine = engine
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)

        if len(self.engine.inputs) != 1 or len(self.engine.outputs) != 1:
            raise EngineError(f"{name}: expected one input and one output tensor")
        spec = self.engine.inputs[0]
        dims = spec.shape
        if (
            len(dims) != 4
            or not all(isinstance(d, int) for d in dims)
            or int(dims[0]) < 1
            or dims[1] != 3
            or spec.dtype != "float32"
        ):
            raise EngineError(
                f"{name}: input {spec.name!r} must be float32 [N,3,H,W] with static N, H, W; "
                f"got {spec.dtype} {dims}"
            )
        self.input_name = spec.name
        self._output_name = self.engine.outputs[0].name
        #: Images per engine call (engines.camera.batching makes batch-N copies of batch-1 models).
        self.batch_size = int(dims[0])
        self.input_height = int(dims[2])
        self.input_width = int(dims[3])

        out_shape = self.engine.outputs[0].shape
        inferred = self._infer_kind(out_shape)
        if kind == "auto":
            if inferred is None:
                raise EngineError(f"{name}: cannot infer detector kind from output {out_shape}")
            kind = inferred
        elif inferred is not None and inferred != kind:
            raise EngineError(f"{name}: output {out_shape} is a {inferred} head, not {kind}")
        self.kind = kind

        h, w = self.input_height, self.input_width
        # Allocated once: the per-frame letterbox/resize target. Held while in use: the live
        # node preprocesses on two threads (a camera encoded ahead, one encoded in line).
        self._canvas = np.full((h, w, 3), _YOLOX_PAD, dtype=np.uint8)
        self._canvas_lock = threading.Lock()
        strides = _YOLOX_STRIDES if kind == "yolox" else _FASTEST_STRIDES
        self._grid_xy, self._grid_stride = self._grids(h, w, strides)
        # (anchor k, row, (w, h)): every row's anchor sizes for its stride; Yolo-FastestV2 only.
        self._anchor_wh = (
            np.stack(
                [
                    np.array([_FASTEST_ANCHORS[int(st)][k] for st in self._grid_stride], np.float32)
                    for k in range(3)
                ]
            )
            if kind == "yolo_fastestv2"
            else np.zeros((3, 0, 2), np.float32)
        )

    def _infer_kind(self, shape: tuple[int | str, ...]) -> str | None:
        h, w = self.input_height, self.input_width
        if len(shape) >= 2 and isinstance(shape[-1], int) and isinstance(shape[-2], int):
            rows, cols = shape[-2], shape[-1]
            if cols == 5 + _NUM_CLASSES and rows == _yolox_rows(h, w):
                return "yolox"
            if cols == _FASTEST_COLS and rows == _fastest_rows(h, w):
                return "yolo_fastestv2"
        return None

    @staticmethod
    def _grids(h: int, w: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Cell (x, y) and stride of every output row: levels in order, row-major y, x."""
        xy, st = [], []
        for s in strides:
            gy, gx = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
            xy.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
            st.append(np.full(gx.size, s))
        return np.concatenate(xy).astype(np.float32), np.concatenate(st).astype(np.float32)

    def _check_image(self, image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray):
            raise EngineError(
                f"{self.name}: image must be a numpy array, got {type(image).__name__}"
            )
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise EngineError(f"{self.name}: image must be HxWx3 BGR, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise EngineError(f"{self.name}: image must be uint8, got {image.dtype}")

    def preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Maps a BGR uint8 HxWx3 image onto the model input.

        Returns:
            A new float32 (1, 3, H_in, W_in) tensor and the :class:`Letterbox` to map boxes back.

        Raises:
            EngineError: the image is not an HxWx3 uint8 array.
        """
        self._check_image(image_bgr)
        with self._canvas_lock:
            return self._letterbox(image_bgr)

    def _letterbox(self, image_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        h, w = image_bgr.shape[:2]
        S_h, S_w = self.input_height, self.input_width
        canvas = self._canvas
        if self.kind == "yolox":
            r = min(S_h / h, S_w / w)
            # int() truncation, exactly as YOLOX's preproc: rounding shifts the image by a pixel
            # and measurably changes scores (a KITTI car went from 0.50 to below 0.3).
            # max(1, ...): a very thin image would otherwise truncate to a zero-sized resize.
            nw, nh = max(1, int(w * r)), max(1, int(h * r))
            resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
            canvas[:nh, :nw] = resized
            canvas[nh:, :] = _YOLOX_PAD
            canvas[:nh, nw:] = _YOLOX_PAD
            tensor = canvas.transpose(2, 0, 1)[None].astype(np.float32)
            return tensor, Letterbox(scale_x=r, scale_y=r, width=w, height=h)
        cv2.resize(image_bgr, (S_w, S_h), dst=canvas, interpolation=cv2.INTER_LINEAR)
        tensor = canvas.transpose(2, 0, 1)[None].astype(np.float32)
        tensor *= np.float32(1.0 / 255.0)
        return tensor, Letterbox(scale_x=S_w / w, scale_y=S_h / h, width=w, height=h)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Runs the network on one preprocessed (1, 3, H, W) tensor; returns its raw output.

        Raises:
            EngineError: wrong tensor dtype/shape or an inference failure.
        """
        if self.batch_size != 1:
            return self.infer_batch([tensor])[0]
        return self.engine.run({self.input_name: tensor})[self._output_name]

    def infer_batch(self, tensors: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Raw outputs of several preprocessed (1, 3, H, W) tensors (one per camera), in
        ``batch_size`` images per engine call; a short last call is padded with blank images.

        Raises:
            EngineError: wrong tensor dtype/shape or an inference failure.
        """
        if self.batch_size == 1:
            return [self.infer(t) for t in tensors]
        name = self._output_name
        outputs: list[np.ndarray] = []
        for start in range(0, len(tensors), self.batch_size):
            chunk = list(tensors[start : start + self.batch_size])
            count = len(chunk)
            chunk += [np.zeros_like(chunk[0])] * (self.batch_size - count)
            raw = self.engine.run({self.input_name: np.concatenate(chunk)})[name]
            outputs += [raw[i : i + 1] for i in range(count)]
        return outputs

    def decode(self, raw: np.ndarray, letterbox: Letterbox) -> list[Box2D]:
        """Turns a raw network output into boxes in original-image pixels.

        Thresholds ``objectness * class`` scores (every class above the threshold yields a
        candidate), applies class-wise NMS, clips to the image, merges riders into
        ``"Cyclist"`` boxes and sorts by score descending (ties by class, then position).

        Raises:
            EngineError: ``raw`` does not have the model's output shape.
        """
        rows = self._grid_xy.shape[0]
        cols = 5 + _NUM_CLASSES if self.kind == "yolox" else _FASTEST_COLS
        if raw.size != rows * cols:
            raise EngineError(
                f"{self.name}: raw output has shape {raw.shape}, expected {rows}x{cols} values"
            )
        out = raw.reshape(rows, cols).astype(np.float32, copy=False)
        # A model gone wrong (inf, NaN or huge outputs) overflows the decoding: its boxes are
        # left out below, not warned about on stderr once per frame.
        with np.errstate(over="ignore", invalid="ignore"):
            if self.kind == "yolox":
                boxes, scores, class_ids = self._decode_yolox(out)
            else:
                boxes, scores, class_ids = self._decode_fastest(out)
            finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)

        boxes = boxes.astype(np.float64)
        boxes[:, [0, 2]] /= letterbox.scale_x
        boxes[:, [1, 3]] /= letterbox.scale_y
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0.0, letterbox.width)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0.0, letterbox.height)
        valid = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, class_ids = boxes[valid], scores[valid].astype(np.float64), class_ids[valid]

        if len(scores):
            # Class-wise NMS in one pass: offset each class far apart so boxes of different
            # classes never overlap.
            offset = class_ids.astype(np.float64)[:, None] * (
                2.0 * max(letterbox.width, letterbox.height) + 1.0
            )
            keep = _nms(boxes + offset, scores, self.nms_iou)
            boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
            boxes, scores, class_ids = merge_cyclists(boxes, scores, class_ids)

        order = np.lexsort((boxes[:, 1], boxes[:, 0], class_ids, -scores))
        return [
            Box2D(
                label=node_label(int(class_ids[i])),
                class_id=int(class_ids[i]),
                score=float(scores[i]),
                x1=float(boxes[i, 0]),
                y1=float(boxes[i, 1]),
                x2=float(boxes[i, 2]),
                y2=float(boxes[i, 3]),
            )
            for i in order
        ]

    def _decode_yolox(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Class scores are <= 1, so obj * cls > t implies obj > t: filtering rows on objectness
        # first is exact and skips the full rows x 80 product on the (many) empty anchors.
        rows = np.flatnonzero(out[:, 4] > self.score_threshold)
        cls_scores = out[rows, 4:5] * out[rows, 5:]
        hit, cls = np.nonzero(cls_scores > self.score_threshold)
        if hit.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        anchor = rows[hit]
        o = out[anchor]
        s = self._grid_stride[anchor]
        cx = (o[:, 0] + self._grid_xy[anchor, 0]) * s
        cy = (o[:, 1] + self._grid_xy[anchor, 1]) * s
        bw = np.exp(o[:, 2]) * s
        bh = np.exp(o[:, 3]) * s
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return boxes, cls_scores[hit, cls], cls.astype(np.int64)

    def _decode_fastest(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        all_boxes, all_scores, all_cls = [], [], []
        for k in range(3):
            # Softmax class scores are <= 1: the objectness prefilter is exact (see YOLOX).
            rows = np.flatnonzero(out[:, 12 + k] > self.score_threshold)
            cls_scores = out[rows, 12 + k : 13 + k] * out[rows, 15:]
            hit, cls = np.nonzero(cls_scores > self.score_threshold)
            if hit.size == 0:
                continue
            cell = rows[hit]
            t = out[cell, 4 * k : 4 * k + 4]
            s = self._grid_stride[cell]
            cx = (t[:, 0] * 2 - 0.5 + self._grid_xy[cell, 0]) * s
            cy = (t[:, 1] * 2 - 0.5 + self._grid_xy[cell, 1]) * s
            bw = (t[:, 2] * 2) ** 2 * self._anchor_wh[k, cell, 0]
            bh = (t[:, 3] * 2) ** 2 * self._anchor_wh[k, cell, 1]
            all_boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
            all_scores.append(cls_scores[hit, cls])
            all_cls.append(cls.astype(np.int64))
        if not all_boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_cls)

    def detect(self, image: np.ndarray) -> list[Box2D]:
        """Detects objects in one BGR uint8 HxWx3 image; boxes in its pixels, best first.

        Raises:
            EngineError: a bad image or an inference failure.
        """
        tensor, letterbox = self.preprocess(image)
        return self.decode(self.infer(tensor), letterbox)
