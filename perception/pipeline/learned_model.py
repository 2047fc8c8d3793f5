"""The learned fusion engine a config names, its config read from the `.yaml` beside its export.

That `.yaml` is a user's file (`pipeline.fusion.model` and `perception demo --learned-model`
point at any export), so it is read as every other user's YAML is: by the bounded loader
(`calibration.errors.load_yaml`: no alias bombs, no nesting past the stack, no key given twice,
no YAML 1.1 number that reads as another value). `engines` may not import `calibration`, so it
only names the files and validates the parsed document
(`engines.fusion.learned_config.learned_model_paths` and `learned_model_from_document`).
"""

from __future__ import annotations

from pathlib import Path

from calibration.errors import load_yaml, read_text
from engines.errors import ModelError
from engines.fusion.learned_config import (
    LearnedModel,
    learned_model_from_document,
    learned_model_paths,
)

__all__ = ["load_learned_model"]


def load_learned_model(model: str | Path) -> LearnedModel:
    """The learned model ``model`` names: ``learned_fusion`` (the packaged one) or an ONNX file
    exported by ``perception train``, with the config, score thresholds, weights and smaller
    exports found beside it.

    Raises:
        ModelError: the file or its ``.yaml`` is missing or unreadable, or the config in it is
            not valid YAML or not a valid config (one line naming the file).
    """
    onnx_path, meta_path = learned_model_paths(model)
    text = read_text(meta_path, "the learned model's config", ModelError)
    document = load_yaml(text, meta_path, "not a learned model config", ModelError)
    return learned_model_from_document(onnx_path, document)
