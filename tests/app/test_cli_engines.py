"""`perception run` with engines that cannot run here: one line naming the setting, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from engines import tensorrt_backend


def test_run_without_tensorrt_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    yolox_path: Path,
) -> None:
    monkeypatch.setattr(tensorrt_backend, "_trt", None)
    monkeypatch.setattr(tensorrt_backend, "_IMPORT_PROBLEM", "import tensorrt failed: simulated")
    config = tmp_path / "node.yaml"
    config.write_text(
        f"camera_model: {{path: {yolox_path}}}\nengines: {{backend: tensorrt, device: cuda}}\n"
    )
    code = main(["run", "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        "perception run: error: engines.backend tensorrt: TensorRT 10 is not installed (import "
        "tensorrt failed: simulated); set engines.fallback: onnxruntime to run ONNX Runtime on "
        "the CPU instead"
    )


def test_run_with_a_bad_engines_key_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("engines: {backend: tensorrt, precision: fp8}\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"perception run: error: {config}: engines.precision: must be one of")
