"""A learned model's config (the `.yaml` beside its export, a user's file) is read by the bounded
YAML loader: whatever is wrong in it is one line naming it, never a hang, a traceback or a
value other than the one written."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from calibration.errors import MAX_TEXT_BYTES
from engines.errors import ModelError
from engines.fusion.learned_config import PACKAGED_LEARNED_MODEL, LearnedFusionConfig
from perception.pipeline.learned_model import load_learned_model

PACKAGED_META = PACKAGED_LEARNED_MODEL.with_suffix(".yaml")

#: A "billion laughs": each anchored list repeats the one before nine times, so the last holds
#: 9^9 strings in a few hundred bytes. Top-level keys the config's reader never looks at.
ALIAS_BOMB = "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
)
BOMB_REFUSED = (
    "its aliases repeat more than 1,000,000 values: an alias bomb, or anchors used far more "
    "than a file of this kind needs"
)


def _packaged_with(old: str, new: str) -> str:
    valid = PACKAGED_META.read_text(encoding="utf-8")
    assert old in valid
    return valid.replace(old, new, 1)


def bad_sidecars() -> dict[str, tuple[str, str]]:
    """Per case, a learned model's config that the loader refuses and what its one line,
    `PATH: not a learned model config (...)`, says within the brackets. Each was read without
    a word before it went through the bounded loader (the nesting excepted: refused already)."""
    return {
        "alias-bomb": (
            ALIAS_BOMB + _packaged_with("  max_pillars: 6000\n", "  max_pillars: *l8\n"),
            BOMB_REFUSED,
        ),
        "nested": ("[" * 10_000, "nests too deep"),
        "key-twice": (
            _packaged_with("  max_pillars: 6000\n", "  max_pillars: 6000\n  max_pillars: 3000\n"),
            "found the key 'max_pillars' twice in \"<unicode string>\", line 17, column 3",
        ),
        "7_00": (
            _packaged_with("  max_detections: 64\n", "  max_detections: 7_00\n"),
            "line 23, column 19: `7_00` reads as 700 in YAML 1.1, which drops the underscores: "
            "write 700, or quote it for text",
        ),
    }


def write_model(folder: Path, sidecar: str) -> Path:
    """An export (its bytes never read here) with `sidecar` as its config; the export."""
    model = folder / "m.onnx"
    model.write_bytes(b"")
    (folder / "m.yaml").write_text(sidecar, encoding="utf-8")
    return model


def test_the_packaged_model_is_read() -> None:
    model = load_learned_model("learned_fusion")
    assert model.onnx_path == PACKAGED_LEARNED_MODEL
    assert model.config == LearnedFusionConfig()
    assert model.score_thresholds == {"Car": 0.5, "Pedestrian": 0.6, "Cyclist": 0.55}
    assert model.weights_path is not None and len(model.bucket_paths) == 3


@pytest.mark.parametrize("case", list(bad_sidecars()))
def test_a_bad_learned_model_config_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    sidecar, says = bad_sidecars()[case]
    with pytest.raises(ModelError) as info:
        load_learned_model(write_model(tmp_path, sidecar))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'm.yaml'}: not a learned model config (")
    assert says in message and "\n" not in message


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  classes:\n  - Car\n  - Pedestrian\n  - Cyclist\n", "  classes: *l8\n"),
        ("  x_range_m:\n  - 0.0\n  - 44.8\n", "  x_range_m: [*l7, *l8]\n"),
        ("score_thresholds:", "score_thresholds: *l8\nunused_thresholds:"),
        # Where nothing reads it: refused all the same (it was read without a word).
        ("validation:", "validation: *l8\nunused_validation:"),
        ("", ""),
    ],
    ids=["classes", "x_range_m", "score_thresholds", "validation", "unreferenced"],
)
def test_an_alias_bomb_is_refused_at_once_wherever_it_is(
    tmp_path: Path, old: str, new: str
) -> None:
    """Nine lines of nested aliases hold 9^9 values: refused as the aliases are composed, in
    milliseconds and kilobytes, whether the config's reader would walk them or not."""
    model = write_model(tmp_path, ALIAS_BOMB + _packaged_with(old, new))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ModelError) as info:
            load_learned_model(model)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == f"{tmp_path / 'm.yaml'}: not a learned model config ({BOMB_REFUSED})"
    # The read buffer of read_text (MAX_TEXT_BYTES, allocated, never touched) aside: kilobytes.
    assert seconds < 2.0 and peak < MAX_TEXT_BYTES + (4 << 20), (seconds, peak)


def test_deep_nesting_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        load_learned_model(write_model(tmp_path, "[" * 100_000))
    assert str(info.value) == f"{tmp_path / 'm.yaml'}: not a learned model config (nests too deep)"


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            "score_thresholds:\n  Car: 0.5\n",
            "score_thresholds:\n  Car: 0.5\n  Car: 0.05\n",
            "found the key 'Car' twice",
        ),
        ("model:\n", "model: {pillar_m: 0.16}\nmodel:\n", "found the key 'model' twice"),
        ("  Car: 0.5\n", "  Car: 0.5_5\n", "`0.5_5` reads as 0.55 in YAML 1.1"),
        ("  points_per_pillar: 12\n", "  points_per_pillar: 012\n", "reads a leading 0 as octal"),
    ],
    ids=["threshold-twice", "section-twice", "underscore", "octal"],
)
def test_a_value_other_than_the_one_written_is_refused(
    tmp_path: Path, old: str, new: str, says: str
) -> None:
    """A threshold or a section given twice kept the last, a grouped or zero-led number read
    as YAML 1.1 reads it: the node ran on values its user never wrote."""
    with pytest.raises(ModelError) as info:
        load_learned_model(write_model(tmp_path, _packaged_with(old, new)))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'm.yaml'}: not a learned model config (")
    assert says in message and "\n" not in message


@pytest.mark.parametrize(
    ("sidecar", "says"),
    [
        (None, "cannot read the learned model's config (No such file or directory)"),
        (b"model: \xff\n", "not UTF-8 text (byte 0xff at offset 7)"),
        (b"- 1\n", "not a learned model config (a mapping expected, got list)"),
        (b"model: [\n", "not a learned model config (while parsing a flow node expected"),
    ],
    ids=["missing", "not-utf8", "a-list", "not-yaml"],
)
def test_an_unreadable_learned_model_config_is_one_line(
    tmp_path: Path, sidecar: bytes | None, says: str
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    if sidecar is not None:
        (tmp_path / "m.yaml").write_bytes(sidecar)
    with pytest.raises(ModelError) as info:
        load_learned_model(model)
    assert str(info.value).startswith(f"{tmp_path / 'm.yaml'}: {says}")
    assert "\n" not in str(info.value)
