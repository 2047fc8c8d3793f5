"""The dependency direction of DESIGN.md, checked on every import of every module (lazy imports
inside functions included): `calibration` and `engines` import nothing of the others;
`perception` (the node library) uses both; `replay` uses `perception`; `app` ties all four."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("calibration", "engines", "perception", "replay", "app")
ALLOWED: dict[str, frozenset[str]] = {
    "calibration": frozenset(),
    "engines": frozenset(),
    "perception": frozenset({"calibration", "engines"}),
    "replay": frozenset({"calibration", "engines", "perception"}),
    "app": frozenset({"calibration", "engines", "perception", "replay"}),
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `path`, at any depth, plus
    `importlib.import_module("...")` calls with a literal name."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        line = getattr(node, "lineno", 0)
        found += [(line, name.split(".")[0]) for name in names]
    return found


def layering_violations(root: Path) -> list[str]:
    """Every import under `root` that goes against ALLOWED, as `file:line: a imports b`."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for line, target in imported_packages(path):
                if target in PACKAGES and target != package and target not in ALLOWED[package]:
                    where = path.relative_to(root)
                    out.append(f"{where}:{line}: {package} imports {target}")
    return out


def test_every_import_follows_the_dependency_direction() -> None:
    assert layering_violations(REPO) == []


@pytest.mark.parametrize(
    ("package", "source", "target"),
    [
        ("calibration", "import perception.msgs\n", "perception"),
        ("engines", "def f():\n    from calibration import Rig\n", "calibration"),
        (
            "perception",
            "def f():\n    import importlib\n    importlib.import_module('replay.drive')\n",
            "replay",
        ),
        ("replay", "from app.cli import main\n", "app"),
    ],
)
def test_a_wrong_direction_is_found_even_when_lazy(
    tmp_path: Path, package: str, source: str, target: str
) -> None:
    for name in PACKAGES:
        (tmp_path / name).mkdir()
    (tmp_path / package / "bad.py").write_text(source)
    (violation,) = layering_violations(tmp_path)
    assert violation.endswith(f"{package} imports {target}")
