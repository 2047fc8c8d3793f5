"""What every CLI mistake must give: exit 2 and one line on stderr, no traceback."""

from __future__ import annotations

import pytest

from app.cli import main


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Runs `perception argv` expecting exit 2 (returned, or argparse's own SystemExit) and one
    line on stderr; that line."""
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(list(argv)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()
