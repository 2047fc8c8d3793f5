"""Train the synthetic-drive camera detector and export it to ONNX.

    python -m replay.training.train_detector --seed 0 --out engines/models/synth_detector.onnx

Renders `--images` camera images of random synthetic worlds (`--scenes`, by default the simple and
the rich world in turn; replay.synth.world, ideal pinhole: the
pipeline undistorts before the detector), letterboxes them as the YOLOX preprocessing does
(the box of an object cut off by the image edge is extended past that edge by `EDGE_EXTEND_PX`,
so the predicted box reaches the edge once clipped: the fusion engine anchors such an object
at its far end only when its box touches the edge),
trains `TinyYolox` for `--steps` Adam steps (batch `--batch`) on 2 CPU threads and exports
opset 17, static shape. Everything is seeded from `--seed`. Needs torch (a training tool: the
run time only needs the exported file). Prints progress (a CLI).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as F  # noqa: N812 - the usual torch spelling

from engines.camera.synth_graph import (
    CLASS_IDS,
    INPUT_HEIGHT,
    INPUT_WIDTH,
    STRIDES,
    ExportWrapper,
    TinyYolox,
)
from replay.synth.world import (
    CAMERA_NAME,
    Box2DTruth,
    check_world_options,
    make_world,
    render_camera,
    synth_rig,
)

__all__ = ["EDGE_EXTEND_PX", "build_targets", "letterbox", "main", "render_dataset", "train"]

_PAD = 114
_MIN_VISIBLE = 0.35
#: Original-image pixels a training box touching the image edge is extended beyond it.
EDGE_EXTEND_PX = 16.0
_LEVEL_LIMITS = (40.0, 100.0)  # box max side (input px) below which stride 8, else 16, else 32


def letterbox(image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], float]:
    """The YOLOX letterbox of `image` onto the model input (top-left, pad 114) and its scale."""
    h, w = image.shape[:2]
    r = min(INPUT_HEIGHT / h, INPUT_WIDTH / w)
    nw, nh = max(1, int(w * r)), max(1, int(h * r))
    canvas = np.full((INPUT_HEIGHT, INPUT_WIDTH, 3), _PAD, np.uint8)
    canvas[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, r


def _extend_cut(box: Box2DTruth, width: int, height: int) -> tuple[float, float, float, float]:
    """The box (original pixels) with each side that touches the image edge moved
    `EDGE_EXTEND_PX` beyond it: a detector trained on the clipped box stops a pixel or more short
    of the edge about half the time, and then the object no longer looks cut off."""
    ext, edge = EDGE_EXTEND_PX, 0.5
    return (
        box.x1 - ext if box.x1 <= edge else box.x1,
        box.y1 - ext if box.y1 <= edge else box.y1,
        box.x2 + ext if box.x2 >= width - edge else box.x2,
        box.y2 + ext if box.y2 >= height - edge else box.y2,
    )


#: The rich world's labels the detector's classes take in: a van is boxed as a car (as a COCO
#: detector does); a truck is ignored (neither positive nor negative).
_LABEL_AS = {"Van": "Car"}


def _class_id(label: str, visible: float) -> int:
    name = _LABEL_AS.get(label, label)
    if visible < _MIN_VISIBLE or name not in CLASS_IDS:
        return -1
    return CLASS_IDS[name]


def render_dataset(
    count: int, seed: int, scenes: tuple[str, ...] = ("simple",)
) -> tuple[npt.NDArray[np.uint8], list[npt.NDArray[np.float32]]]:
    """`count` letterboxed renders (N, H, W, 3) and their boxes (M x 5: x1 y1 x2 y2 class, input
    pixels, sides cut off by the image edge extended past it; class -1 = ignore: too occluded
    or not a class), 20 from each world, the worlds taking turns through `scenes`."""
    rng = np.random.Generator(np.random.PCG64(seed))
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    images = np.empty((count, INPUT_HEIGHT, INPUT_WIDTH, 3), np.uint8)
    targets = []
    per_world = 20
    world = make_world(rng, 30.0)
    for i in range(count):
        if i % per_world == 0:
            world = make_world(rng, 30.0, scene=scenes[(i // per_world) % len(scenes)])
        t = float(rng.uniform(0.0, 30.0))
        image, boxes = render_camera(world, t, camera, vehicle_from_camera, distort=False)  # type: ignore[arg-type]
        images[i], r = letterbox(image)
        rows = [
            [*(v * r for v in _extend_cut(b, image.shape[1], image.shape[0])),
             _class_id(b.label, b.visible)]
            for b in boxes
            if b.visible > 0.02
        ]  # fmt: skip
        targets.append(np.array(rows, np.float32).reshape(-1, 5))
    return images, targets


def _grids() -> list[tuple[int, int, int]]:
    return [(INPUT_HEIGHT // s, INPUT_WIDTH // s, s) for s in STRIDES]


def build_targets(boxes: npt.NDArray[np.float32], classes: int = 3) -> dict[str, np.ndarray]:
    """Per-level targets of one image, flattened over all rows (levels in order): `obj` (1 =
    positive, 0 = negative, -1 = ignored), `reg` (dx, dy, log_w, log_h) and `cls` (index)."""
    grids = _grids()
    n = sum(gh * gw for gh, gw, _ in grids)
    obj = np.zeros(n, np.float32)
    reg = np.zeros((n, 4), np.float32)
    cls = np.zeros(n, np.int64)
    area = np.full(n, np.inf, np.float32)
    offsets = np.cumsum([0] + [gh * gw for gh, gw, _ in grids])
    for x1, y1, x2, y2, c in boxes:
        w, h = x2 - x1, y2 - y1
        if w < 2 or h < 2:
            continue
        side = max(w, h)
        level = 0 if side < _LEVEL_LIMITS[0] else (1 if side < _LEVEL_LIMITS[1] else 2)
        gh, gw, s = grids[level]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        gx0, gy0 = int(cx // s), int(cy // s)
        for gy in range(gy0 - 1, gy0 + 2):
            for gx in range(gx0 - 1, gx0 + 2):
                if not (0 <= gx < gw and 0 <= gy < gh):
                    continue
                px, py = (gx + 0.5) * s, (gy + 0.5) * s
                centre = gx == gx0 and gy == gy0
                inside = (
                    x1 <= px <= x2
                    and y1 <= py <= y2
                    and abs(px - cx) <= 1.5 * s
                    and abs(py - cy) <= 1.5 * s
                )
                if not (centre or inside):
                    continue
                k = offsets[level] + gy * gw + gx
                if c < 0:
                    if obj[k] == 0:
                        obj[k] = -1
                    continue
                if w * h > area[k]:
                    continue
                area[k] = w * h
                obj[k] = 1
                reg[k] = (cx / s - gx, cy / s - gy, math.log(w / s), math.log(h / s))
                cls[k] = int(c)
    return {"obj": obj, "reg": reg, "cls": cls}


def _loss(
    model: TinyYolox, images: torch.Tensor, obj: torch.Tensor, reg: torch.Tensor, cls: torch.Tensor
) -> torch.Tensor:
    levels = model(images)
    out = torch.cat([lv.reshape(lv.shape[0], lv.shape[1], -1).permute(0, 2, 1) for lv in levels], 1)
    pos = obj > 0.5
    valid = obj >= 0
    obj_loss = F.binary_cross_entropy_with_logits(out[..., 4][valid], obj[valid], reduction="sum")
    npos = max(1, int(pos.sum()))
    reg_loss = F.l1_loss(out[..., :4][pos], reg[pos], reduction="sum")
    onehot = F.one_hot(cls[pos], model.classes).to(out.dtype)
    cls_loss = F.binary_cross_entropy_with_logits(out[..., 5:][pos], onehot, reduction="sum")
    return (obj_loss + 5.0 * reg_loss + cls_loss) / npos


def train(
    *,
    seed: int,
    images: int,
    steps: int,
    batch: int,
    lr: float = 3e-3,
    log: Callable[[str], None] | None = None,
    scenes: tuple[str, ...] = ("simple",),
) -> TinyYolox:
    """A trained model (deterministic for a seed on a given machine) on renders of `scenes`;
    `log` is told the render time and every 25th step's loss (None: nothing is said)."""
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    t0 = time.monotonic()
    data, boxes = render_dataset(images, seed, scenes)
    targets = [build_targets(b) for b in boxes]
    obj_all = torch.from_numpy(np.stack([t["obj"] for t in targets]))
    reg_all = torch.from_numpy(np.stack([t["reg"] for t in targets]))
    cls_all = torch.from_numpy(np.stack([t["cls"] for t in targets]))
    if log is not None:
        log(f"rendered {images} images in {time.monotonic() - t0:.1f} s")
    model = TinyYolox()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1
    )
    gen = np.random.Generator(np.random.PCG64(seed + 1))
    model.train()
    for step in range(steps):
        idx = gen.choice(images, size=batch, replace=False)
        x = torch.from_numpy(data[idx]).permute(0, 3, 1, 2).float()
        gain = torch.from_numpy(gen.uniform(0.75, 1.25, (batch, 1, 1, 1)).astype(np.float32))
        x = (x * gain).clamp(0, 255)
        loss = _loss(model, x, obj_all[idx], reg_all[idx], cls_all[idx])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        if log is not None and (step % 25 == 0 or step == steps - 1):
            log(f"step {step:4d} loss {float(loss.detach()):.3f} ({time.monotonic() - t0:.0f} s)")
    model.eval()
    return model


def export(model: TinyYolox, out: Path) -> None:
    """ONNX export (opset 17, static [1, 3, H, W] input `images`, output `output`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, INPUT_HEIGHT, INPUT_WIDTH)
    torch.onnx.export(
        ExportWrapper(model).eval(),
        (dummy,),
        str(out),
        input_names=["images"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("engines/models/synth_detector.onnx"))
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument(
        "--scenes",
        default="simple,rich",
        help="synthetic worlds to render, comma-separated, taking turns (simple, rich)",
    )
    args = parser.parse_args(argv)
    scenes = tuple(s.strip() for s in args.scenes.split(",") if s.strip())
    try:
        for scene in scenes or ("",):
            check_world_options(scene)
    except ValueError as e:
        parser.error(f"--scenes: {e}")
    t0 = time.monotonic()
    model = train(
        seed=args.seed,
        images=args.images,
        steps=args.steps,
        batch=args.batch,
        log=lambda line: print(line, flush=True),
        scenes=scenes,
    )
    export(model, args.out)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) "
        f"in {time.monotonic() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
