"""`perception record`, `play` and `replay` as processes over real sockets and files, against
what breaks them (issue #13, finding 7): a hostile publisher, a full disk, SIGKILL, a damaged
drive. Each recording's counts add up (received == written + dropped + undecodable + failed)
and `written` is what the drive holds.

The full disk is a file size limit (RLIMIT_FSIZE, set in the child before the CLI starts: no
root needed; writes past it fail with EFBIG, and Python ignores SIGXFSZ), which the recorder
meets exactly as ENOSPC: a write that fails part-way.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perception.io.transport import Publisher
from perception.msgs.types import GnssFix, Header
from replay.drive import DriveReader
from tests.replay.test_offline import damaged_drive
from tests.replay.test_recorder import deep_rig_frames

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "app.cli"]
# The CLI under a file size limit of N bytes (argv[1]), the rest of argv its arguments.
LIMITED_CLI = [
    sys.executable,
    "-c",
    "import resource, runpy, sys; n = int(sys.argv.pop(1)); "
    # No bytecode caches: one written past the limit is cut short, and breaks later imports.
    "sys.dont_write_bytecode = True; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "runpy.run_module('app.cli', run_name='__main__', alter_sys=True)",
]
SUMMARY = re.compile(
    r"(\d+) received, (\d+) written, (\d+) dropped \(.*?\), (\d+) undecodable, (\d+) failed"
)


def _fix(seq: int) -> GnssFix:
    return GnssFix(Header("gnss", seq, 1_000_000 + seq, "gnss"), 49.0, 8.4, 100.0)


def _cli(file_size_limit: int | None) -> list[str]:
    return CLI if file_size_limit is None else [*LIMITED_CLI, str(file_size_limit)]


def _start(args: list[str], file_size_limit: int | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*_cli(file_size_limit), "record", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once its sockets are connected
    assert "recording" in line, line + proc.communicate(timeout=30)[1]
    time.sleep(0.5)  # the subscriptions reach the publisher
    return proc


def _counts(stdout: str, out: Path) -> dict[str, int]:
    match = SUMMARY.search(stdout)
    assert match, stdout
    received, written, dropped, undecodable, failed = map(int, match.groups())
    assert received == written + dropped + undecodable + failed, stdout
    assert len(list(DriveReader(out).messages())) == written
    return {"received": received, "written": written, "dropped": dropped, "failed": failed,
            "undecodable": undecodable}  # fmt: skip


def test_hostile_publisher_costs_its_messages_only(tmp_path: Path) -> None:
    """Finding 7: a rig nested 1,000 deep killed the writer; 544 messages vanished uncounted;
    SIGINT then hung. Now it costs one message, garbage is counted, the log stays short."""
    endpoint = f"ipc://{tmp_path}/sensors"
    out = tmp_path / "hostile.mcap"
    with Publisher(endpoint, hwm=100_000) as pub:
        proc = _start(["gnss", "rig", "--out", str(out), "--endpoint", endpoint])
        for seq in range(50):
            pub.send(_fix(seq))
        pub.socket.send_multipart(deep_rig_frames())
        garbage = 0
        for seq in range(50, 780):
            pub.send(_fix(seq))
            if seq % 3 == 0:  # undecodable messages among them
                pub.socket.send_multipart([b"gnss", b"\xc1 not a header"])
                garbage += 1
            time.sleep(0.0005)
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        stop_s = time.monotonic() - t0
    assert proc.returncode == 0, stdout + stderr
    assert stop_s < 5.0
    counts = _counts(stdout, out)
    assert counts["received"] == 780 + 1 + garbage
    assert counts["written"] == 780 and counts["dropped"] == 0
    assert counts["undecodable"] + counts["failed"] == 1 + garbage
    # Rate-limited: one line per kind of problem, not one per message.
    assert len(stderr.splitlines()) <= 4, stderr
    assert "Traceback" not in stderr


def test_full_disk_stops_the_recording_with_one_error_line(tmp_path: Path) -> None:
    """Finding 7: on a full disk, one warning per message, then an uncaught OSError on SIGINT.
    Now the recording stops by itself: one error line, exit code 1, the drive readable up to
    what was written."""
    limit = 1024 * 1024
    endpoint = f"ipc://{tmp_path}/sensors"
    out = tmp_path / "full.mcap"
    args = ["gnss", "--out", str(out), "--endpoint", endpoint, "--compression", "none"]
    with Publisher(endpoint, hwm=100_000) as pub:
        proc = _start(args, file_size_limit=limit)
        seq = 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            pub.send(_fix(seq))
            seq += 1
            if seq % 100 == 0:
                time.sleep(0.01)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1, stdout + stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("perception record: error: ") and str(out) in lines[0]
    assert "File too large" in lines[0]
    counts = _counts(stdout, out)
    assert counts["written"] > 0 and counts["received"] <= seq
    assert out.stat().st_size <= limit
    assert DriveReader(out).truncated


def test_killed_recorder_loses_at_most_the_last_second(tmp_path: Path) -> None:
    """GNSS at 100 Hz fills a 256 KB chunk in minutes: without a time-based flush a kill lost
    all of it. The messages sent more than a second before SIGKILL must all be in the drive."""
    endpoint = f"ipc://{tmp_path}/sensors"
    out = tmp_path / "killed.mcap"
    sent_at: list[float] = []
    with Publisher(endpoint, hwm=100_000) as pub:
        proc = _start(["gnss", "--out", str(out), "--endpoint", endpoint])
        t0 = time.monotonic()
        for seq in range(300):
            due = t0 + seq * 0.01
            time.sleep(max(0.0, due - time.monotonic()))
            pub.send(_fix(seq))
            sent_at.append(time.monotonic())
        proc.kill()
        killed_at = time.monotonic()
        proc.communicate(timeout=30)
    reader = DriveReader(out)
    seqs = [r.message.header.seq for r in reader.messages()]
    assert seqs, "nothing reached the file"
    assert seqs == list(range(seqs[0], seqs[-1] + 1))  # a gapless run of what was sent
    assert seqs[0] < 10
    first_lost = seqs[-1] + 1
    lost_s = killed_at - sent_at[first_lost] if first_lost < len(sent_at) else 0.0
    print(f"killed recorder: {len(seqs)} of 300 in the drive, the last {lost_s * 1e3:.0f} ms lost")
    assert lost_s <= 1.0


def test_play_skips_a_damaged_message(kitti_dir: Path, tmp_path: Path) -> None:
    drive = damaged_drive(kitti_dir, tmp_path / "damaged.mcap")
    endpoint = f"ipc://{tmp_path}/sensors"
    done = subprocess.run(
        [*CLI, "play", str(drive), "--endpoint", endpoint, "--speed", "0", "--wait", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "24 messages published" in done.stdout, done.stdout
    assert "1 unreadable, 0 unpublishable (skipped)" in done.stdout
    assert len(done.stderr.splitlines()) == 1 and "cannot decode" in done.stderr


def test_replay_onto_a_full_disk_is_one_error_line(
    kitti_dir: Path, yolox_path: Path, tmp_path: Path
) -> None:
    drive = damaged_drive(kitti_dir, tmp_path / "damaged.mcap")
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [*_cli(20_000), "replay", str(drive), "--out", str(out), "--model", str(yolox_path),
         "--quiet"],
        capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        f"perception replay: error: {out}: cannot write a DetectionList (File too large)"
    ]
    assert "Traceback" not in done.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written left


def test_import_onto_a_full_disk_is_one_error_line(kitti_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "kitti.mcap"
    done = subprocess.run(
        [*_cli(20_000), "import", "kitti-object", str(kitti_dir), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"perception import: error: {out}: cannot write the drive (File too large); no drive "
        "written, an existing one kept as it was"
    ]
    assert list(tmp_path.iterdir()) == []  # the temporary file it named before is gone
