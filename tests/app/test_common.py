"""What the commands share (app/common.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A signal arriving while the main thread holds the stop event's lock: inside `stop.wait`
# (the commands' loops), or inside the handler's own `stop.set` when a second signal follows
# the first at once (`timeout` sends its signal to the process and to its group).
_SIGNAL_WHILE_LOCKED = textwrap.dedent(
    """
    import os, signal
    from app.common import stop_on_signals

    stop = stop_on_signals()
    with stop._cond:  # the lock Event.set takes
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecodes, at which Python runs the handlers
            pass
    print("stopped" if stop.wait(10) else "not stopped")
    """
)


def test_a_signal_while_the_stop_events_lock_is_held_stops_the_command() -> None:
    # In a process of its own: the handlers are process-wide, and a deadlock ends only there.
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SIGNAL_WHILE_LOCKED],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the signal handler deadlocked on the stop event's lock") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"
