"""What the commands share (app/common.py)."""

from __future__ import annotations

import signal
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


_WHICH_SIGNAL = textwrap.dedent(
    """
    import os, signal
    from app.common import stop_on_signals

    stop = stop_on_signals()
    print(stop.signum)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.wait(10)
    print(stop.signum)
    """
)


def test_the_stop_event_says_which_signal_came_first() -> None:
    # A bench stopped by SIGTERM ended with SIGINT's 130: the event said that one came only.
    done = subprocess.run(
        [sys.executable, "-c", _WHICH_SIGNAL],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", str(int(signal.SIGTERM))]
