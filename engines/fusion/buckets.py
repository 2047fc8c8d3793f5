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

import threading
from collections.abc import Callable, Mapping

import numpy as np

from engines.engine import Engine, EngineDescription, TensorSpec, require_specs, run_warmup
from engines.errors import EngineError
from engines.fusion.config import FusionEngineConfig, Shape

__all__ = ["BucketedFusionEngine"]


class BucketedFusionEngine:
    """One fusion engine per static shape of ``config``; implements
    :class:`engines.engine.Engine` at the full shape.

    :meth:`run` takes full-shape inputs (as a single engine would) and runs them on the smallest
    shape that holds ``num_points`` and ``num_boxes``; :class:`engines.fusion.runner.
    FusionEngineRunner` pads straight to that shape instead (:meth:`engine_for`).

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
        self._make = make
        self._engines: dict[Shape, Engine] = {}
        self._lock = threading.Lock()
        self._last: Engine = self.engine_for(config.full_shape)

    @property
    def shapes(self) -> tuple[Shape, ...]:
        """Every shape this engine runs at, smallest first, the full shape last."""
        return self.config.shapes()

    @property
    def loaded_shapes(self) -> tuple[Shape, ...]:
        """The shapes whose engines have been made so far."""
        return tuple(s for s in self.shapes if s in self._engines)

    def engine_for(self, shape: Shape) -> Engine:
        """The engine of ``shape`` (one of :attr:`shapes`), made on first use.

        Raises:
            engines.errors.EngineError: ``shape`` is not a bucket, or making it failed.
        """
        engine = self._engines.get(shape)
        if engine is not None:
            return engine
        if shape not in self.shapes:
            raise EngineError(f"fusion engine: no bucket of shape {shape} (have {self.shapes})")
        with self._lock:
            engine = self._engines.get(shape)
            if engine is None:
                engine = self._make(shape)
                require_specs(
                    f"fusion engine {shape}",
                    engine,
                    self.config.input_specs(shape),
                    self.config.output_specs(shape),
                )
                self._engines[shape] = engine
        return engine

    @property
    def full(self) -> Engine:
        """The engine of the full shape."""
        return self.engine_for(self.config.full_shape)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs of the full shape."""
        return self.full.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs of the full shape."""
        return self.full.outputs

    @property
    def last_gpu_ns(self) -> int | None:
        """GPU time of the last :meth:`run` (of whichever bucket ran it)."""
        return self._last.last_gpu_ns

    def run_shape(self, shape: Shape, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs inputs padded to ``shape`` on that shape's engine; outputs of ``shape``.

        Raises:
            engines.errors.EngineError: as :meth:`engine_for` and the engine's ``run``.
        """
        engine = self.engine_for(shape)
        self._last = engine
        return engine.run(inputs)

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
        out = self.run_shape((n, b), feed)
        if b == b_max:
            return out
        padded = {}
        for spec in self.full.outputs:
            full = np.zeros(spec.static_shape(), dtype=spec.dtype)
            full[:b] = out[spec.name]
            padded[spec.name] = full
        return padded

    def warmup(self, iterations: int = 1) -> None:
        """Makes every bucket's engine and runs ``iterations`` batches of zeros through each,
        so that no frame pays for loading one.

        Raises:
            engines.errors.EngineError: ``iterations`` < 0, or a make or run fails.
        """
        for shape in self.shapes:
            run_warmup(self.engine_for(shape), iterations)

    def describe(self) -> EngineDescription:
        """The full shape's engine, as in use, with the bucket shapes in ``extra``."""
        d = self.full.describe()
        shapes = ",".join(f"{n}x{b}" for n, b in self.shapes)
        return EngineDescription(
            backend=d.backend,
            device=d.device,
            precision=d.precision,
            model=d.model,
            providers=d.providers,
            extra=(*d.extra, ("buckets", shapes)),
        )
