"""The learned fusion engine at several pillar counts: a sweep runs on the smallest that holds it.

The export has static shapes (TensorRT needs them; ONNX Runtime and torch run the same graph),
and its pillar encoder costs as much for a padding pillar as for a real one: a KITTI scan cut to
the camera's view fills 1,300 of the packaged 6,000 pillars. The pillariser puts the real
pillars first, so the first ``n`` rows of the padded inputs are the sweep; the graph exported at
``n`` pillars (:meth:`LearnedFusionConfig.pillar_buckets`, files beside the full export,
:func:`engines.fusion.learned_config.bucket_onnx_path`) gives the same table: padding pillars
contribute nothing to the BEV image (tested bitwise). Engines for the smaller counts are made on
first use, or all at warm-up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np

from engines.engine import Engine, EngineDescription, TensorSpec, require_specs, run_warmup
from engines.errors import EngineError
from engines.fusion.learned_config import LearnedFusionConfig

__all__ = ["BucketedLearnedEngine"]


class BucketedLearnedEngine:
    """One learned fusion engine per pillar count of ``sizes`` (ascending, the last the
    config's ``max_pillars``); implements :class:`engines.engine.Engine` at the full count.

    :meth:`run` takes full-count inputs, as a single engine would, and runs the first rows on
    the smallest count that holds every real pillar (a pillar whose cell is on the grid).

    Args:
        config: the graph's config.
        sizes: the pillar counts with an engine (the full count among them).
        make: builds the engine of one count. The full count's is built at once, so a missing
            model fails here; the others on first use.

    Raises:
        engines.errors.EngineError: as ``make``, sizes without the full count, or an engine
            whose tensors are not those of its count.
    """

    def __init__(
        self,
        config: LearnedFusionConfig,
        sizes: tuple[int, ...],
        make: Callable[[int], Engine],
    ) -> None:
        full = config.max_pillars
        if full not in sizes or any(not 0 < n <= full for n in sizes):
            raise EngineError(
                f"learned fusion buckets {sizes}: need pillar counts in 1..{full}, "
                f"{full} among them"
            )
        self.config = config
        self.sizes = tuple(sorted(set(sizes)))
        self._make = make
        self._engines: dict[int, Engine] = {}
        self._lock = threading.Lock()
        self._last: Engine = self.engine_for(full)

    @property
    def loaded_sizes(self) -> tuple[int, ...]:
        """The pillar counts whose engines have been made so far."""
        return tuple(n for n in self.sizes if n in self._engines)

    def engine_for(self, pillars: int) -> Engine:
        """The engine of ``pillars`` (one of :attr:`sizes`), made on first use.

        Raises:
            engines.errors.EngineError: not a bucket, or making it failed.
        """
        engine = self._engines.get(pillars)
        if engine is not None:
            return engine
        if pillars not in self.sizes:
            raise EngineError(f"learned fusion: no bucket of {pillars} pillars (have {self.sizes})")
        with self._lock:
            engine = self._engines.get(pillars)
            if engine is None:
                engine = self._make(pillars)
                require_specs(
                    f"learned fusion engine at {pillars} pillars",
                    engine,
                    self.config.input_specs(pillars),
                    self.config.output_specs(),
                )
                self._engines[pillars] = engine
        return engine

    def size_for(self, used: int) -> int:
        """The smallest bucket holding ``used`` pillars."""
        return next((n for n in self.sizes if n >= used), self.sizes[-1])

    @property
    def full(self) -> Engine:
        """The engine of the full pillar count."""
        return self.engine_for(self.config.max_pillars)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs of the full count."""
        return self.full.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs (the same at every count)."""
        return self.full.outputs

    @property
    def last_gpu_ns(self) -> int | None:
        """GPU time of the last :meth:`run` (of whichever bucket ran it)."""
        return self._last.last_gpu_ns

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs full-count inputs on the smallest bucket holding their real pillars.

        Inputs that are not the full count's arrays go to the full engine as they are, to be
        judged there.

        Raises:
            engines.errors.EngineError: a missing input, a wrong shape, or a failed run.
        """
        nx, ny = self.config.grid_size
        cells = inputs.get("pillar_cells")
        engine = self.full
        feed = dict(inputs)
        full = self.config.max_pillars
        if isinstance(cells, np.ndarray) and cells.shape == (full,):
            real = np.flatnonzero((cells >= 0) & (cells < nx * ny))
            n = self.size_for(int(real[-1]) + 1 if len(real) else 0)
            if n < full:
                for name in ("pillars", "pillar_points", "pillar_cells"):
                    value = feed.get(name)
                    if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == full:
                        feed[name] = value[:n]
                engine = self.engine_for(n)
        self._last = engine
        return engine.run(feed)

    def make_all(self) -> None:
        """Makes every bucket's engine now rather than on its first use (a stalled sweep
        mid-drive). Not run, to spare the memory of buffers for counts a drive never needs,
        except an engine whose first run captures a CUDA graph (torch on CUDA)."""
        for n in self.sizes:
            engine = self.engine_for(n)
            # Duck-typed: the runtime install has no torch to import TorchEngine from.
            if getattr(engine, "capture_pending", False):
                engine.warmup(1)

    def warmup(self, iterations: int = 1) -> None:
        """Makes every bucket's engine and runs ``iterations`` batches of zeros through each,
        so that no sweep pays for loading one.

        Raises:
            engines.errors.EngineError: ``iterations`` < 0, or a make or run fails.
        """
        for n in self.sizes:
            run_warmup(self.engine_for(n), iterations)

    def describe(self) -> EngineDescription:
        """The full count's engine, as in use, with the bucket counts in ``extra``."""
        d = self.full.describe()
        return EngineDescription(
            backend=d.backend,
            device=d.device,
            precision=d.precision,
            model=d.model,
            providers=d.providers,
            extra=(*d.extra, ("pillar_buckets", ",".join(str(n) for n in self.sizes))),
        )
