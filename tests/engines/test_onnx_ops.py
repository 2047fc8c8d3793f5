"""ONNX export helpers (engines/onnx_ops.py) on real exports."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from engines.onnx_ops import export_static_onnx

torch = pytest.importorskip("torch")


def test_an_export_into_a_folder_named_in_another_encoding(tmp_path: Path) -> None:
    """torch's exporter hands the file name to C++, which takes UTF-8 only: `perception train
    --out` into a folder whose name is not UTF-8 trained to the end, then failed at the export
    with a TypeError the length of the graph."""
    folder = tmp_path / os.fsdecode(b"run-\xff")
    folder.mkdir()
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    path = folder / "model.onnx"
    example = torch.ones(1, 3)
    for compact in (False, True):
        assert (
            export_static_onnx(net, (example,), path, ["x"], ["y"], opset=17, compact=compact)
            == path
        )
        session = ort.InferenceSession(path.read_bytes())
        [y] = session.run(None, {"x": example.numpy()})
        np.testing.assert_allclose(y, net(example).detach().numpy(), rtol=1e-6)
        assert [p.name for p in folder.iterdir()] == ["model.onnx"]
        assert path.stat().st_mode & 0o777 == 0o644
