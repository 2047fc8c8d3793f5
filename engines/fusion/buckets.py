"""The fusion engine at several static shapes: a frame runs on the smallest that holds it.

The graph has static shapes (TensorRT needs them; ONNX Runtime and torch run the same export),
and padding rows cost as much as real ones: a KITTI frame of 3 boxes and 19,000 points in view
padded to 16 boxes and 32,768 points spent most of its time on padding. The config names bucket
sizes (:meth:`FusionEngineConfig.shapes`); the graph is the same at each, and a frame's outputs
are bitwise the same at every shape that holds it (padding is masked out, boxes are worked on
independently, the point sampling order is the full shape's). Engines for the smaller shapes are
made on first use: a node that never sees a crowded frame never loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from engines.buckets import EngineBuckets
from engines.engine import Engine
from engines.errors import EngineError
from engines.fusion.config import FusionEngineConfig, Shape

__all__ = ["BucketedFusionEngine"]


class BucketedFusionEngine(EngineBuckets[Shape]):
    """One fusion engine per static shape of ``config``; implements
    :class:`engines.engine.Engine` at the full shape (:class:`engines.buckets.EngineBuckets`).

    :meth:`run` takes full-shape inputs (as a single engine would) and runs them on the smallest
    shape that holds ``num_points`` and ``num_boxes``; :class:`engines.fusion.runner.
    FusionEngineRunner` pads straight to that shape instead (:meth:`run_on`).

    Args:
        config: the graph's config; its :meth:`FusionEngineConfig.shapes` are the buckets.
        make: builds the engine of one shape (an ONNX Runtime session of that shape's export, a
            torch module behind that shape's specs, ...). The full shape's is built at once, so
            a missing model or backend fails here, not at the first crowded frame; the others
            on first use.

    Raises:
        engines.errors.EngineError: as ``make``, or an engine whose tensors are not those of
            its shape.
    """

    def __init__(self, config: FusionEngineConfig, make: Callable[[Shape], Engine]) -> None:
        self.config = config
        super().__init__(
            "fusion engine",
            config.shapes(),
            config.full_shape,
            make,
            lambda shape: (config.input_specs(shape), config.output_specs(shape)),
            spell=lambda shape: f"{shape[0]}x{shape[1]}",
            named=lambda shape: f"shape {shape[0]}x{shape[1]}",
        )

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs full-shape inputs on the smallest bucket that holds them; full-shape outputs
        (rows beyond the bucket are padding: False and zeros, as the full shape gives them).

        Raises:
            engines.errors.EngineError: a missing input, a wrong shape, or a failed run.
        """
        n_max, b_max = self.config.full_shape
        try:
            num_points = int(np.asarray(inputs["num_points"]).reshape(-1)[0])
            num_boxes = int(np.asarray(inputs["num_boxes"]).reshape(-1)[0])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EngineError(f"fusion engine: num_points / num_boxes unreadable: {exc}") from exc
        # Counts beyond the padded sizes are left for the full-shape engine to judge.
        num_points, num_boxes = min(max(num_points, 0), n_max), min(max(num_boxes, 0), b_max)
        n, b = self.config.shape_for(num_points, num_boxes)
        feed = dict(inputs)
        if (n, b) != (n_max, b_max):
            for name, rows in (("points", n), ("boxes", b)):
                value = feed.get(name)
                if isinstance(value, np.ndarray) and value.ndim >= 1:
                    feed[name] = value[:rows]
        out = self.run_on((n, b), feed)
        if b == b_max:
            return out
        padded = {}
        for spec in self.full.outputs:
            full = np.zeros(spec.static_shape(), dtype=spec.dtype)
            full[:b] = out[spec.name]
            padded[spec.name] = full
        return padded
