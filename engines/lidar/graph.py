"""Lidar encoder: a padded point cloud -> a dense bird's-eye-view (BEV) feature image.

The encoder is the project's own torch graph. It bins points into a regular x/y grid (the
PointPillars grid by default) and reduces each cell's points to a few hand-made features with
scatter ops, so it exports to ONNX with static shapes and runs the same under ONNX Runtime and
torch.

Frames and units: points are ``(x, y, z, intensity)`` in the vehicle (velodyne) frame, x forward,
y left, z up, metres. The output ``bev`` is ``[C, H, W]`` with rows along y and columns along x:
``bev[c, iy, ix]`` describes the cell ``x in [x_min + ix * cell, x_min + (ix + 1) * cell)``,
``y in [y_min + iy * cell, ...)``; this is PointPillars' dense ``[496, 432]`` layout.
Heights are the absolute z of the points in metres; empty cells hold 0 in every channel (use the
``occupancy`` channel to tell an empty cell from a point at z = 0).
"""

from __future__ import annotations

from pathlib import Path

import torch

from engines.exports import DEFAULT_EXPORT_DIR
from engines.lidar.config import (
    INPUT_NAMES,
    OBSTACLE_CONFIG,
    ONNX_OPSET,
    OUTPUT_NAMES,
    LidarEncoderConfig,
    packaged_model_path,
)
from engines.onnx_ops import export_static_onnx, scatter_amax

__all__ = ["LidarEncoder", "cached_lidar_encoder_onnx", "export_lidar_encoder_onnx"]


def _filled(
    rows: int, cols: int, value: float, num_points: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """A contiguous ``[rows, cols]`` tensor of ``value``.

    Built from ``num_points * 0`` (an int, so never NaN) because the exporter folds any
    input-independent tensor into a constant: two ``3 x cols`` float buffers would add 5 MB of
    zeros to the ONNX file, where this is a few small nodes.
    """
    scalar = (num_points.reshape(1, 1) * 0).to(dtype) + value
    return scalar.expand(rows, cols).contiguous()


#: The sum rows (``count``, ``z``, ``intensity``) and max rows (``z``, ``-z``, ``intensity``)
#: each feature is made from.
_SUM_ROWS = {
    "mean_z": ("count", "z"),
    "density": ("count",),
    "mean_intensity": ("count", "intensity"),
}
_MAX_ROWS = {
    "max_z": ("z",),
    "min_z": ("-z",),
    "z_range": ("z", "-z"),
    "max_intensity": ("intensity",),
}


def _rows(features: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The sum rows and the max rows ``features`` need, each in a fixed order. Occupancy
    needs one row of either kind: a max row where there is one, else the count."""
    sums = {r for f in features for r in _SUM_ROWS.get(f, ())}
    maxs = {r for f in features for r in _MAX_ROWS.get(f, ())}
    if "occupancy" in features and not sums and not maxs:
        sums.add("count")
    return (
        tuple(r for r in ("count", "z", "intensity") if r in sums),
        tuple(r for r in ("z", "-z", "intensity") if r in maxs),
    )


class LidarEncoder(torch.nn.Module):
    """Points -> BEV features; see the module docstring for frames and layout.

    ``forward(points, num_points)``:
        points: float32 ``[max_points, 4]``, (x, y, z, intensity), vehicle frame, metres; rows
            from ``num_points`` on are padding and ignored, whatever they hold.
        num_points: int64 ``[1]``, the number of valid rows.
        returns: float32 ``[C, H, W]`` (:attr:`LidarEncoderConfig.output_shape`).

    Points outside the grid or z range, and points with a non-finite value, are ignored. The
    graph has only static shapes: every point is scattered, and ignored ones go to a dump cell
    (index ``H * W``) that is dropped at the end.
    """

    def __init__(self, config: LidarEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LidarEncoderConfig()

    def forward(self, points: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        nx, ny = cfg.width, cfg.height
        num_cells = nx * ny
        x, y, z, intensity = points[:, 0], points[:, 1], points[:, 2], points[:, 3]

        # Cell coordinates stay float until masked: NaN/inf would make an int cast undefined.
        # Validity is decided on the cell index itself (not on x < x_max), so a point that
        # rounds into cell nx is dropped the same way by torch, ONNX Runtime and a reference.
        fx = torch.floor((x - cfg.x_range[0]) / cfg.cell_size)
        fy = torch.floor((y - cfg.y_range[0]) / cfg.cell_size)
        row = torch.arange(points.shape[0], device=points.device)
        valid = (
            (row < num_points)
            & (fx >= 0)
            & (fx < nx)
            & (fy >= 0)
            & (fy < ny)
            & (z >= cfg.z_range[0])
            & (z < cfg.z_range[1])
            & torch.isfinite(intensity)
        )
        # H * W < 2**24 for any sane grid, so the flat index is exact in float32.
        flat = torch.where(valid, fy * nx + fx, float(num_cells))
        index = flat.to(torch.int64).unsqueeze(0)

        # Ignored points may hold NaN/inf; zero them so no backend's reduction can see them.
        z_ok = torch.where(valid, z, 0.0)
        i_ok = torch.where(valid, intensity, 0.0)

        # Only the rows the asked features need are scattered: each ScatterElements walks
        # every padded point and every row is a [cells] buffer (1 MB at 512 x 512), so the
        # pipeline's one-channel grid runs in about a third of the time all six rows took.
        # Rows of one reduction go through one stacked scatter (fewer, wider scatters are
        # cheaper), and channel-major [rows, cells] buffers (scatter along axis 1) keep each
        # row contiguous.
        sum_rows, max_rows = _rows(cfg.features)
        sum_source = {"count": valid.to(points.dtype), "z": z_ok, "intensity": i_ok}
        max_source = {"z": z_ok, "-z": -z_ok, "intensity": i_ok}
        sums: dict[str, torch.Tensor] = {}
        maxs: dict[str, torch.Tensor] = {}
        if sum_rows:
            # The count row is the validity mask itself (ignored points land in the dump cell).
            init = _filled(len(sum_rows), num_cells + 1, 0.0, num_points, points.dtype)
            src = torch.stack([sum_source[r] for r in sum_rows], dim=0)
            summed = init.scatter_add(1, index.expand(len(sum_rows), -1), src)[:, :num_cells]
            sums = {r: summed[k] for k, r in enumerate(sum_rows)}
        if max_rows:
            init = _filled(len(max_rows), num_cells + 1, float("-inf"), num_points, points.dtype)
            src = torch.stack([max_source[r] for r in max_rows], dim=0)
            maxed = scatter_amax(init, 1, index.expand(len(max_rows), -1), src)[:, :num_cells]
            maxs = {r: maxed[k] for k, r in enumerate(max_rows)}

        # A cell's highest return is -inf exactly when no valid point landed in it (a valid
        # point's values are finite), so with no count row the first max row tells occupancy.
        if "count" in sums:
            count = sums["count"]
            occupied = count > 0
        else:
            occupied = maxs[max_rows[0]] > float("-inf")
        # Empty cells hold -inf (max rows) or 0 (sums); the contract is 0 in every channel.
        maxs = {r: torch.where(occupied, m, 0.0) for r, m in maxs.items()}

        channels: list[torch.Tensor] = []
        for name in cfg.features:
            if name == "max_z":
                channels.append(maxs["z"])
            elif name == "min_z":
                channels.append(-maxs["-z"])
            elif name == "mean_z":
                channels.append(sums["z"] / torch.clamp(count, min=1.0))
            elif name == "z_range":
                channels.append(maxs["z"] + maxs["-z"])
            elif name == "density":
                channels.append(torch.log1p(count))
            elif name == "max_intensity":
                channels.append(maxs["intensity"])
            elif name == "mean_intensity":
                channels.append(sums["intensity"] / torch.clamp(count, min=1.0))
            else:  # "occupancy"; the config rejects unknown names
                channels.append(occupied.to(points.dtype))
        return torch.stack(channels, dim=0).reshape(len(channels), ny, nx)


def _example_inputs(config: LidarEncoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.zeros(config.max_points, 4, dtype=torch.float32),
        torch.tensor([0], dtype=torch.int64),
    )


def export_lidar_encoder_onnx(config: LidarEncoderConfig, path: Path) -> Path:
    """Exports the encoder for ``config`` to ONNX (opset :data:`ONNX_OPSET`, static shapes).

    Inputs ``points`` float32 ``[max_points, 4]`` and ``num_points`` int64 ``[1]``; output
    ``bev`` float32 ``[C, H, W]``. The same config and torch version give the same bytes. The
    file is written to a temporary name beside ``path`` and renamed, so a reader never sees a
    partial model.

    Returns:
        ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    return export_static_onnx(
        LidarEncoder(config),
        _example_inputs(config),
        path,
        INPUT_NAMES,
        OUTPUT_NAMES,
        opset=ONNX_OPSET,
        constant_folding=False,
    )


def cached_lidar_encoder_onnx(config: LidarEncoderConfig, cache_dir: Path | None = None) -> Path:
    """The exported ONNX file for ``config`` in ``cache_dir``, exporting it on first use.

    The file is named by :meth:`LidarEncoderConfig.cache_key`, so a changed config, encoder
    version or torch version gets a fresh export instead of a stale one.

    Args:
        cache_dir: defaults to :data:`engines.exports.DEFAULT_EXPORT_DIR`.

    Raises:
        OSError: the cache directory or file cannot be written.
    """
    directory = Path(cache_dir) if cache_dir is not None else DEFAULT_EXPORT_DIR
    path = directory / f"lidar_encoder-{config.cache_key()[:24]}.onnx"
    if not path.is_file():
        export_lidar_encoder_onnx(config, path)
    return path


if __name__ == "__main__":
    # Regenerates the packaged exports of the obstacle grid, at every point bucket.
    for n in OBSTACLE_CONFIG.point_buckets():
        export_lidar_encoder_onnx(OBSTACLE_CONFIG.at_points(n), packaged_model_path(n))
