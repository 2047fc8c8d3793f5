"""A batch-N copy of a batch-1 ONNX detector, so one engine call serves every camera.

Detectors exported from PyTorch with a fixed batch of 1 bake that 1 into their graph: the input
and output shapes, and the target shapes of head reshapes (YOLOX's ``Reshape(x, [1, 85, -1])``).
Rewriting them is enough when every op between is batch-agnostic; the rewrite is then checked by
running the batched model on N different random images and comparing each slice with the
original model's output on that image alone. A graph that mixes images (YOLO-FastestV2's channel
shuffle reshapes to ``[24, 2, 1936]``, with no batch axis) fails that check and is refused.

Batched copies are cached beside the engine cache, named by the source's sha256 and N. Rewriting
needs the ``onnx`` package (a development and GPU-build dependency; the node's default batch of 1
never needs it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from engines.errors import EngineError, ModelError
from engines.onnxruntime_backend import OnnxRuntimeEngine

__all__ = ["BATCH_TOLERANCE", "DEFAULT_BATCH_CACHE_DIR", "batched_onnx"]

DEFAULT_BATCH_CACHE_DIR = Path.home() / ".cache" / "perception-node" / "batched"

#: Largest absolute difference allowed between a batched slice and the batch-1 output; float32
#: kernels may sum in another order for another batch size.
BATCH_TOLERANCE = 1e-3

_log = logging.getLogger(__name__)


def batched_onnx(model_path: Path, batch: int, cache_dir: Path | None = None) -> Path:
    """The batch-``batch`` version of ``model_path`` (itself when ``batch`` is 1).

    Raises:
        EngineError: ``batch`` < 1, the ``onnx`` package is missing, the model's batch axis is
            not a fixed 1, or the rewritten graph does not give each image its own output.
        ModelError: the model cannot be read.
    """
    model_path = Path(model_path)
    if batch < 1:
        raise EngineError(f"{model_path.name}: batch must be >= 1, got {batch}")
    if batch == 1:
        return model_path
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:24]
    directory = Path(cache_dir or DEFAULT_BATCH_CACHE_DIR).expanduser()
    out = directory / f"{model_path.stem}-{digest}-b{batch}.onnx"
    if out.is_file():
        return out
    try:
        import onnx  # noqa: PLC0415 - optional: only batch > 1 needs it
    except ImportError:
        raise EngineError(
            f"{model_path.name}: batching cameras needs the onnx package to rewrite the model "
            "(pip install onnx), or camera_model.batch: 1"
        ) from None
    model = onnx.load(str(model_path))
    _rewrite(model, batch, model_path.name)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".onnx.tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        _check_slices(model_path, Path(tmp), batch)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _log.info("%s: wrote its batch-%d version %s", model_path.name, batch, out)
    return out


def _rewrite(model: object, batch: int, name: str) -> None:
    """Sets the leading 1 of the graph's inputs, outputs and constant reshape/expand targets."""
    from onnx import numpy_helper  # noqa: PLC0415 - optional, see batched_onnx

    graph = model.graph  # type: ignore[attr-defined]
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) < 3 or dims[0].dim_value != 1:
            shape = [d.dim_value or d.dim_param for d in dims]
            raise EngineError(
                f"{name}: cannot be batched: {value.name!r} {shape} has no fixed batch axis of 1"
            )
        dims[0].dim_value = batch
    # Intermediate shapes recorded by the exporter would contradict the new batch size.
    del graph.value_info[:]
    constants = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = node
    for node in graph.node:
        if node.op_type not in ("Reshape", "Expand") or len(node.input) < 2:
            continue
        source = constants.get(node.input[1])
        if source is None:
            continue
        tensor = source if hasattr(source, "dims") else source.attribute[0].t
        target = np.array(numpy_helper.to_array(tensor))
        if target.ndim == 1 and len(target) >= 2 and target[0] == 1:
            target[0] = batch
            tensor.CopyFrom(numpy_helper.from_array(target, tensor.name))


def _check_slices(original: Path, batched: Path, batch: int) -> None:
    single = OnnxRuntimeEngine(original, num_threads=1)
    try:
        many = OnnxRuntimeEngine(batched, num_threads=1)
    except ModelError as e:  # e.g. a batch-1 constant concatenated with the batch
        raise EngineError(f"{original.name}: cannot be batched: {e}") from None
    (spec,) = single.inputs
    rng = np.random.default_rng(0)
    shape = tuple(int(d) for d in spec.shape[1:])
    images = rng.uniform(0, 255, (batch, *shape)).astype(np.float32)
    try:
        out = next(iter(many.run({spec.name: images}).values()))
    except EngineError as e:
        raise EngineError(f"{original.name}: cannot be batched: {e}") from None
    for i in range(batch):
        ref = next(iter(single.run({spec.name: images[i : i + 1]}).values()))
        err = float(np.max(np.abs(out[i : i + 1] - ref))) if out.shape[1:] == ref.shape[1:] else 1
        if not err <= BATCH_TOLERANCE:
            raise EngineError(
                f"{original.name}: cannot be batched: its graph mixes the images of a batch "
                f"(image {i} differs from its batch-1 output by {err:.3g})"
            )
