"""`load_yaml` refuses the numbers YAML 1.1 reads as another value than their reader sees."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from calibration import CalibrationError, load_rig_yaml
from calibration.errors import load_yaml
from perception.config import load_config
from perception.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "calibration" / "examples" / "kitti_rig.yaml"

_UNDERSCORES = "which drops the underscores"
_BASE_60 = "which reads numbers with colons as base 60"
_OCTAL = "which reads a leading 0 as octal"
_BINARY = "which reads 0b as binary (YAML 1.2 reads it as text)"


class _OtherError(Exception):
    pass


def _load(text: str) -> object:
    return load_yaml(text, "f.yaml", "not valid YAML", _OtherError)


# (as written, what YAML 1.1 reads it as, why, what to write instead)
MISREAD = [
    ("7_00", "700", _UNDERSCORES, "700"),
    ("1_000.5", "1000.5", _UNDERSCORES, "1000.5"),
    ("-1_0", "-10", _UNDERSCORES, "-10"),
    ("1.0_0", "1.0", _UNDERSCORES, "1.0"),
    ("1_0000000000000000.0", "1.0e+16", _UNDERSCORES, "1.0e+16"),
    ("0x_1F", "31", _UNDERSCORES, "0x1F"),
    ("-0x1_F", "-31", _UNDERSCORES, "-0x1F"),
    ("1:30", "90", _BASE_60, "90"),
    ("1:30.5", "90.5", _BASE_60, "90.5"),
    ("-1:30", "-90", _BASE_60, "-90"),
    ("1:30:00", "5400", _BASE_60, "5400"),
    ("0b101", "5", _BINARY, "5"),
    ("-0b1_1", "-3", _BINARY, "-3"),
    (
        "0755",
        "493",
        _OCTAL,
        "755 for the decimal or 493 for the octal value (YAML 1.1 reads 0o755 as text)",
    ),
    (
        "-0755",
        "-493",
        _OCTAL,
        "-755 for the decimal or -493 for the octal value (YAML 1.1 reads -0o755 as text)",
    ),
    (
        "010",
        "8",
        _OCTAL,
        "10 for the decimal or 8 for the octal value (YAML 1.1 reads 0o10 as text)",
    ),
    ("07", "7", _OCTAL, "7"),
    ("00", "0", _OCTAL, "0"),
    ("0_0", "0", _OCTAL, "0"),
]


@pytest.mark.parametrize(("written", "reads_as", "why", "instead"), MISREAD)
def test_a_number_yaml_1_1_misreads_is_refused_naming_it(
    written: str, reads_as: str, why: str, instead: str
) -> None:
    """PyYAML read `7_00` as 700, `1:30` as 90 and `0755` as 493 without a word."""
    assert yaml.safe_load(written) == yaml.safe_load(reads_as)  # what was read before
    with pytest.raises(_OtherError) as info:
        _load(f"a: 1\nb: {written}\n")
    assert str(info.value) == (
        f"f.yaml: not valid YAML (line 2, column 4: `{written}` reads as {reads_as} in YAML 1.1, "
        f"{why}: write {instead}, or quote it for text)"
    )


@pytest.mark.parametrize(("written", "reads_as", "why", "instead"), MISREAD)
def test_a_misread_number_is_refused_as_a_key_or_in_a_list(
    written: str, reads_as: str, why: str, instead: str
) -> None:
    for text, where in ((f"{written}: x\n", "line 1, column 1"), (f"[1, {written}]", "column 5")):
        with pytest.raises(_OtherError) as info:
            _load(text)
        message = str(info.value)
        assert f"{where}: `{written}` reads as {reads_as} in YAML 1.1" in message
        assert "\n" not in message


@pytest.mark.parametrize(("written", "reads_as", "why", "instead"), MISREAD)
def test_what_the_message_says_to_write_reads_as_it_says(
    written: str, reads_as: str, why: str, instead: str
) -> None:
    value = yaml.safe_load(written)
    if " for the decimal or " in instead:  # the decimal the digits spell, or the octal value
        decimal, rest = instead.split(" for the decimal or ")
        assert _load(decimal) == int(written.replace("_", ""))
        assert _load(rest.split(" for ")[0]) == value
    else:
        assert _load(instead) == value
    assert _load(f"'{written}'") == written  # quoted, it is text


PLAIN = [
    "0",
    "-0",
    "+0",
    "-3",
    "+12",
    "1.5",
    "0.5",
    "-0.0",
    "0.",
    "1e-3",  # text to YAML 1.1 (no dot): as before, the readers say so
    "1.0e+3",
    "1.5e-07",
    ".inf",
    "-.inf",
    "+.inf",
    ".nan",
    "0x1F",
    "-0x1f",
    "012.5",  # a float's leading 0 is no octal
    "0o17",  # text to YAML 1.1
    "08",  # text to YAML 1.1 (no octal digit)
    "'7_00'",
    "'1:30'",
    "'0755'",
    '"0b101"',
]


@pytest.mark.parametrize("text", PLAIN)
def test_plain_numbers_load_as_safe_load_reads_them(text: str) -> None:
    expected = yaml.safe_load(text)
    for doc, value in (
        (text, _load(text)),
        (f"k: [{text}]", _load(f"k: [{text}]")["k"][0]),  # type: ignore[index]
        (f"{text}: v", next(iter(_load(f"{text}: v")))),  # type: ignore[call-overload]
    ):
        assert type(value) is type(expected), doc
        if isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(value), doc  # type: ignore[arg-type]
        else:
            assert repr(value) == repr(expected), doc  # -0.0 stays -0.0


def test_pyyaml_s_own_safe_loader_is_left_as_it_was() -> None:
    with pytest.raises(_OtherError):
        _load("7_00")
    assert yaml.safe_load("a: [7_00, 1:30, 0755, 0b101]") == {"a": [700, 90, 493, 5]}
    assert yaml.load("7_00", Loader=yaml.SafeLoader) == 700


def test_a_rig_file_with_a_misread_number_is_refused_naming_the_file(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    assert "    width: 1242\n" in text
    rig = tmp_path / "rig.yaml"
    rig.write_text(text.replace("    width: 1242\n", "    width: 1_242\n", 1))
    line = text.splitlines().index("    width: 1242") + 1
    with pytest.raises(CalibrationError) as info:
        load_rig_yaml(rig)
    assert str(info.value) == (
        f"{rig}: not valid YAML (line {line}, column 12: `1_242` reads as 1242 in YAML 1.1, "
        "which drops the underscores: write 1242, or quote it for text)"
    )
    rig.write_text(text)
    assert load_rig_yaml(rig).cameras["cam0"].width == 1242


def test_a_node_config_with_a_misread_number_is_refused_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("sync:\n  window_ms: 7_00\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value) == (
        f"{config}: invalid YAML (line 2, column 14: `7_00` reads as 700 in YAML 1.1, which "
        "drops the underscores: write 700, or quote it for text)"
    )
    config.write_text("sync:\n  window_ms: 700\n")
    assert load_config(config).sync.window_ms == 700.0
