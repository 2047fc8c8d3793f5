"""The learned fusion engine: painted pillars -> BEV features -> CenterPoint-style head, in torch.

Camera and lidar meet at feature level: every lidar point carries what the camera said about it
(PointPainting, box-level: the score of each class's 2D boxes it projects into, and a flag for
"a camera saw this point"), and a learned pillar encoder (PointPillars' PointNet: linear, batch
norm, ReLU, max over the pillar's points) turns position, intensity and painted channels
together into one BEV feature image. A two-stage BEV backbone (the second stage twice coarser,
upsampled and concatenated) feeds a shared 3x3 conv and two 1x1 heads: a heatmap per class and
the regression channels of ``REGRESSION_CHANNELS`` (CenterPoint: sub-cell offset, z, log size,
sin/cos yaw, velocity).

The export (:class:`LearnedFusionExport`) decodes in the graph: sigmoid, 3x3 max-pool peak
picking and top-k (no NMS), so every backend returns the same fixed-size table. With
``attribution`` it also runs a camera-free copy of the input (painted channels zeroed) in the
same call, batched with the real one, and returns each peak's score there: what the detection
would score without the camera.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual torch spelling

from engines.fusion.learned_config import (
    LEARNED_INPUT_NAMES,
    LEARNED_ONNX_OPSET,
    LEARNED_OUTPUT_NAMES,
    REGRESSION_CHANNELS,
    LearnedFusionConfig,
)
from engines.onnx_ops import export_static_onnx

__all__ = [
    "LearnedFusionExport",
    "LearnedFusionNet",
    "decode_heads",
    "export_learned_fusion_onnx",
    "load_learned_export",
]

#: The heatmap's initial bias: sigmoid(-2.19) = 0.1, CenterNet's start against the many
#: background cells.
_HEAT_BIAS = -2.19


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class LearnedFusionNet(nn.Module):
    """Raw heads of a batch: ``forward(pillars [B, P, K, F], pillar_points [B, P] int,
    pillar_cells [B, P] int64) -> (heatmap logits [B, classes, hx, hy], regression
    [B, len(REGRESSION_CHANNELS), hx, hy])``."""

    def __init__(self, config: LearnedFusionConfig) -> None:
        super().__init__()
        self.config = config
        c = config.pfn_channels
        c1, c2 = config.channels
        self.pfn_linear = nn.Linear(config.point_features, c, bias=False)
        self.pfn_norm = nn.BatchNorm1d(c)
        self.stage1 = nn.Sequential(_conv(c, c1, config.head_stride), _conv(c1, c1))
        self.stage2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.up2 = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 2, stride=2, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
        )
        self.shared = _conv(2 * c1, c1)
        self.heatmap = nn.Conv2d(c1, len(config.classes), 1)
        self.regression = nn.Conv2d(c1, len(REGRESSION_CHANNELS), 1)
        assert self.heatmap.bias is not None
        nn.init.constant_(self.heatmap.bias, _HEAT_BIAS)

    def bev(
        self, pillars: torch.Tensor, pillar_points: torch.Tensor, pillar_cells: torch.Tensor
    ) -> torch.Tensor:
        """The scattered BEV feature image [B, pfn_channels, nx, ny]."""
        b, p, k, _ = pillars.shape
        x = self.pfn_linear(pillars)
        x = F.relu(self.pfn_norm(x.reshape(b * p * k, -1)).reshape(b, p, k, -1))
        # Padding rows are zeroed after the ReLU, so they never win the max.
        slots = torch.arange(k, device=pillars.device).reshape(1, 1, k)
        member = (slots < pillar_points.reshape(b, p, 1)).to(x.dtype)
        feats = (x * member.unsqueeze(-1)).amax(dim=2)  # [B, P, C]
        nx, ny = self.config.grid_size
        c = feats.shape[-1]
        # A zero canvas derived from the data: a torch.zeros of this static shape is folded
        # into a 6 MB constant of the ONNX export (the features are finite: ReLU outputs).
        canvas = (feats.sum(dim=(1, 2), keepdim=True) * 0.0).expand(b, c, nx * ny + 1)
        index = pillar_cells.reshape(b, 1, p).expand(b, c, p)
        # Under fp16 autocast the sum (so the canvas) is fp32 while the features are fp16.
        canvas = canvas.scatter(2, index, feats.transpose(1, 2).to(canvas.dtype))
        return canvas[:, :, : nx * ny].reshape(b, c, nx, ny)

    def forward(
        self, pillars: torch.Tensor, pillar_points: torch.Tensor, pillar_cells: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = self.stage1(self.bev(pillars, pillar_points, pillar_cells))
        x2 = self.up2(self.stage2(x1))
        x = self.shared(torch.cat([x1, x2], dim=1))
        return self.heatmap(x), self.regression(x)


def decode_heads(
    heat_logits: torch.Tensor, regression: torch.Tensor, config: LearnedFusionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Peaks of one sample's heads: (detections [max_detections, 11] as in
    ``LEARNED_OUTPUT_NAMES``, flat heatmap index [max_detections] of each peak)."""
    _, hx, hy = heat_logits.shape
    heat = torch.sigmoid(heat_logits)
    pooled = F.max_pool2d(heat.unsqueeze(0), 3, stride=1, padding=1).squeeze(0)
    peaks = heat * (heat >= pooled).to(heat.dtype)
    scores, index = torch.topk(peaks.reshape(-1), config.max_detections)
    cls = torch.div(index, hx * hy, rounding_mode="floor")
    cell = index - cls * (hx * hy)
    ix = torch.div(cell, hy, rounding_mode="floor")
    iy = cell - ix * hy
    reg = regression.reshape(len(REGRESSION_CHANNELS), hx * hy)
    r = torch.gather(reg, 1, cell.reshape(1, -1).expand(reg.shape[0], -1))
    size = config.cell_m
    x = config.x_range_m[0] + (ix.to(r.dtype) + r[0]) * size
    y = config.y_range_m[0] + (iy.to(r.dtype) + r[1]) * size
    dims = torch.exp(r[3:6].clamp(-5.0, 5.0))
    yaw = torch.atan2(r[6], r[7])
    rows = [x, y, r[2], dims[0], dims[1], dims[2], yaw, r[8], r[9], scores, cls.to(r.dtype)]
    return torch.stack(rows, dim=1), index


class LearnedFusionExport(nn.Module):
    """The deployable graph of one sweep: ``(pillars [P, K, F], pillar_points [P] int32,
    pillar_cells [P] int64) -> (detections [max_detections, 11], camera_free_score
    [max_detections])``."""

    def __init__(self, net: LearnedFusionNet) -> None:
        super().__init__()
        self.net = net
        self.config = net.config

    def forward(
        self, pillars: torch.Tensor, pillar_points: torch.Tensor, pillar_cells: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        batch = pillars.unsqueeze(0)
        counts = pillar_points.unsqueeze(0)
        cells = pillar_cells.unsqueeze(0)
        if cfg.attribution:
            keep = torch.ones(cfg.point_features, dtype=pillars.dtype, device=pillars.device)
            keep[cfg.painted_slice] = 0.0
            batch = torch.cat([batch, batch * keep], dim=0)
            counts = torch.cat([counts, counts], dim=0)
            cells = torch.cat([cells, cells], dim=0)
        heat, reg = self.net(batch, counts, cells)
        detections, index = decode_heads(heat[0], reg[0], cfg)
        if cfg.attribution:
            free = torch.sigmoid(heat[1].reshape(-1))[index]
        else:
            free = torch.full_like(detections[:, 9], float("nan"))
        return detections, free


def example_inputs(config: LearnedFusionConfig) -> tuple[torch.Tensor, ...]:
    """Zero inputs of the export's static shapes."""
    nx, ny = config.grid_size
    p, k = config.max_pillars, config.points_per_pillar
    return (
        torch.zeros(p, k, config.point_features),
        torch.zeros(p, dtype=torch.int32),
        torch.full((p,), nx * ny, dtype=torch.int64),
    )


def load_learned_export(weights_path: Path, config: LearnedFusionConfig) -> LearnedFusionExport:
    """The deployable graph of ``config`` with the weights a training run saved (the ``.pt``
    beside its export), for the torch backend.

    Raises:
        OSError: the file cannot be read.
        RuntimeError: the weights are not those of ``config``'s graph.
    """
    net = LearnedFusionNet(config)
    net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return LearnedFusionExport(net.eval())


def export_learned_fusion_onnx(net: LearnedFusionNet, path: Path) -> Path:
    """Exports the trained ``net`` (in eval mode) with in-graph decoding to ONNX at ``path``
    (opset :data:`LEARNED_ONNX_OPSET`, static shapes; written atomically), and its weights
    beside it (``.pt``, for the torch backend). Returns ``path``."""
    weights = Path(path).with_suffix(".pt")
    tmp = weights.with_name(weights.name + ".tmp")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, weights)
    return export_static_onnx(
        LearnedFusionExport(net.eval()),
        example_inputs(net.config),
        path,
        LEARNED_INPUT_NAMES,
        LEARNED_OUTPUT_NAMES,
        opset=LEARNED_ONNX_OPSET,
    )
