"""Torch ops with a hand-written ONNX export, shared by the project's own graphs."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

__all__ = ["compact_constants", "export_static_onnx", "scatter_amax"]


class _ScatterAmax(torch.autograd.Function):
    """``data.scatter_reduce(axis, index, src, "amax", include_self=True)`` with a plain export.

    The classic exporter wraps ``scatter_reduce`` in rank-checking ``If`` nodes whose outputs
    ONNX Runtime's shape inference rejects ("axis must be in [-r, r-1]"); this writes the one
    ``ScatterElements(reduction="max")`` node (opset >= 18) it stands for, without touching the
    exporter's global symbolic registry.
    """

    @staticmethod
    def forward(
        ctx: object, data: torch.Tensor, index: torch.Tensor, src: torch.Tensor, axis: int
    ) -> torch.Tensor:
        return data.scatter_reduce(axis, index, src, reduce="amax", include_self=True)

    @staticmethod
    def symbolic(g: object, data: object, index: object, src: object, axis: int) -> object:
        out = g.op(  # type: ignore[attr-defined]
            "ScatterElements", data, index, src, axis_i=axis, reduction_s="max"
        )
        out.setType(data.type())  # type: ignore[attr-defined]
        return out


def scatter_amax(
    data: torch.Tensor, axis: int, index: torch.Tensor, src: torch.Tensor
) -> torch.Tensor:
    """``data`` with ``src`` max-reduced into it at ``index`` along ``axis`` (a new tensor)."""
    out: torch.Tensor = _ScatterAmax.apply(data, index, src, axis)  # type: ignore[no-untyped-call]
    return out


def compact_constants(model: onnx.ModelProto, min_elements: int = 256) -> None:
    """Rewrites, in place, the large constants that constant folding spelled out element by
    element: one value repeated becomes ``ConstantOfShape``, ``0, 1, ..., n-1`` becomes
    ``Range``. The graph computes the same tensors (runtimes fold them back when loading); the
    file shrinks by the scatter buffers and index ranges of the padded shapes.
    """
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        value = node.attribute[0].t if node.op_type == "Constant" and node.attribute else None
        if value is None or node.attribute[0].name != "value":
            nodes.append(node)
            continue
        array = numpy_helper.to_array(value)
        flat = array.reshape(-1)
        out = node.output[0]
        if array.size < min_elements:
            nodes.append(node)
        elif (flat.view(np.uint8).reshape(flat.size, -1) == flat[:1].view(np.uint8)).all():
            shape = numpy_helper.from_array(np.asarray(array.shape, np.int64))
            fill = numpy_helper.from_array(flat[:1].copy())
            nodes.append(helper.make_node("Constant", [], [out + "_shape"], value=shape))
            nodes.append(helper.make_node("ConstantOfShape", [out + "_shape"], [out], value=fill))
        elif (
            array.ndim == 1
            and array.dtype == np.int64
            and np.array_equal(array, np.arange(array.size, dtype=np.int64))
        ):
            bounds = (("start", 0), ("limit", array.size), ("delta", 1))
            for name, v in bounds:
                scalar = numpy_helper.from_array(np.asarray(v, np.int64))
                nodes.append(helper.make_node("Constant", [], [f"{out}_{name}"], value=scalar))
            nodes.append(helper.make_node("Range", [f"{out}_{n}" for n, _ in bounds], [out]))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def export_static_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    *,
    opset: int,
    constant_folding: bool = True,
    compact: bool = False,
) -> Path:
    """Export ``module`` (evaluated on ``example_inputs``) to ONNX with static shapes.

    The TorchScript exporter (``dynamo=False``) is used on purpose: it needs no extra packages
    and its plain static graphs run under ONNX Runtime and TensorRT; its deprecation and
    tracer warnings are expected and silenced. ``compact`` rewrites large folded constants
    (:func:`compact_constants`). The file is written under a temporary name beside ``path``
    and renamed, so a reader never sees a partial model. Returns ``path``; raises OSError when
    the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Exported into memory and written here: the exporter hands a file name to C++, which
    # cannot take a path that is not UTF-8 (a folder name in another encoding), and a whole
    # training run failed at its export with a TypeError the length of the graph.
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            example_inputs,
            # The TorchScript exporter writes to a file object (its own code says so); torch
            # types `f` as a path only.
            buffer,  # type: ignore[arg-type]
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            do_constant_folding=constant_folding,
            dynamo=False,
        )
    data = buffer.getvalue()
    if compact:
        model = onnx.load_model_from_string(data)
        compact_constants(model)
        data = model.SerializeToString()
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates the file private to its owner; a model is ordinary shared data.
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
