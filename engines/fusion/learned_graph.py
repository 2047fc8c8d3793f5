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
    bucket_onnx_path,
)
from engines.onnx_ops import export_static_onnx

__all__ = [
    "LearnedFusionExport",
    "LearnedFusionNet",
    "decode_heads",
    "export_bev",
    "export_learned_fusion_onnx",
    "folded_pillar_weight",
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

    def backbone(self, bev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads (heatmap logits, regression) of a BEV feature image."""
        x1 = self.stage1(bev)
        x2 = self.up2(self.stage2(x1))
        x = self.shared(torch.cat([x1, x2], dim=1))
        return self.heatmap(x), self.regression(x)

    def forward(
        self, pillars: torch.Tensor, pillar_points: torch.Tensor, pillar_cells: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone(self.bev(pillars, pillar_points, pillar_cells))


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


def folded_pillar_weight(net: LearnedFusionNet) -> torch.Tensor:
    """[F + 1, copies * C]: ``net``'s pillar linear layer with its batch norm (eval statistics)
    folded in and the bias as the last row; with ``attribution`` the camera-free copy's columns
    (the painted inputs' weights zeroed) after the real one's."""
    linear, norm = net.pfn_linear, net.pfn_norm
    assert norm.running_mean is not None and norm.running_var is not None
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    weight = linear.weight * scale[:, None]  # [C, F]
    bias = (norm.bias - norm.running_mean * scale)[:, None]
    copies = [weight]
    if net.config.attribution:
        keep = torch.ones(weight.shape[1], dtype=weight.dtype, device=weight.device)
        keep[net.config.painted_slice] = 0.0
        copies.append(weight * keep)
    return torch.cat([torch.cat([w, bias], dim=1) for w in copies], dim=0).t()


def export_bev(
    net: LearnedFusionNet,
    pillars: torch.Tensor,
    pillar_points: torch.Tensor,
    pillar_cells: torch.Tensor,
) -> torch.Tensor:
    """``net``'s BEV feature image of one sweep (``pillars [P, K, F]``, ``pillar_points [P]``,
    ``pillar_cells [P]``) as the export computes it: [copies, pfn_channels, nx, ny], the real
    input first and (``attribution``) its camera-free copy.

    The values of :meth:`LearnedFusionNet.bev` in eval mode (to float rounding) for a fraction
    of the work on the padded static shape (a KITTI scan fills 1,300 of the 6,000 pillars):
    - the batch norm is folded into the linear layer (:func:`folded_pillar_weight`);
    - the camera-free copy is the linear layer with its painted columns zeroed, stacked beside
      the real one: both copies come out of one matmul over the pillars, not a second batch;
    - a point's membership of its pillar multiplies its input, with a constant 1 appended that
      carries the folded bias, so a padding slot comes out exactly 0 (it never wins the max
      over the pillar's points) with no mask over the wider output; the ReLU follows the max;
    - the canvas is gathered, not scattered: each cell's pillar number is scattered into a
      vector of cells (padding pillars and pillars off the grid into a spare one, dropped, as
      ``bev`` drops them), then whole feature rows are gathered by it and transposed once.
      ONNX Runtime scattered the [copies * C, nx * ny] canvas element by element (2.3 ms on
      this CPU at the packaged shapes) and gathers rows for 0.4 ms.
    """
    p, k, _ = pillars.shape
    nx, ny = net.config.grid_size
    weight = folded_pillar_weight(net).to(pillars.dtype)
    slots = torch.arange(k, device=pillars.device).reshape(1, k)
    member = (slots < pillar_points.reshape(p, 1)).to(pillars.dtype).unsqueeze(-1)
    inputs = torch.cat([pillars, torch.ones_like(pillars[:, :, :1])], dim=-1) * member
    # The ReLU after the max: the same (it is monotonic), on K times fewer values.
    feats = torch.relu((inputs @ weight).amax(dim=1))  # [P, copies * C]
    # Each cell's pillar (P: none, the zero row appended below).
    spare = nx * ny  # padding pillars and pillars off the grid land here, then are cut off
    on_grid = (pillar_cells >= 0) & (pillar_cells < spare)
    cells = torch.where(on_grid, pillar_cells, torch.full_like(pillar_cells, spare))
    order = torch.arange(p, device=pillars.device, dtype=torch.int64)
    pillar_of_cell = torch.full((spare + 1,), p, dtype=torch.int64, device=pillars.device)
    pillar_of_cell = pillar_of_cell.scatter(0, cells, order)[:spare]
    rows = torch.cat([feats, torch.zeros_like(feats[:1])], dim=0)  # [P + 1, nC]
    canvas = rows[pillar_of_cell].t()
    return canvas.reshape(-1, net.config.pfn_channels, nx, ny)


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
        heat, reg = self.net.backbone(export_bev(self.net, pillars, pillar_points, pillar_cells))
        detections, index = decode_heads(heat[0], reg[0], cfg)
        if cfg.attribution:
            free = torch.sigmoid(heat[1].reshape(-1))[index]
        else:
            free = torch.full_like(detections[:, 9], float("nan"))
        return detections, free


def example_inputs(
    config: LearnedFusionConfig, pillars: int | None = None
) -> tuple[torch.Tensor, ...]:
    """Zero inputs of the export's static shapes, at ``pillars`` (default ``max_pillars``)."""
    nx, ny = config.grid_size
    p = config.max_pillars if pillars is None else pillars
    k = config.points_per_pillar
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
    (opset :data:`LEARNED_ONNX_OPSET`, static shapes; written atomically), the same graph at
    the config's smaller pillar counts beside it (``bucket_onnx_path``; see
    ``engines.fusion.learned_buckets``), and its weights (``.pt``, for the torch backend).
    Returns ``path``."""
    path = Path(path)
    weights = path.with_suffix(".pt")
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, weights)
    export = LearnedFusionExport(net.eval())
    config = net.config
    for pillars in config.pillar_buckets[:-1]:
        _export(export, example_inputs(config, pillars), bucket_onnx_path(path, pillars))
    return _export(export, example_inputs(config), path)


def _export(export: LearnedFusionExport, inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    return export_static_onnx(
        export,
        inputs,
        path,
        LEARNED_INPUT_NAMES,
        LEARNED_OUTPUT_NAMES,
        opset=LEARNED_ONNX_OPSET,
        compact=True,
    )
