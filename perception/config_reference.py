"""The reference of every node config key, generated from the config dataclasses themselves:
their fields, types and defaults, and the docstring written under each field. One source, so
the documentation cannot drift from the code (docs/config.md is this module's output, checked
by a test)."""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
import types
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass
from typing import Any, get_type_hints

import yaml

from perception.config import MAX_DURATION_S, NodeConfig

__all__ = ["ConfigKey", "ConfigSection", "config_keys", "config_reference", "field_docs"]

# Units by the key's suffix (SI, as every time and length in the project).
_UNITS = (
    ("_ms", "ms"),
    ("_ns", "ns"),
    ("_s", "s"),
    ("_mps", "m/s"),
    ("_deg", "deg"),
    ("_rad", "rad"),
    ("_m", "m"),
    ("_bytes", "bytes"),
    ("_hz", "Hz"),
)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass `cls` (a string literal right after the
    field's annotated assignment), by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _type_name(hint: Any) -> str:
    origin = getattr(hint, "__origin__", None)
    args: tuple[Any, ...] = tuple(getattr(hint, "__args__", ()))
    if isinstance(hint, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + " or null"
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    names = {int: "integer", float: "number", bool: "boolean", str: "string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _unit(name: str) -> str:
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return unit
    return ""


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ValueError(f"{f.name} has no default")  # a config key must have one


def _yaml(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


@dataclass(frozen=True)
class ConfigKey:
    """One leaf key: its dotted YAML path, type, default (YAML), unit and description."""

    path: str
    type_name: str
    default: str
    unit: str
    doc: str


ConfigSection = tuple[str, str, list[ConfigKey]]


def config_keys(cls: type = NodeConfig, prefix: str = "") -> list[ConfigSection]:
    """Sections of the config: (dotted path of the section, its description, its keys), the
    top level first. Raises ValueError for a field without a docstring."""
    hints = get_type_hints(cls)
    docs = field_docs(cls)
    own: list[ConfigKey] = []
    nested: list[ConfigSection] = []
    for f in fields(cls):
        path = f"{prefix}{f.name}"
        doc = docs.get(f.name)
        if not doc:
            raise ValueError(f"config key {path} has no description (a docstring under it)")
        hint = hints[f.name]
        if is_dataclass(hint) and isinstance(hint, type):
            nested += config_keys(hint, f"{path}.")
            continue
        own.append(ConfigKey(path, _type_name(hint), _yaml(_default(f)), _unit(f.name), doc))
    return [(prefix.rstrip("."), inspect.getdoc(cls) or "", own), *nested]


def config_reference() -> str:
    """Markdown: one table per config section (key, type, default, unit, description)."""
    lines = [
        "# Node configuration reference",
        "",
        "Generated from perception/config.py by `perception config reference`; do not edit.",
        "Every key is optional; a key the node does not know is an error naming it. Relative",
        "paths resolve against the config file's folder. Every number is finite and every",
        "integer fits 64 bits; a duration (unit ms or s) lies from 0 to",
        f"{MAX_DURATION_S:.0f} s (`sync.camera_offsets_ms` from minus that).",
    ]
    for path, doc, keys in config_keys():
        title = f"`{path}`" if path else "Top level"
        lines += ["", f"## {title}", "", " ".join(doc.split()), ""]
        lines += [
            "| key | type | default | unit | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key in keys:
            default = key.default.replace("|", "\\|")
            lines.append(
                f"| `{key.path}` | {key.type_name} | `{default}` | {key.unit} | {key.doc} |"
            )
    return "\n".join(lines) + "\n"
