"""`perception config show|reference`: the effective node configuration, and every key."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import yaml

from app.common import load_node_config
from perception.config_reference import config_reference

__all__ = ["cmd_config_reference", "cmd_config_show"]


def _plain(value: Any) -> Any:
    """Tuples as lists, so the YAML is the form a config file is written in."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def cmd_config_show(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    print(yaml.safe_dump(_plain(dataclasses.asdict(config)), sort_keys=False), end="")
    return 0


def cmd_config_reference(_args: argparse.Namespace) -> int:
    print(config_reference(), end="")
    return 0
