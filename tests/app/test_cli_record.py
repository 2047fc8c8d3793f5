"""`perception record`'s summary (app/commands/record.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.commands.record import _report
from replay.recorder import RecorderStats


def test_a_topic_whose_messages_could_not_be_decoded_is_not_said_to_be_misnamed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Every message on lidar arrived but could not be decoded: "nothing arrived on lidar; is
    # it published under another name?" sent the user after the wrong cause.
    stats = RecorderStats(
        received=20, written=5, undecodable=15, arrived=(("lidar", 0), ("gnss", 5))
    )
    _report(stats, tmp_path / "d.mcap")
    out = capsys.readouterr().out
    assert (
        "perception record: nothing decodable arrived on lidar; 15 messages could not be decoded "
        "(the warnings name their streams), or is it published under another name?"
    ) in out
    _report(RecorderStats(received=5, written=5, arrived=(("lidar", 0), ("gnss", 5))), tmp_path)
    assert "nothing decodable arrived on lidar; is it published under another name?" in (
        capsys.readouterr().out
    )
