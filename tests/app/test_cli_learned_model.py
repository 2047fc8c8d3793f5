"""A learned model's config that the bounded YAML loader refuses (an alias bomb, nesting past the
stack, a key given twice, a YAML 1.1 number) stops the commands that load the model, the node's
`pipeline.fusion.model` and `demo --learned-model`, in one line naming it, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.registry import PACKAGED_MODELS_DIR
from tests.app.one_line import fails
from tests.perception.pipeline.test_learned_model import bad_sidecars, write_model

CASES = list(bad_sidecars())


@pytest.mark.parametrize("case", CASES)
def test_run_with_a_bad_learned_model_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    sidecar, says = bad_sidecars()[case]
    model = write_model(tmp_path, sidecar)
    config = tmp_path / "node.yaml"
    config.write_text(
        f"camera_model: {{path: {PACKAGED_MODELS_DIR / 'synth_detector.onnx'}, kind: yolox}}\n"
        f'inputs: {{endpoints: ["ipc://{tmp_path}/in"]}}\n'
        f'outputs: {{endpoint: "ipc://{tmp_path}/out"}}\n'
        f"pipeline:\n  fusion: {{kind: learned, model: {model}}}\n"
    )
    err = fails(capsys, "run", "--config", str(config))
    assert err.startswith(
        f"perception run: error: {tmp_path / 'm.yaml'}: not a learned model config ("
    )
    assert says in err


@pytest.mark.parametrize("case", CASES)
def test_demo_with_a_bad_learned_model_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    sidecar, says = bad_sidecars()[case]
    model = write_model(tmp_path, sidecar)
    out = tmp_path / "out"
    out.mkdir()
    err = fails(
        capsys, "demo", "--fusion", "learned", "--learned-model", str(model), "--seconds", "0.3",
        "--out-dir", str(out), "--quiet",
    )  # fmt: skip
    assert err.startswith(
        f"perception demo: error: {tmp_path / 'm.yaml'}: not a learned model config ("
    )
    assert says in err
    assert not list(out.iterdir())  # refused before a drive was generated
