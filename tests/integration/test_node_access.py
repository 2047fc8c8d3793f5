"""Access control (issue #13, finding 6) with `perception run` in a subprocess, over real
sockets: the node's endpoints cannot be taken over, its runtime folder cannot be planted, its
socket files go when it stops, and over tcp CURVE refuses (and counts) publishers and
subscribers without the right keys while the node keeps publishing for valid input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from perception.io.curve import load_curve_keys
from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.types import Detection3D, DetectionList, Diagnostics, Header
from replay.drive import DriveWriter
from tests.integration.node_harness import running_node

pytestmark = pytest.mark.slow

NOBODY = 65534
RATE_HZ = "5"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def finished(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """A `perception` command run to its end, its output captured."""
    return subprocess.run(
        check=False, args=cli(*args), capture_output=True, text=True, timeout=timeout_s
    )


@contextmanager
def background(*args: str) -> Iterator[subprocess.Popen[str]]:
    """A `perception` command running until the block ends (then SIGINT, as a user stops it)."""
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def forged_drive(path: Path) -> Path:
    """A drive holding the forgery of the finding: 'person 0.99 at (2, 0, 0)' on detections."""
    forged = DetectionList(
        Header("detections", 0, 1, "vehicle"),
        (Detection3D("person", 0.99, (2.0, 0.0, 0.0), (0.8, 0.8, 1.8), 0.0),),
    )
    with DriveWriter(path) as writer:
        for i in range(20):
            writer.write(forged, 1_000_000_000 + i * 100_000_000, "detections")
    return path


def write_config(path: Path, model: Path, **sections: object) -> Path:
    path.write_text(
        yaml.safe_dump({"camera_model": {"path": str(model), "kind": "yolox"}, **sections})
    )
    return path


def one_error_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perception {command}: error: "), lines
    return lines[0]


def echo_json(*args: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    done = finished("echo", *args, "--json", timeout_s=timeout_s)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG_RUNTIME_DIR for this test's processes (they inherit the environment), so
    the default endpoints of every `perception` process here meet in it."""
    folder = tmp_path / "xdg"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


def test_a_rogue_cannot_take_over_the_detections_endpoint(
    xdg: Path, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """The finding: a rogue binds the detections path while the node runs and `echo` prints its
    forged person. Now the rogue is refused (one line, exit 2), `echo` sees only the node, and
    another user cannot even reach the folder. Every process uses the default endpoints."""
    config = write_config(tmp_path / "node.yaml", yolox_path)
    folder = xdg / "perception-node"
    detections = folder / "detections"
    with (
        running_node(config) as node,
        background("play", "kitti-object", str(kitti_dir), "--loop", "--rate", RATE_HZ),
    ):
        assert detections.is_socket()
        inode = detections.stat().st_ino
        # A rogue of this user, through the project's own player: refused, the holder named.
        rogue = finished(
            "play", str(forged_drive(tmp_path / "forged.mcap")), "--loop", "--wait", "0"
        )
        line = one_error_line(rogue, "play")
        assert re.fullmatch(
            rf"perception play: error: ipc://{detections}: in use by another live process "
            rf"\(pid {node.proc.pid}, uid {os.getuid()}\); stop it or choose another endpoint",
            line,
        ), line
        # A second node on the same endpoints: refused before it loads its model (no engine
        # lines; it used to load them for seconds first).
        second = finished("run", "--config", str(config))
        line = one_error_line(second, "run")
        assert line.endswith(
            f"ipc://{detections}: in use by another live process (pid {node.proc.pid}, uid "
            f"{os.getuid()}); stop it or choose another endpoint"
        ), line
        assert "engine" not in second.stdout, second.stdout
        if os.getuid() == 0 and Path("/usr/bin/python3").exists():
            # A raw rogue of another user: the folder (0700) keeps it from unlinking or binding.
            other = subprocess.run(
                check=False,
                args=["/usr/bin/python3", "-I", "-c", _RAW_ROGUE, str(detections)],
                capture_output=True,
                text=True,
                timeout=30,
                user=NOBODY,
                group=NOBODY,
                cwd="/",
            )
            assert other.returncode == 3, other.stdout + other.stderr
            assert "unlink: Permission denied" in other.stdout
        assert detections.stat().st_ino == inode  # still the node's socket
        docs = echo_json("detections", "--count", "3")
        assert len(docs) == 3
        for doc in docs:
            assert doc["type"] == "DetectionList"
            assert {"camera_encoder", "lidar_encoder", "fusion"} <= set(doc["timings_ns"])
            assert not any(d["label"] == "person" and d["score"] == 0.99 for d in doc["detections"])
    assert node.proc.returncode == 0, "".join(node.output)
    # Socket files removed on exit: the node's and the player's.
    assert sorted(p.name for p in folder.iterdir()) == []


_RAW_ROGUE = """
import os, socket, sys
path = sys.argv[1]
try:
    os.unlink(path)
except OSError as e:
    print(f"unlink: {e.strerror}")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.bind(path)
except OSError as e:
    print(f"bind: {e.strerror}")
    sys.exit(3)
sys.exit(0)
"""


@pytest.mark.parametrize("planted", ["mode 0777", "symbolic link", "another user's"])
def test_a_planted_runtime_folder_is_refused(
    planted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yolox_path: Path
) -> None:
    """Without XDG_RUNTIME_DIR the folder is <tmp>/perception-node-<uid>; one pre-created by
    someone else (or unsafe) stops `perception run` and `echo` with one line naming it."""
    if planted == "another user's" and os.getuid() != 0:
        pytest.skip("giving a folder to another user needs root (the unit tests cover it)")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp))
    folder = tmp / f"perception-node-{os.getuid()}"
    if planted == "mode 0777":
        folder.mkdir()
        folder.chmod(0o777)
        expected = rf"{folder}: the runtime folder has mode 0777, which lets other users in"
    elif planted == "symbolic link":
        (tmp_path / "attacker").mkdir()
        folder.symlink_to(tmp_path / "attacker")
        expected = rf"{folder}: the runtime folder is a symbolic link"
    else:
        folder.mkdir(mode=0o700)
        os.chown(folder, NOBODY, NOBODY)
        expected = rf"{folder}: the runtime folder is owned by uid {NOBODY}, not by this user"
    config = write_config(tmp_path / "node.yaml", yolox_path)
    run = finished("run", "--config", str(config), timeout_s=120)
    assert re.match(rf"perception run: error: {expected}", one_error_line(run, "run"))
    echo = finished("echo", "detections")
    assert re.match(rf"perception echo: error: {expected}", one_error_line(echo, "echo"))
    assert not any((tmp_path / "attacker").iterdir()) if planted == "symbolic link" else True


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: each socket held until all are bound (one closed before the
    next bind may be handed out again)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def keys_generate(folder: Path, name: str) -> tuple[Path, Path]:
    done = finished("keys", "generate", "--out", str(folder), "--name", name)
    assert done.returncode == 0, done.stderr
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    assert (secret.stat().st_mode & 0o777) == 0o600 and str(public) in done.stdout
    return public, secret


def test_curve_refuses_and_counts_publishers_and_subscribers_without_keys(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """The node over tcp with CURVE: an authorised player feeds it, a rogue player (a key pair
    of its own, not the one the node expects) and a rogue subscriber (a key not allowed) are
    refused and counted on diagnostics, and the node keeps publishing throughout."""
    assert zmq.has("curve")
    node_public, _ = keys_generate(tmp_path / "keys", "node")
    rogue_public, _ = keys_generate(tmp_path / "rogue", "rogue")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(node_public, allowed)  # processes of this config (the node, players, echo)
    good_in, rogue_in, out = (f"tcp://127.0.0.1:{port}" for port in free_ports(3))
    endpoints = {"inputs": {"endpoints": [good_in, rogue_in]}, "outputs": {"endpoint": out}}
    config = write_config(
        tmp_path / "node.yaml",
        yolox_path,
        **endpoints,
        security={
            "curve": True,
            "secret_key": "keys/node.key_secret",
            "allowed_clients": "allowed",
        },
    )
    rogue_config = write_config(
        tmp_path / "rogue.yaml",
        yolox_path,
        **endpoints,
        security={
            "curve": True,
            "secret_key": "rogue/rogue.key_secret",
            "server_key": "keys/node.key",  # it knows the node's public key: anyone may
            "allowed_clients": "rogue",
        },
    )
    kitti = ("play", "kitti-object", str(kitti_dir), "--loop", "--rate", RATE_HZ)
    keys = load_curve_keys(tmp_path / "keys" / "node.key_secret")
    with (
        running_node(config) as node,
        background(*kitti, "--config", str(config), "--endpoint", good_in),
        background(*kitti, "--config", str(rogue_config), "--endpoint", rogue_in) as rogue,
        background("echo", "detections", "--config", str(rogue_config)) as intruder,
        Subscriber([out], ["detections", "diagnostics"], curve=keys) as sub,
    ):
        assert "CURVE on tcp endpoints" in "".join(node.output)
        published: list[int] = []
        diagnostics = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            frames = sub.recv(timeout_ms=200)
            if frames is None:
                continue
            _, msg = wire.decode(frames)
            if isinstance(msg, Diagnostics):
                diagnostics = msg
                published.append(msg.counters["published"])
                c = msg.counters
                if (
                    c["rejected_publishers"] >= 2
                    and c["rejected_subscribers"] >= 2
                    and (len(published) >= 3 and published[-1] > published[-3] > 0)
                ):
                    break
            else:
                assert isinstance(msg, DetectionList)
        assert diagnostics is not None, "".join(node.output)
        counters = diagnostics.counters
        assert counters["rejected_publishers"] >= 2, counters  # every retry refused again
        assert counters["rejected_subscribers"] >= 2, counters
        assert len(published) >= 3 and published[-1] > published[-3] > 0, published
        # An authorised `perception echo` (the node's config) is served.
        docs = echo_json("detections", "--config", str(config), "--count", "2")
        assert [d["type"] for d in docs] == ["DetectionList", "DetectionList"]
        assert rogue.poll() is None and intruder.poll() is None  # refused, still trying
    assert intruder.stdout is not None and intruder.stdout.read() == ""  # it received nothing
    assert node.proc.returncode == 0
    assert re.search(r"stopped; \d+ published, .* (\d+) handshakes refused", "".join(node.output))
    assert rogue_public.exists()
