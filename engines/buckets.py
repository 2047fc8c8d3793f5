"""One engine per static size of a graph (its buckets), made on first use.

Static shapes are what TensorRT needs and what every backend runs; padding rows cost as much as
real ones, so a graph is exported at a few sizes and a call runs on the smallest that holds it.
:class:`EngineBuckets` keeps the engines of one graph's sizes; the engine of the full size
answers for the whole as an :class:`engines.engine.Engine` (its specs, its description).
Subclasses say how a call picks its size (``run``): the geometric fusion engine by its points
and boxes (``engines.fusion.buckets``), the learned one by its pillars
(``engines.fusion.learned_buckets``), the lidar encoder by its points (``engines.lidar.buckets``;
these two by one count: ``size_for``).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np

from engines.engine import Engine, EngineDescription, TensorSpec, require_specs, run_warmup
from engines.errors import EngineError

__all__ = ["MAKE_WORKERS", "EngineBuckets"]

#: At most this many engines of one graph are made at once by `EngineBuckets.make_all`.
MAKE_WORKERS = 4

K = TypeVar("K", bound=Hashable)


class EngineBuckets(Generic[K]):
    """The engines of one graph at ``sizes`` (smallest first, ``full`` among them).

    Args:
        what: the graph's name in messages ("fusion engine").
        sizes: every size, smallest first.
        full: the full size: its engine is made at once (a missing model or backend fails
            here, not at the first call that needs it), the others on first use.
        make: builds the engine of one size.
        specs: the (inputs, outputs) an engine of one size must have.
        spell: one size as :meth:`describe` lists it ("8192x4").
        named: one size as a message names it ("shape 8192x4"; default: ``spell``).
        label: the key of the sizes in :meth:`describe`'s ``extra``.

    Raises:
        engines.errors.EngineError: ``full`` is not among ``sizes``; as ``make``; or an engine
            whose tensors are not those of its size.
    """

    def __init__(
        self,
        what: str,
        sizes: Sequence[K],
        full: K,
        make: Callable[[K], Engine],
        specs: Callable[[K], tuple[Sequence[TensorSpec], Sequence[TensorSpec]]],
        *,
        spell: Callable[[K], str] = str,
        named: Callable[[K], str] | None = None,
        label: str = "buckets",
    ) -> None:
        if full not in sizes:
            raise EngineError(f"{what}: the buckets {list(sizes)} lack the full size {full}")
        self._what = what
        self._sizes = tuple(sizes)
        self._full = full
        self._make = make
        self._specs = specs
        self._spell = spell
        self._named = named or spell
        self._label = label
        self._engines: dict[K, Engine] = {}
        self._lock = threading.Lock()
        self._last: Engine = self.engine_for(full)
        #: The size the last :meth:`run_on` ran at (None before the first run).
        self.last_size: K | None = None

    @property
    def sizes(self) -> tuple[K, ...]:
        """Every size, smallest first."""
        return self._sizes

    def smallest(self, holds: Callable[[K], bool]) -> K:
        """The smallest size that ``holds`` (the full size when none does: the call is then
        judged there)."""
        return next((k for k in self._sizes if holds(k)), self._full)

    def size_for(self: EngineBuckets[int], count: int) -> int:
        """Buckets sized by one count (points, pillars): the smallest holding ``count``."""
        return self.smallest(lambda n: n >= count)

    @property
    def loaded(self) -> tuple[K, ...]:
        """The sizes whose engines have been made so far."""
        return tuple(k for k in self._sizes if k in self._engines)

    def engine_for(self, size: K) -> Engine:
        """The engine of ``size`` (one of :attr:`sizes`), made on first use.

        Raises:
            engines.errors.EngineError: not a bucket, or making it failed.
        """
        engine = self._engines.get(size)
        if engine is not None:
            return engine
        if size not in self._sizes:
            have = ", ".join(self._spell(k) for k in self._sizes)
            raise EngineError(f"{self._what}: no bucket of {self._named(size)} (have {have})")
        with self._lock:
            engine = self._engines.get(size)
            if engine is None:
                engine = self._checked(size, self._make(size))
                self._engines[size] = engine
        return engine

    def _checked(self, size: K, engine: Engine) -> Engine:
        inputs, outputs = self._specs(size)
        require_specs(f"{self._what} at {self._named(size)}", engine, inputs, outputs)
        return engine

    @property
    def full(self) -> Engine:
        """The engine of the full size."""
        return self.engine_for(self._full)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs of the full size."""
        return self.full.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs of the full size."""
        return self.full.outputs

    @property
    def last_gpu_ns(self) -> int | None:
        """GPU time of the last run (of whichever bucket ran it)."""
        return self._last.last_gpu_ns

    def run_on(self, size: K, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs inputs of ``size`` on that size's engine.

        Raises:
            engines.errors.EngineError: as :meth:`engine_for` and the engine's ``run``.
        """
        engine = self.engine_for(size)
        self._last = engine
        self.last_size = size
        return engine.run(inputs)

    def make_all(self) -> None:
        """Makes every size's engine now rather than on its first use (a stalled call
        mid-drive). Not run, to spare the buffers of sizes a drive never needs, except an
        engine whose first run captures a CUDA graph (torch on CUDA, ``capture_pending``):
        that capture took a 70 ms frame on an H200, so it runs once now.

        ONNX Runtime sessions on the CPU are made several at a time: a session's making
        (optimizing its graph) releases the GIL, and the fusion engine's eleven took 1.8 s one
        after another on this project's 2-core CPU, most of a node's start. Other backends
        are made one at a time (a GPU's builds and captures are not to be raced)."""
        missing = [size for size in self._sizes if size not in self._engines]
        workers = min(len(missing), os.cpu_count() or 1, MAKE_WORKERS)
        if workers > 1 and _cpu_onnxruntime(self.full):
            with ThreadPoolExecutor(workers, thread_name_prefix="make-engine") as pool:
                made = list(pool.map(self._make, missing))
            with self._lock:
                for size, engine in zip(missing, made, strict=True):
                    self._engines.setdefault(size, self._checked(size, engine))
        for size in self._sizes:
            engine = self.engine_for(size)
            # Duck-typed: the runtime install has no torch to import TorchEngine from.
            if getattr(engine, "capture_pending", False):
                engine.warmup(1)

    def warmup(self, iterations: int = 1) -> None:
        """Makes every size's engine and runs ``iterations`` batches of zeros through each,
        so that no call pays for loading one.

        Raises:
            engines.errors.EngineError: ``iterations`` < 0, or a make or run fails.
        """
        for size in self._sizes:
            run_warmup(self.engine_for(size), iterations)

    def describe(self) -> EngineDescription:
        """The full size's engine, as in use, with the sizes in ``extra``."""
        d = self.full.describe()
        sizes = ",".join(self._spell(k) for k in self._sizes)
        return dataclasses.replace(d, extra=(*d.extra, (self._label, sizes)))


def _cpu_onnxruntime(engine: Engine) -> bool:
    d = engine.describe()
    return d.backend == "onnxruntime" and d.device == "cpu"
