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

from collections.abc import Callable, Mapping

import numpy as np

from engines.buckets import EngineBuckets
from engines.engine import Engine
from engines.errors import EngineError
from engines.fusion.learned_config import LearnedFusionConfig

__all__ = ["BucketedLearnedEngine"]


class BucketedLearnedEngine(EngineBuckets[int]):
    """One learned fusion engine per pillar count of ``sizes`` (the config's ``max_pillars``
    among them); implements :class:`engines.engine.Engine` at the full count
    (:class:`engines.buckets.EngineBuckets`).

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
        super().__init__(
            "learned fusion engine",
            sorted(set(sizes)),
            full,
            make,
            lambda n: (config.input_specs(n), config.output_specs()),
            named=lambda n: f"{n} pillars",
            label="pillar_buckets",
        )

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs full-count inputs on the smallest bucket holding their real pillars.

        Inputs that are not the full count's arrays go to the full engine as they are, to be
        judged there.

        Raises:
            engines.errors.EngineError: a missing input, a wrong shape, or a failed run.
        """
        nx, ny = self.config.grid_size
        full = self.config.max_pillars
        cells = inputs.get("pillar_cells")
        if not (isinstance(cells, np.ndarray) and cells.shape == (full,)):
            return self.run_on(full, inputs)
        real = np.flatnonzero((cells >= 0) & (cells < nx * ny))
        n = self.size_for(int(real[-1]) + 1 if len(real) else 0)
        feed = dict(inputs)
        if n < full:
            for name in ("pillars", "pillar_points", "pillar_cells"):
                value = feed.get(name)
                if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == full:
                    feed[name] = value[:n]
        return self.run_on(n, feed)
