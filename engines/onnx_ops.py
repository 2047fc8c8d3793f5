"""Torch ops with a hand-written ONNX export, shared by the project's own graphs."""

from __future__ import annotations

import torch

__all__ = ["scatter_amax"]


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
