"""A tiny YOLOX-style detector for the synthetic drive's camera (torch).

Input `images`: float32 [1, 3, H, W] BGR 0-255, letterboxed (pad 114) as
`engines.camera.detector.CameraDetector(kind="yolox")` prepares it. Output `output`: float32
[1, N, 85] in the YOLOX layout that detector decodes: rows are the stride 8, 16, 32 grid cells
(row-major y, x), columns `dx, dy, log_w, log_h` (raw, in stride units), sigmoid objectness and
80 sigmoid COCO class scores, of which only person (0), bicycle (1) and car (2) are used (the
others are constant zeros).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CLASS_IDS", "INPUT_HEIGHT", "INPUT_WIDTH", "STRIDES", "TinyYolox"]

#: Model input size (pixels): a 1242 x 375 camera letterboxes to 635 x 192.
INPUT_HEIGHT = 192
INPUT_WIDTH = 640
STRIDES = (8, 16, 32)
#: Node label -> COCO class id of the output columns.
CLASS_IDS: dict[str, int] = {"Pedestrian": 0, "Cyclist": 1, "Car": 2}
_NUM_COCO = 80


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()
    )


class _Head(nn.Module):
    def __init__(self, cin: int, width: int, classes: int) -> None:
        super().__init__()
        self.stem = _conv(cin, width)
        self.out = nn.Conv2d(width, 5 + classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.out(self.stem(x))
        return y


class TinyYolox(nn.Module):
    """Backbone of strided 3x3 convs, three heads (strides 8/16/32). `forward` returns the raw
    per-level maps [B, 5 + classes, H/s, W/s]; `export_output` the decoded YOLOX layout."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.classes = classes
        self.s2 = nn.Sequential(_conv(3, 16, 2), _conv(16, 24, 2), _conv(24, 24))
        self.s8 = nn.Sequential(_conv(24, 48, 2), _conv(48, 48))
        self.s16 = nn.Sequential(_conv(48, 64, 2), _conv(64, 64))
        self.s32 = nn.Sequential(_conv(64, 96, 2), _conv(96, 96))
        self.heads = nn.ModuleList([_Head(48, 48, classes), _Head(64, 48, classes),
                                    _Head(96, 64, classes)])  # fmt: skip
        for head in self.heads:
            assert isinstance(head, _Head)
            bias = head.out.bias
            assert bias is not None
            nn.init.constant_(bias[4:], -4.0)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.s2(images * (1.0 / 255.0))
        p8 = self.s8(x)
        p16 = self.s16(p8)
        p32 = self.s32(p16)
        return [head(p) for head, p in zip(self.heads, (p8, p16, p32), strict=True)]

    def export_output(self, images: torch.Tensor) -> torch.Tensor:
        """[B, N, 85]: the YOLOX output layout (see the module docstring)."""
        rows = []
        for level in self.forward(images):
            b, c = level.shape[0], level.shape[1]
            rows.append(level.reshape(b, c, -1).permute(0, 2, 1))
        out = torch.cat(rows, dim=1)
        reg, obj, cls = out[..., :4], out[..., 4:5].sigmoid(), out[..., 5:].sigmoid()
        # Zero scores for the COCO classes the model does not have, as a pad: a zeros tensor
        # would be traced with the export's batch of 1 baked in, and the graph could not be
        # batched over cameras (engines.camera.batching).
        scores = torch.nn.functional.pad(cls, (0, _NUM_COCO - self.classes))
        return torch.cat([reg, obj, scores], dim=-1)


class ExportWrapper(nn.Module):
    """`export_output` as `forward`, for torch.onnx.export."""

    def __init__(self, model: TinyYolox) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.export_output(images)
