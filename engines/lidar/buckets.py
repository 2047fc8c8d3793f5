"""The lidar encoder at several padded point counts: a scan runs on the smallest that holds it.

The export has static shapes (TensorRT needs them; ONNX Runtime and torch run the same graph),
and it scatters every padding row as it does a real one: an obstacle scan of 5-20k points filled
the 65,536 rows of :data:`engines.lidar.config.OBSTACLE_CONFIG`. Rows from ``num_points`` on are
ignored, so the graph exported at ``n`` rows (:meth:`LidarEncoderConfig.point_buckets`, files
beside the full export, :func:`engines.lidar.config.bucket_onnx_path`) gives the same BEV image
for any scan of at most ``n`` points (tested bitwise). Engines for the smaller counts are made on
first use, or all at warm-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from engines.buckets import EngineBuckets
from engines.engine import Engine
from engines.lidar.config import LidarEncoderConfig

__all__ = ["BucketedLidarEncoder"]


class BucketedLidarEncoder(EngineBuckets[int]):
    """One lidar encoder per padded point count of ``config.point_buckets()``; implements
    :class:`engines.engine.Engine` at ``max_points`` (:class:`engines.buckets.EngineBuckets`).

    :meth:`run` takes full-count inputs, as a single engine would, and runs their first rows on
    the smallest count that holds ``num_points``; :class:`engines.lidar.runner.LidarEncoderRunner`
    pads to that count at once (:meth:`size_for`, :meth:`run_on`).

    Args:
        config: the grid.
        make: builds the engine of one count. The full count's is built at once, so a missing
            model fails here; the others on first use.

    Raises:
        engines.errors.EngineError: as ``make``, or an engine whose tensors are not those of
            its count.
    """

    def __init__(self, config: LidarEncoderConfig, make: Callable[[int], Engine]) -> None:
        self.config = config
        super().__init__(
            "lidar encoder",
            config.point_buckets(),
            config.max_points,
            make,
            lambda n: (config.input_specs(n), config.output_specs()),
            named=lambda n: f"{n} points",
            label="point_buckets",
        )

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs full-count inputs on the smallest bucket holding their ``num_points``. Inputs
        that are not the full count's arrays go to the full engine as they are, to be judged
        there.

        Raises:
            engines.errors.EngineError: a missing input, a wrong shape, or a failed run.
        """
        full = self.config.max_points
        points, count = inputs.get("points"), inputs.get("num_points")
        if not (
            isinstance(points, np.ndarray)
            and points.shape == (full, 4)
            and isinstance(count, np.ndarray)
            and count.shape == (1,)
            and 0 <= int(count[0]) <= full
        ):
            return self.run_on(full, inputs)
        n = self.size_for(int(count[0]))
        return self.run_on(n, {**inputs, "points": points[:n]})
