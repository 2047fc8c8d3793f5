"""Fusion engine: camera boxes + lidar points + camera projection -> 3D boxes, one torch graph.

The project's own graph of late "frustum" fusion, exported to ONNX with static shapes (padded
inputs with counts) so ONNX Runtime, TensorRT and torch run the same computation; exported at the
config's full shape and at smaller bucket shapes with the same outputs (``engines.fusion.buckets``).
It follows what a prototype learned on the KITTI frames (``shared/notes/fusion-findings.md``):

1. All points are projected into the image once; per 2D box a membership mask ``[B, N]`` keeps
   the points inside the slightly shrunk box, in front of the camera and above the ground.
2. Up to ``points_per_box`` members per box are gathered (a fixed, index-hashed subset when there
   are more) and histogrammed by camera depth. Occupied depth bins are linked into clusters
   along depth with a gap that grows with range. The object is the *nearest* cluster with enough
   points that covers at least ``min_width_coverage`` of the box width (lateral pixel columns),
   reaches the class's minimum height above the ground, is not deeper than the class's maximum
   length and whose depth agrees with the box height: the lidar sees through windows and over
   roofs, so the largest cluster (or the histogram mode) is often background.
3. The heading is searched over fixed candidates in [0, 90) degrees (then refined), minimising a
   trimmed mean distance of the sensor-facing outline points (nearest return per azimuth bin) to
   the nearest edge of their percentile-trimmed rectangle; the long axis picks yaw or yaw + 90.
   When the outline spans less than the class's ``yaw_fit_min_extent_m`` the heading is the
   prior (``FusionEngineConfig.prior_yaw_rad``: the vehicle x axis, i.e. the lane).
4. The centre is pushed back from the visible (sensor-facing) faces by the class size prior. An
   end cut off by the image edge, or hidden behind something nearer beside it in azimuth, is not
   used as an anchor. z is the ground plane (corrected by the lowest returns near the box) plus
   half the height.

Every step is a tensor op over fixed shapes; data-dependent choices are masks and ``where``.

Frames and units: points ``(x, y, z, intensity)`` and output boxes are in the vehicle frame
(x forward, y left, z up; the Velodyne frame for KITTI), metres and radians; 2D boxes are
original-image pixels ``(x1, y1, x2, y2)`` with x2/y2 exclusive. ``camera_from_vehicle`` maps
vehicle points to the camera frame (z forward, x right, y down) of the pinhole ``intrinsics``
(an undistorted/rectified image). The lidar sits at ``FusionEngineConfig.lidar_origin_xy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engines.exports import DEFAULT_EXPORT_DIR
from engines.fusion.config import (
    BIG,
    INPUT_NAMES,
    ONNX_OPSET,
    OUTPUT_NAMES,
    FusionEngineConfig,
    Shape,
    packaged_model_path,
)
from engines.onnx_ops import export_static_onnx, scatter_amax

__all__ = [
    "FusionEngine",
    "cached_fusion_engine_onnx",
    "export_fusion_engine_onnx",
    "export_packaged",
]

# Points above the class's largest height by more than this are overhangs (trees, signs); the
# margin absorbs ground-plane error.
_OVERHANG_MARGIN_M = 0.3
# Outline length behind a cut end that gives the direction the object continues in.
_CUT_TAIL_M = 0.8

# Column indices of the prior table (EnginePrior.row order).
(
    _P_LEN,
    _P_WID,
    _P_HGT,
    _P_MAX_LEN,
    _P_MAX_WID,
    _P_MAX_HGT,
    _P_MIN_TOP,
    _P_YAW_EXTENT,
    _P_MIN_POINTS,
    _P_MIN_RATIO,
    _P_MAX_RATIO,
) = range(11)


def _scatter_max(size: int, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Per-slot max of ``src`` (flat) over ``index`` into ``size`` slots; empty slots -BIG."""
    init = torch.full((size,), -BIG, dtype=src.dtype, device=src.device)
    return scatter_amax(init, 0, index.reshape(-1), src.reshape(-1))


def _scatter_sum(size: int, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Per-slot sum of ``src`` (flat) over ``index`` into ``size`` slots."""
    init = torch.zeros((size,), dtype=src.dtype, device=src.device)
    return init.scatter_add(0, index.reshape(-1), src.reshape(-1))


def _masked_percentiles(
    values: torch.Tensor, mask: torch.Tensor, qs: Sequence[float]
) -> list[torch.Tensor]:
    """The ``qs``-th percentiles (numpy's linear interpolation) of ``values`` where ``mask``
    (which may broadcast over the middle axes of ``values``).

    Reduces the last axis; rows with no valid entry give meaningless finite values. Only the
    order statistics a percentile interpolates between are selected (a top-k of the few
    smallest, or largest, entries): a full sort of the axis cost up to 20x more, and the
    selected values, hence the percentiles, are the same.
    """
    length = values.shape[-1]
    n = mask.sum(-1, keepdim=True).to(values.dtype)
    last = torch.clamp(n - 1.0, min=0.0)
    smallest: dict[int, torch.Tensor] = {}
    largest: dict[int, torch.Tensor] = {}
    out = []
    for q in qs:
        pos = last * (q / 100.0)
        lo = torch.floor(pos)
        hi = torch.minimum(lo + 1.0, last)
        # Ranks counted from the end this percentile is nearer to, bounded for every count n
        # <= length; one rank of margin covers the float rounding of pos.
        if q <= 50.0:
            k = min(length, math.floor((length - 1) * q / 100.0) + 3)
            if k not in smallest:
                masked = torch.where(mask, values, BIG)
                smallest[k] = torch.topk(masked, k, dim=-1, largest=False).values
            ordered, a_rank, b_rank = smallest[k], lo, hi
        else:
            k = min(length, math.ceil((length - 1) * (100.0 - q) / 100.0) + 3)
            if k not in largest:
                masked = torch.where(mask, values, -BIG)
                largest[k] = torch.topk(masked, k, dim=-1, largest=True).values
            ordered = largest[k]
            a_rank = torch.clamp(last - lo, min=0.0)
            b_rank = torch.clamp(last - hi, min=0.0)
        # A mask broadcast over middle axes counts once for all of them.
        rank_shape = (*ordered.shape[:-1], 1)
        a = torch.gather(ordered, -1, a_rank.to(torch.int64).expand(rank_shape))
        b = torch.gather(ordered, -1, b_rank.to(torch.int64).expand(rank_shape))
        if q > 50.0:
            # As a full sort gives where no entry is valid (padding sorts last as BIG).
            a = torch.where(n > 0, a, BIG)
            b = torch.where(n > 0, b, BIG)
        out.append((a + (b - a) * (pos - lo)).squeeze(-1))
    return out


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.to(values.dtype)
    return (values * w).sum(-1) / torch.clamp(w.sum(-1), min=1.0)


def _atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``atan2`` that is 0 at the origin on every backend (the exported form divides y by x)."""
    at_origin = (x == 0) & (y == 0)
    return torch.where(at_origin, 0.0, torch.atan2(y, torch.where(at_origin, 1.0, x)))


def _wrap_half(angle: torch.Tensor) -> torch.Tensor:
    """Angle modulo pi into [-pi/2, pi/2)."""
    return angle - math.pi * torch.floor((angle + 0.5 * math.pi) / math.pi)


class FusionEngine(torch.nn.Module):
    """Camera boxes + lidar points -> 3D boxes; see the module docstring for the method.

    ``forward(points, num_points, boxes, num_boxes, camera_from_vehicle, intrinsics, image_size,
    ground)``, at the config's full shape ``(n_max, b_max)`` or any smaller one of
    :meth:`FusionEngineConfig.shapes` (the outputs for the given rows are the same):
        points: float32 ``[n_max, 4]`` (x, y, z, intensity), vehicle frame, metres; rows from
            ``num_points`` on are padding (ignored whatever they hold), as are non-finite rows.
        num_points: int64 ``[1]``.
        boxes: float32 ``[b_max, 6]`` (x1, y1, x2, y2 pixels, score, class_index).
        num_boxes: int64 ``[1]``.
        camera_from_vehicle: float32 ``[4, 4]`` rigid transform, vehicle -> camera frame.
        intrinsics: float32 ``[3, 3]`` pinhole matrix K (pixels).
        image_size: float32 ``[2]`` (width, height) pixels.
        ground: float32 ``[4]`` plane ``(nx, ny, nz, d)`` with ``n · p + d = 0`` in the vehicle
            frame, normal pointing up (normalised inside).
        returns ``(boxes3d, valid, fused_score)``: float32 ``[b_max, 7]`` (cx, cy, cz, length,
        width, height, yaw in [-pi/2, pi/2); vehicle frame, z the box centre), bool ``[b_max]``
        (a box was found; padded and rejected rows are False and hold zeros), float32
        ``[b_max]`` the camera score scaled down when the lidar covers little of the box.
    """

    prior_table: torch.Tensor
    point_priority: torch.Tensor

    def __init__(self, config: FusionEngineConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else FusionEngineConfig()
        self.register_buffer("prior_table", torch.from_numpy(self.config.prior_table()))
        # A fixed pseudo-random order of the point rows: when a box holds more than
        # points_per_box members, top-k on this picks an even sample of them (not the first
        # rows, which are one part of the sweep). Distinct values, so no backend breaks ties.
        # Sized for n_max: a smaller bucket shape uses its first rows, so a frame's sample is
        # the same at every shape.
        n = self.config.n_max
        step = 40503
        while math.gcd(step, n) != 1:
            step += 2
        order = (np.arange(n, dtype=np.int64) * step) % n
        self.register_buffer("point_priority", torch.from_numpy((order + 1).astype(np.float32)))

    def forward(  # noqa: PLR0917 - the graph's inputs, positional in ONNX order
        self,
        points: torch.Tensor,
        num_points: torch.Tensor,
        boxes: torch.Tensor,
        num_boxes: torch.Tensor,
        camera_from_vehicle: torch.Tensor,
        intrinsics: torch.Tensor,
        image_size: torch.Tensor,
        ground: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        dev, dt = points.device, points.dtype
        # The static shape traced: the config's full shape or one of its buckets.
        n_max, b_max = points.shape[0], boxes.shape[0]
        p_max = min(cfg.points_per_box, n_max)

        # ---- Points: projected once, shared by every box. The points are worked on as rows
        # ([3, N], one per coordinate): ONNX Runtime broadcasts and gathers along the short
        # last axis of [N, 3] an order of magnitude slower, and its [N, 3] @ [3] product (the
        # plane height) took 4-9 ms. Same products in the same order: ONNX Runtime's outputs
        # are bitwise those of the [N, 3] form (checked on KITTI and synthetic drives).
        row = torch.arange(n_max, device=dev)
        raw_t = points.T[:3]
        # Row by row of a computed tensor: a row of the transposed input itself is exported
        # as a strided gather of a column (0.25 ms each at 24k points).
        ok_t = torch.isfinite(raw_t)
        finite = ok_t[0] & ok_t[1] & ok_t[2]
        xyz_t = torch.where(finite[None, :], raw_t, 0.0)
        x, y, z = xyz_t[0], xyz_t[1], xyz_t[2]
        rot, shift = camera_from_vehicle[:3, :3], camera_from_vehicle[:3, 3]
        cam_t = rot @ xyz_t + shift[:, None]
        depth = cam_t[2]
        safe_depth = torch.where(depth > cfg.min_depth_m, depth, 1.0)
        pix_t = intrinsics @ cam_t
        u = pix_t[0] / safe_depth
        v = pix_t[1] / safe_depth
        width, height = image_size[0], image_size[1]
        normal = ground[:3] / torch.clamp(torch.linalg.vector_norm(ground[:3]), min=1e-9)
        offset = ground[3] / torch.clamp(torch.linalg.vector_norm(ground[:3]), min=1e-9)
        plane_h = x * normal[0] + y * normal[1] + z * normal[2] + offset
        ox, oy = cfg.lidar_origin_xy
        rel_x, rel_y = x - ox, y - oy
        rng = torch.sqrt(rel_x * rel_x + rel_y * rel_y)
        usable = (row < num_points) & finite & (depth >= cfg.min_depth_m)
        usable = usable & (rng <= cfg.max_range_m)
        in_image = usable & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        obstacle = in_image & (plane_h > cfg.ground_clearance_m)

        # ---- Boxes and their class priors.
        box_row = torch.arange(b_max, device=dev)
        x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        score = boxes[:, 4]
        n_classes = self.prior_table.shape[0]
        cls_f = torch.where(
            (boxes[:, 5] >= 0) & (boxes[:, 5] < n_classes - 1),
            torch.floor(boxes[:, 5]),
            float(n_classes - 1),
        )
        prior = self.prior_table[cls_f.to(torch.int64)]  # [B, 11]
        box_ok = (box_row < num_boxes) & (x2 > x1) & (y2 > y1)
        box_ok = box_ok & torch.isfinite(boxes[:, :5]).all(dim=1)
        sx, sy = (x2 - x1) * cfg.box_shrink, (y2 - y1) * cfg.box_shrink
        ix1, iy1, ix2, iy2 = x1 + sx, y1 + sy, x2 - sx, y2 - sy

        # ---- Membership [B, N] and the gathered members [B, P]. This is the only [B, N] work,
        # so it is kept to a few float ops: non-obstacles get a u no box contains, rejected
        # boxes a negative half-width.
        u_obs = torch.where(obstacle, u, -BIG)
        half_w = torch.where(box_ok, 0.5 * (ix2 - ix1), -1.0)[:, None]
        half_h = (0.5 * (iy2 - iy1))[:, None]
        inside = torch.maximum(
            (u_obs[None, :] - (0.5 * (ix1 + ix2))[:, None]).abs() - half_w,
            (v[None, :] - (0.5 * (iy1 + iy2))[:, None]).abs() - half_h,
        )
        priority = torch.where(inside < 0, self.point_priority[None, :n_max], 0.0)
        top = torch.topk(priority, p_max, dim=1)
        features = torch.stack([depth, u, plane_h, x, y, rng], dim=1)[top.indices]
        g_depth, g_u, g_h, g_x, g_y, g_rng = features.unbind(dim=2)
        # Overhangs (trees, signs above the object) are dropped after gathering: a per-class
        # height test on all N points would double the [B, N] work.
        gathered = (top.values > 0) & (g_h <= prior[:, _P_MAX_HGT, None] + _OVERHANG_MARGIN_M)

        # ---- Depth histogram and clusters along depth.
        nb = cfg.depth_bins
        n_cols = cfg.coverage_bins
        bins_f = torch.clamp(torch.floor(g_depth / cfg.depth_bin_m), 0.0, float(nb - 1))
        bins = bins_f.to(torch.int64)
        base = (box_row * nb)[:, None]
        flat_bin = torch.where(gathered, base + bins, 0)
        ones = gathered.to(dt)
        counts = _scatter_sum(b_max * nb, flat_bin, ones).reshape(b_max, nb)
        occupied = counts > 0
        bin_hmax = _scatter_max(b_max * nb, flat_bin, torch.where(gathered, g_h, -BIG))
        bin_hmax = bin_hmax.reshape(b_max, nb)
        depth_sum = _scatter_sum(b_max * nb, flat_bin, g_depth * ones).reshape(b_max, nb)
        box_w = torch.clamp(ix2 - ix1, min=1e-3)
        cols_f = torch.floor((g_u - ix1[:, None]) / box_w[:, None] * n_cols)
        cols = torch.clamp(cols_f, 0.0, float(n_cols - 1)).to(torch.int64)

        # A bin starts a new cluster when no occupied bin lies within the link gap before it;
        # the gap grows with depth as rings and returns thin out.
        bin_index = torch.arange(nb, device=dev)
        bin_depth = (bin_index.to(dt) + 0.5) * cfg.depth_bin_m
        link_bins = torch.ceil(
            (cfg.cluster_link_m + cfg.cluster_link_per_m * bin_depth) / cfg.depth_bin_m
        )
        max_link = math.ceil(
            (cfg.cluster_link_m + cfg.cluster_link_per_m * (nb + 0.5) * cfg.depth_bin_m)
            / cfg.depth_bin_m
        )
        padded_occ = torch.cat(
            [torch.zeros((b_max, max_link), dtype=torch.bool, device=dev), occupied], dim=1
        )
        linked = torch.zeros_like(occupied)
        for gap in range(1, max_link + 1):
            shifted = padded_occ[:, max_link - gap : max_link - gap + nb]
            linked = linked | (shifted & (link_bins >= gap)[None, :])
        start = occupied & ~linked
        cluster_of_bin = torch.cumsum(start.to(torch.int64), dim=1) - 1  # [B, NB]
        r_max = cfg.max_clusters
        cluster_index = torch.arange(r_max, device=dev)
        # Per-cluster reductions scatter the bins (or points) into [B, R] slots: exact for
        # counts, maxima and minima, and cheaper than masking [B, NB, R]. The depth sum stays
        # a product with the one-hot membership, which fixes the order its floats add in.
        in_cluster = (cluster_of_bin[:, :, None] == cluster_index) & occupied[:, :, None]
        onehot_t = in_cluster.to(dt).transpose(1, 2)  # [B, R, NB]
        n_slots = b_max * r_max
        bin_slot = torch.where(
            occupied & (cluster_of_bin < r_max), box_row[:, None] * r_max + cluster_of_bin, n_slots
        )
        c_count = _scatter_sum(n_slots + 1, bin_slot, counts)[:n_slots].reshape(b_max, r_max)
        c_depth = (onehot_t @ depth_sum[:, :, None]).squeeze(2) / torch.clamp(c_count, min=1.0)
        c_top = _scatter_max(n_slots + 1, bin_slot, bin_hmax)[:n_slots].reshape(b_max, r_max)
        bin_f = bin_index.to(dt)[None, :].expand(b_max, nb)
        c_first = -_scatter_max(n_slots + 1, bin_slot, -bin_f)[:n_slots].reshape(b_max, r_max)
        c_last = _scatter_max(n_slots + 1, bin_slot, bin_f)[:n_slots].reshape(b_max, r_max)
        c_extent = (c_last - c_first + 1.0) * cfg.depth_bin_m
        # Width coverage: the lateral columns any of a cluster's gathered points falls in.
        point_cluster = torch.gather(cluster_of_bin, 1, bins)
        col_slot = torch.where(
            gathered & (point_cluster < r_max),
            (box_row[:, None] * r_max + point_cluster) * n_cols + cols,
            n_slots * n_cols,
        )
        col_hits = _scatter_sum(n_slots * n_cols + 1, col_slot, ones)[: n_slots * n_cols]
        c_cover = (col_hits > 0).to(dt).reshape(b_max, r_max, n_cols).sum(2) / n_cols

        fy = intrinsics[1, 1]
        top_cut = y1 <= cfg.image_edge_margin_px
        bottom_cut = y2 >= height - cfg.image_edge_margin_px
        ratio = fy * prior[:, _P_HGT, None] / torch.clamp(c_depth, min=0.1)
        ratio = ratio / torch.clamp(y2 - y1, min=1.0)[:, None]
        ratio_ok = (ratio >= prior[:, _P_MIN_RATIO, None]) & (ratio <= prior[:, _P_MAX_RATIO, None])
        ratio_ok = ratio_ok | (top_cut | bottom_cut)[:, None]
        passes = (
            (c_count >= prior[:, _P_MIN_POINTS, None])
            & (c_top >= prior[:, _P_MIN_TOP, None])
            & (c_cover >= cfg.min_width_coverage)
            & (c_extent <= prior[:, _P_MAX_LEN, None])
            & ratio_ok
        )
        # Nearest passing cluster: clusters are numbered by depth, so the first True.
        rank = torch.where(passes, (r_max - cluster_index).to(dt)[None, :], 0.0)
        chosen = torch.argmax(rank, dim=1)  # [B]
        found = passes.any(dim=1) & box_ok
        coverage = torch.gather(c_cover, 1, chosen[:, None]).squeeze(1)
        sel = gathered & (point_cluster == chosen[:, None]) & found[:, None]  # [B, P]

        # ---- Sensor-facing outline: nearest selected point per azimuth bin -> [B, A].
        mean_x = _masked_mean(g_x - ox, sel)
        mean_y = _masked_mean(g_y - oy, sel)
        mean_norm = torch.clamp(torch.sqrt(mean_x * mean_x + mean_y * mean_y), min=1e-6)
        cx_dir, cy_dir = (mean_x / mean_norm)[:, None], (mean_y / mean_norm)[:, None]
        px, py = g_x - ox, g_y - oy
        # Azimuth relative to the cluster's mean direction: no wrap at +-pi for any camera.
        rel_az = _atan2(cx_dir * py - cy_dir * px, cx_dir * px + cy_dir * py)
        az_min = torch.where(sel, rel_az, BIG).amin(1)
        az_max = torch.where(sel, rel_az, -BIG).amax(1)
        mean_rng = torch.clamp(_masked_mean(g_rng, sel), min=1.0)
        a_bins = cfg.outline_bins
        az_step = torch.maximum(cfg.outline_bin_m / mean_rng, (az_max - az_min) / a_bins)
        a_f = torch.floor((rel_az - az_min[:, None]) / az_step[:, None])
        a_idx = torch.clamp(a_f, 0.0, float(a_bins - 1)).to(torch.int64)
        flat_a = torch.where(sel, box_row[:, None] * a_bins + a_idx, 0)
        nearest = -_scatter_max(b_max * a_bins, flat_a, torch.where(sel, -g_rng, -BIG))
        is_outline = sel & (g_rng <= torch.gather(nearest.reshape(b_max, a_bins), 1, a_idx))
        p_index = torch.arange(p_max, device=dev).to(dt)[None, :].expand(b_max, p_max)
        pick = _scatter_max(b_max * a_bins, flat_a, torch.where(is_outline, p_index, -1.0))
        pick = pick.reshape(b_max, a_bins)
        o_valid = pick >= 0
        o_idx = torch.clamp(pick, min=0.0).to(torch.int64)
        o_x = torch.gather(g_x, 1, o_idx)
        o_y = torch.gather(g_y, 1, o_idx)
        o_az = torch.gather(rel_az, 1, o_idx)
        n_outline = o_valid.sum(1)
        first = torch.argmin(torch.where(o_valid, o_az, BIG), dim=1, keepdim=True)
        last = torch.argmax(torch.where(o_valid, o_az, -BIG), dim=1, keepdim=True)
        end_dx = torch.gather(o_x, 1, last) - torch.gather(o_x, 1, first)
        end_dy = torch.gather(o_y, 1, last) - torch.gather(o_y, 1, first)
        visible = torch.sqrt(end_dx * end_dx + end_dy * end_dy).squeeze(1)

        # ---- Heading search over [0, 90) degrees, then a finer pass around the best.
        o_mx, o_my = _masked_mean(o_x, o_valid), _masked_mean(o_y, o_valid)
        ocx, ocy = o_x - o_mx[:, None], o_y - o_my[:, None]
        coarse_step = math.radians(cfg.yaw_search_step_deg)
        n_coarse = max(1, round(90.0 / cfg.yaw_search_step_deg))
        coarse = torch.arange(n_coarse, device=dev).to(dt) * coarse_step
        costs = self._heading_costs(ocx, ocy, o_valid, coarse[None, :].expand(b_max, -1))
        best = coarse[torch.argmin(costs, dim=1)]
        fine_step = math.radians(min(cfg.yaw_refine_step_deg, cfg.yaw_search_step_deg))
        n_fine = math.ceil(coarse_step / fine_step)
        offsets = torch.arange(-n_fine, n_fine + 1, device=dev).to(dt) * fine_step
        fine = best[:, None] + offsets[None, :]
        fine_costs = self._heading_costs(ocx, ocy, o_valid, fine)
        theta = torch.gather(fine, 1, torch.argmin(fine_costs, dim=1, keepdim=True)).squeeze(1)
        # The long axis of the whole cluster decides between theta and theta + 90 degrees.
        ext_a, ext_b = self._extents(g_x, g_y, sel, theta)
        theta = torch.where(ext_b > ext_a, theta + 0.5 * math.pi, theta)
        fit = (n_outline >= cfg.min_outline_points) & (visible >= prior[:, _P_YAW_EXTENT])
        yaw = _wrap_half(torch.where(fit, theta, torch.full_like(theta, cfg.prior_yaw_rad)))

        # ---- Centre: per axis, the midpoint when both ends are seen, else the seen end pushed
        # back by the prior size.
        c, s = torch.cos(yaw), torch.sin(yaw)
        loc_a = g_x * c[:, None] + g_y * s[:, None]
        loc_b = -g_x * s[:, None] + g_y * c[:, None]
        q = cfg.extent_percent
        a_lo, a_hi = _masked_percentiles(loc_a, sel, (q, 100 - q))
        b_lo, b_hi = _masked_percentiles(loc_b, sel, (q, 100 - q))
        lo = torch.stack([a_lo, b_lo], dim=1)
        hi = torch.stack([a_hi, b_hi], dim=1)
        extent = hi - lo  # [B, 2]
        # Slices, not a list index: a list is a host tensor copied to the GPU on every run,
        # which stalls the launches and rules out a CUDA graph (seen on an H200).
        prior_size = prior[:, _P_LEN : _P_WID + 1]
        max_size = prior[:, _P_MAX_LEN : _P_MAX_WID + 1]
        plausible = extent <= max_size
        size = torch.where(plausible, torch.maximum(prior_size, extent), prior_size)
        sensor = torch.stack([ox * c + oy * s, -ox * s + oy * c], dim=1)
        cut_lo, cut_hi = self._cut_ends(
            sel=sel,
            g_u=g_u,
            rel_az=rel_az,
            g_x=g_x,
            g_y=g_y,
            o_x=o_x,
            o_y=o_y,
            o_az=o_az,
            o_valid=o_valid,
            first=first,
            last=last,
            cx_dir=cx_dir,
            cy_dir=cy_dir,
            yaw_cs=(c, s),
            o_u=torch.gather(g_u, 1, o_idx),
            box=(x1, x2, width),
            occluders=(self._column_nearest(u, rng, obstacle), intrinsics[0, 0]),
        )
        whole = plausible & (extent >= cfg.full_extent_fraction * prior_size)
        mid = 0.5 * (lo + hi)
        from_lo = lo + 0.5 * size
        from_hi = hi - 0.5 * size
        # Anchor order of precedence as in the numpy prototype: cuts first, then whole
        # extents, then the side the sensor sees.
        by_sensor = torch.where(sensor < lo, from_lo, torch.where(sensor > hi, from_hi, mid))
        uncut = torch.where(whole, mid, by_sensor)
        centre_local = torch.where(
            cut_lo & ~cut_hi,
            from_hi,
            torch.where(cut_hi & ~cut_lo, from_lo, torch.where(cut_lo & cut_hi, mid, uncut)),
        )
        cx = centre_local[:, 0] * c - centre_local[:, 1] * s
        cy = centre_local[:, 0] * s + centre_local[:, 1] * c

        # ---- Height and z: the plane at the centre, corrected by the lowest return near it
        # (one plane drifts on slopes).
        local = self._local_ground((x, y), plane_h, usable, cx, cy)
        top_h = torch.where(sel, g_h, -BIG).amax(1) - local
        prior_h = prior[:, _P_HGT]
        box_h = torch.where((top_h > prior_h) & (top_h <= prior[:, _P_MAX_HGT]), top_h, prior_h)
        ground_z = -(offset + normal[0] * cx + normal[1] * cy) / torch.clamp(normal[2], min=1e-6)
        cz = ground_z + local / torch.clamp(normal[2], min=1e-6) + 0.5 * box_h

        support = torch.clamp(coverage / cfg.full_support_coverage, max=1.0)
        fused = score * (1.0 - cfg.lidar_support_weight * (1.0 - support))
        out = torch.stack([cx, cy, cz, size[:, 0], size[:, 1], box_h, yaw], dim=1)
        out = torch.where(found[:, None], out, 0.0)
        fused = torch.where(found, fused, 0.0)
        return out, found, fused

    def _column_nearest(
        self, u: torch.Tensor, rng: torch.Tensor, obstacle: torch.Tensor
    ) -> torch.Tensor:
        """``[C]`` nearest obstacle range (m) per ``occlusion_column_px`` image column.

        Columns without an obstacle hold BIG.
        """
        cfg = self.config
        n_cols = math.ceil(cfg.max_image_width_px / cfg.occlusion_column_px)
        col = torch.floor(u / cfg.occlusion_column_px)
        ok = obstacle & (col >= 0) & (col < n_cols)
        flat = torch.where(ok, col, float(n_cols)).to(torch.int64)
        return -_scatter_max(n_cols + 1, flat, torch.where(ok, -rng, -BIG))[:n_cols]

    def _local_ground(
        self,
        xy: tuple[torch.Tensor, torch.Tensor],
        plane_h: torch.Tensor,
        usable: torch.Tensor,
        cx: torch.Tensor,
        cy: torch.Tensor,
    ) -> torch.Tensor:
        """``[B]`` height (m, along the normal) of the local ground above the plane at (cx, cy).

        The lowest near-plane return per ``local_ground_cell_m`` BEV cell, eroded over a
        ``local_ground_window`` square (a min filter), 0 where no return is near.
        """
        cfg = self.config
        cell, half = cfg.local_ground_cell_m, cfg.max_range_m
        n = math.ceil(2 * half / cell)
        x, y = xy
        ix = torch.floor((x + half) / cell)
        iy = torch.floor((y + half) / cell)
        near = usable & (plane_h.abs() <= cfg.local_ground_max_offset_m)
        near = near & (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
        flat = torch.where(near, ix * n + iy, float(n * n)).to(torch.int64)
        lowest = -_scatter_max(n * n + 1, flat, torch.where(near, -plane_h, -BIG))
        k = cfg.local_ground_window
        grid = lowest[: n * n].reshape(1, 1, n, n)
        eroded = -torch.nn.functional.max_pool2d(-grid, k, stride=1, padding=k // 2)
        eroded = eroded.reshape(n * n)
        bx = torch.clamp(torch.floor((cx + half) / cell), 0.0, float(n - 1))
        by = torch.clamp(torch.floor((cy + half) / cell), 0.0, float(n - 1))
        value = eroded[(bx * n + by).to(torch.int64)]
        return torch.where(value < 0.5 * BIG, value, 0.0)

    def _heading_costs(
        self, ox: torch.Tensor, oy: torch.Tensor, valid: torch.Tensor, thetas: torch.Tensor
    ) -> torch.Tensor:
        """``[B, K]`` trimmed mean distance of outline points to their rectangle's nearest edge.

        ``ox``, ``oy``, ``valid``: ``[B, A]`` outline (centred, metres); ``thetas``: ``[B, K]``.
        """
        cfg = self.config
        c, s = torch.cos(thetas)[:, :, None], torch.sin(thetas)[:, :, None]
        x, y = ox[:, None, :], oy[:, None, :]
        a = x * c + y * s  # [B, K, A]
        b = -x * s + y * c
        # [B, 1, A], broadcast over the headings: the counts are per box, not per heading.
        m = valid[:, None, :]
        q = cfg.rect_trim_percent
        a_lo, a_hi = _masked_percentiles(a, m, (q, 100 - q))
        b_lo, b_hi = _masked_percentiles(b, m, (q, 100 - q))
        d = torch.minimum(
            torch.minimum((a - a_lo[..., None]).abs(), (a - a_hi[..., None]).abs()),
            torch.minimum((b - b_lo[..., None]).abs(), (b - b_hi[..., None]).abs()),
        )
        d = torch.where(m, d, BIG)
        ordered = torch.sort(d, dim=-1).values
        n = m.sum(-1, keepdim=True).to(d.dtype)
        keep = torch.clamp(torch.round(n * cfg.yaw_trim_fraction), min=1.0)
        rank = torch.arange(d.shape[-1], device=d.device).to(d.dtype)
        kept = torch.where(rank < keep, ordered, 0.0)
        return kept.sum(-1) / keep.squeeze(-1)

    def _extents(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, theta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Percentile extents ``[B]`` of the masked points along theta and across it (m)."""
        q = self.config.extent_percent
        c, s = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
        a = x * c + y * s
        b = -x * s + y * c
        a_lo, a_hi = _masked_percentiles(a, mask, (q, 100 - q))
        b_lo, b_hi = _masked_percentiles(b, mask, (q, 100 - q))
        return a_hi - a_lo, b_hi - b_lo

    def _cut_ends(
        self,
        *,
        sel: torch.Tensor,
        g_u: torch.Tensor,
        rel_az: torch.Tensor,
        g_x: torch.Tensor,
        g_y: torch.Tensor,
        o_x: torch.Tensor,
        o_y: torch.Tensor,
        o_az: torch.Tensor,
        o_valid: torch.Tensor,
        first: torch.Tensor,
        last: torch.Tensor,
        cx_dir: torch.Tensor,
        cy_dir: torch.Tensor,
        yaw_cs: tuple[torch.Tensor, torch.Tensor],
        o_u: torch.Tensor,
        box: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        occluders: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 2]`` masks (axis 0 = length, 1 = width): the low / high end is not seen.

        A side of the outline (its max- or min-azimuth end) is cut when the 2D box touches the
        image edge on that side, or when a nearer obstacle lies just beyond it in azimuth. The
        object continues past a cut side in the direction the outline travels as it reaches
        it; the box end that direction points to is unknown.
        """
        cfg = self.config
        x1, x2, width = box
        dev, dt = o_x.device, o_x.dtype
        c, s = yaw_cs
        ox, oy = cfg.lidar_origin_xy
        a_first = torch.gather(o_az, 1, first).squeeze(1)
        a_last = torch.gather(o_az, 1, last).squeeze(1)
        mid_az = 0.5 * (a_first + a_last)
        # Which outline side the image edges are on: the azimuth of the extreme-u points.
        u_min_i = torch.argmin(torch.where(sel, g_u, BIG), dim=1, keepdim=True)
        u_max_i = torch.argmax(torch.where(sel, g_u, -BIG), dim=1, keepdim=True)
        az_umin = torch.gather(rel_az, 1, u_min_i).squeeze(1)
        az_umax = torch.gather(rel_az, 1, u_max_i).squeeze(1)
        left_cut = x1 <= cfg.image_edge_margin_px
        right_cut = x2 >= width - cfg.image_edge_margin_px
        side_hi = (left_cut & (az_umin >= mid_az)) | (right_cut & (az_umax >= mid_az))
        side_lo = (left_cut & (az_umin < mid_az)) | (right_cut & (az_umax < mid_az))

        # Occlusion: a clearly nearer obstacle in the image columns just beyond an end. The
        # per-column nearest range was reduced once for all boxes (no [B, N] work here).
        col_near, fx = occluders
        col_px = cfg.occlusion_column_px
        col_u = (torch.arange(col_near.shape[0], device=dev).to(dt) + 0.5) * col_px
        margin_px = fx * math.tan(math.radians(cfg.occlusion_margin_deg))
        o_rng = torch.sqrt((o_x - ox) ** 2 + (o_y - oy) ** 2)
        u_first, u_last = torch.gather(o_u, 1, first), torch.gather(o_u, 1, last)
        # +1 where azimuth grows with u (a camera looking backwards), else -1 (forward).
        sense = torch.where(u_last >= u_first, 1.0, -1.0)
        occluded = []
        for end_u, end_rng, sign in (
            (u_last, o_rng.gather(1, last), 1.0),
            (u_first, o_rng.gather(1, first), -1.0),
        ):
            beyond = (col_u[None, :] - end_u) * sense * sign
            near = (beyond > 0) & (beyond <= margin_px)
            near = near & (col_near[None, :] < end_rng - cfg.occlusion_gap_m)
            occluded.append(near.any(1))
        side_hi = side_hi | occluded[0]
        side_lo = side_lo | occluded[1]

        def direction(end_i: torch.Tensor, side: float) -> tuple[torch.Tensor, torch.Tensor]:
            ex, ey = torch.gather(o_x, 1, end_i), torch.gather(o_y, 1, end_i)
            dist = torch.sqrt((o_x - ex) ** 2 + (o_y - ey) ** 2)
            tail = o_valid & (dist > 1e-6) & (dist <= _CUT_TAIL_M)
            has_tail = tail.any(1)
            dx = ex.squeeze(1) - _masked_mean(o_x, tail)
            dy = ey.squeeze(1) - _masked_mean(o_y, tail)
            # One point only: the object continues across the line of sight.
            ray_x, ray_y = ex.squeeze(1) - ox, ey.squeeze(1) - oy
            dx = torch.where(has_tail, dx, -ray_y * side)
            dy = torch.where(has_tail, dy, ray_x * side)
            return dx, dy

        cut_lo = torch.zeros((sel.shape[0], 2), dtype=torch.bool, device=sel.device)
        cut_hi = torch.zeros_like(cut_lo)
        for side_mask, end_i, sign in ((side_hi, last, 1.0), (side_lo, first, -1.0)):
            dx, dy = direction(end_i, sign)
            proj = torch.stack([dx * c + dy * s, -dx * s + dy * c], dim=1)  # [B, 2]
            along_len = proj[:, 0].abs() >= proj[:, 1].abs()
            axis_mask = torch.stack([along_len, ~along_len], dim=1)
            hit = side_mask[:, None] & axis_mask
            cut_hi = cut_hi | (hit & (proj > 0))
            cut_lo = cut_lo | (hit & (proj <= 0))
        return cut_lo, cut_hi


def _example_inputs(shape: Shape) -> tuple[torch.Tensor, ...]:
    n, b = shape
    return (
        torch.zeros((n, 4), dtype=torch.float32),
        torch.zeros((1,), dtype=torch.int64),
        torch.zeros((b, 6), dtype=torch.float32),
        torch.zeros((1,), dtype=torch.int64),
        torch.eye(4, dtype=torch.float32),
        torch.eye(3, dtype=torch.float32),
        torch.tensor([1242.0, 375.0], dtype=torch.float32),
        torch.tensor([0.0, 0.0, 1.0, 1.73], dtype=torch.float32),
    )


def export_fusion_engine_onnx(
    path: Path,
    n_max: int | None = None,
    b_max: int | None = None,
    *,
    config: FusionEngineConfig | None = None,
    shape: Shape | None = None,
) -> Path:
    """Exports :class:`FusionEngine` to ONNX (opset :data:`ONNX_OPSET`, static shapes).

    Inputs :data:`INPUT_NAMES` and outputs :data:`OUTPUT_NAMES` with the shapes of
    :class:`FusionEngine`; ``n_max`` / ``b_max`` override the config's padded sizes (another
    config), ``shape`` picks one of the config's bucket shapes (:meth:`FusionEngineConfig.shapes`;
    default its full shape). The file is written to a temporary name beside ``path`` and
    renamed, so a reader never sees a partial model.

    Returns:
        ``path``.

    Raises:
        ValueError: a size < 1, or ``shape`` is not one of the config's shapes.
        OSError: the file cannot be written.
    """
    cfg = config if config is not None else FusionEngineConfig()
    overrides: dict[str, int] = {}
    if n_max is not None:
        overrides["n_max"] = n_max
    if b_max is not None:
        overrides["b_max"] = b_max
    if overrides:
        cfg = replace(cfg, **overrides)  # type: ignore[arg-type]
    shape = shape if shape is not None else cfg.full_shape
    if shape not in cfg.shapes():
        raise ValueError(f"fusion engine: {shape} is not one of the config's shapes {cfg.shapes()}")
    return export_static_onnx(
        FusionEngine(cfg),
        _example_inputs(shape),
        path,
        INPUT_NAMES,
        OUTPUT_NAMES,
        opset=ONNX_OPSET,
        compact=True,
    )


def cached_fusion_engine_onnx(
    config: FusionEngineConfig, cache_dir: Path | None = None, shape: Shape | None = None
) -> Path:
    """The exported ONNX file for ``config`` at ``shape`` (default its full shape) in
    ``cache_dir``, exporting it on first use.

    The file is named by :meth:`FusionEngineConfig.cache_key` (which covers the shape) and the
    shape, so a changed config, shape, graph version or torch version gets a fresh export
    instead of a stale one.

    Args:
        cache_dir: defaults to :data:`engines.exports.DEFAULT_EXPORT_DIR`.

    Raises:
        ValueError: ``shape`` is not one of the config's shapes.
        OSError: the cache directory or file cannot be written.
    """
    shape = shape if shape is not None else config.full_shape
    directory = Path(cache_dir) if cache_dir is not None else DEFAULT_EXPORT_DIR
    name = f"fusion_engine-{config.cache_key(shape)[:24]}-n{shape[0]}-b{shape[1]}.onnx"
    path = directory / name
    if not path.is_file():
        export_fusion_engine_onnx(path, config=config, shape=shape)
    return path


def export_packaged() -> list[Path]:
    """Regenerates the packaged exports of the default config at every shape
    (:func:`engines.fusion.config.packaged_model_path`) and returns their paths."""
    config = FusionEngineConfig()
    return [
        export_fusion_engine_onnx(packaged_model_path(shape), config=config, shape=shape)
        for shape in config.shapes()
    ]


if __name__ == "__main__":
    export_packaged()
