"""The commands print names that are not UTF-8, or not in the stream's encoding, instead of
failing after their work (app.streams)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _keys(out: bytes, encoding: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    argv = [sys.executable, "-m", "app.cli", "keys", "generate", "--out", os.fsdecode(out)]
    return subprocess.run(argv, env=env, capture_output=True, timeout=120, check=False)


def test_a_folder_named_in_another_encoding_is_printed_as_it_is_named(tmp_path: Path) -> None:
    # Written, then the line naming where failed: exit 1, "unexpected UnicodeEncodeError".
    folder = os.fsencode(tmp_path) + b"/keys-\xfc"
    done = _keys(folder, "utf-8")
    assert done.returncode == 0, done.stderr
    assert folder + b"/node.key " in done.stdout
    assert os.path.isfile(folder + b"/node.key_secret")


def test_a_name_the_stream_cannot_encode_is_escaped(tmp_path: Path) -> None:
    folder = tmp_path / "keys-\u00e9"
    done = _keys(os.fsencode(folder), "ascii")
    assert done.returncode == 0, done.stderr
    assert os.fsencode(tmp_path) + b"/keys-\\xe9/node.key " in done.stdout
