"""The runtime folder and ipc binding (perception.io.runtime) over real sockets and folders.

Ownership by another user is checked as the code checks it, by comparing os.stat's owner with a
uid: passing another uid stands for another user without needing root; as root, the folder is
also really given to another user.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from perception.config import NodeConfig
from perception.errors import TransportError
from perception.io.runtime import (
    check_ipc_free,
    check_private_dir,
    check_socket_dir,
    runtime_dir,
    unresolved_host,
)
from perception.io.transport import Publisher, Subscriber, default_endpoint
from tests.perception.io.test_transport import fix, send_until_received

NOBODY = 65534


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG_RUNTIME_DIR set to a fresh private folder, as a login session provides."""
    folder = tmp_path / "xdg"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


@pytest.fixture
def no_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No XDG_RUNTIME_DIR, and a temporary folder of the test's own standing for /tmp."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)  # as /tmp: everyone may create entries, sticky
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp


def test_runtime_dir_under_xdg_runtime_dir(xdg: Path) -> None:
    folder = runtime_dir()
    assert folder == xdg / "perception-node"
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert runtime_dir() == folder  # the second use finds and accepts it


def test_runtime_dir_without_xdg_is_a_private_folder_per_user(no_xdg: Path) -> None:
    folder = runtime_dir()
    assert folder == no_xdg / f"perception-node-{os.getuid()}"
    st = folder.lstat()
    assert (st.st_mode & 0o777) == 0o700 and st.st_uid == os.getuid()


def test_a_precreated_folder_with_a_wrong_mode_is_refused(no_xdg: Path) -> None:
    (no_xdg / f"perception-node-{os.getuid()}").mkdir(mode=0o777)
    os.chmod(no_xdg / f"perception-node-{os.getuid()}", 0o777)
    with pytest.raises(TransportError, match=r"perception-node-\d+: .*mode 0777.*must be 0700"):
        runtime_dir()


def test_a_precreated_symbolic_link_is_refused(no_xdg: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir(mode=0o700)
    (no_xdg / f"perception-node-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(TransportError, match="symbolic link"):
        runtime_dir()
    with pytest.raises(TransportError, match="symbolic link"):
        Publisher(default_endpoint("detections"))


def test_a_folder_owned_by_another_user_is_refused(no_xdg: Path) -> None:
    folder = runtime_dir()
    with pytest.raises(TransportError, match=rf"owned by uid {os.getuid()}, not by this user"):
        check_private_dir(folder, uid=os.getuid() + 1)


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_precreated_folder_of_another_user_is_refused(no_xdg: Path) -> None:
    folder = no_xdg / "perception-node-0"
    folder.mkdir(mode=0o700)
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(TransportError, match=rf"owned by uid {NOBODY}, not by this user"):
        runtime_dir()
    with pytest.raises(TransportError, match=rf"owned by uid {NOBODY}"):
        Subscriber(["ipc://{runtime}/detections"], ["detections"])


def test_an_unsafe_xdg_runtime_dir_is_refused(xdg: Path) -> None:
    xdg.chmod(0o777)
    with pytest.raises(TransportError, match="XDG_RUNTIME_DIR has mode 0777"):
        runtime_dir()


def test_a_relative_xdg_runtime_dir_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """It made `./relative/perception-node` in whatever folder a process ran in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative")
    with pytest.raises(TransportError, match=r"^relative: XDG_RUNTIME_DIR is a relative path"):
        runtime_dir()
    assert list(tmp_path.iterdir()) == []


def test_the_default_endpoints_resolve_in_the_runtime_folder(xdg: Path) -> None:
    defaults = NodeConfig()
    with (
        Publisher(defaults.outputs.endpoint) as pub,
        Subscriber([defaults.outputs.endpoint], ["gnss"]) as sub,
    ):
        assert pub.endpoint == f"ipc://{xdg}/perception-node/detections"
        assert sub.endpoints == (pub.endpoint,)
        send_until_received(pub, sub, fix())
    assert default_endpoint("a/b") == f"ipc://{xdg}/perception-node/a_b.sock"


def test_an_explicit_folder_others_can_write_to_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(TransportError, match=r"shared: the socket folder has mode 0777"):
        Publisher(f"ipc://{shared}/detections")
    check_socket_dir(tmp_path)  # a folder of our own that only we can write to
    with pytest.raises(TransportError, match="owned by uid"):
        check_socket_dir(tmp_path, uid=os.getuid() + 1)


def test_a_missing_socket_folder_is_created_private(tmp_path: Path) -> None:
    with Publisher(f"ipc://{tmp_path}/new/deeper/detections"):
        assert ((tmp_path / "new" / "deeper").stat().st_mode & 0o777) == 0o700


def test_an_endpoint_held_is_refused_before_binding_and_nothing_is_touched(
    tmp_path: Path,
) -> None:
    """`check_ipc_free`: a live holder is named; a free path, a stale socket and a file that is
    no socket pass, and each is left as it was (the bind decides)."""
    endpoint = f"ipc://{tmp_path}/detections"
    check_ipc_free(endpoint)  # nothing there
    with (
        Publisher(endpoint),
        pytest.raises(TransportError, match=rf"in use by another live process \(pid {os.getpid()}"),
    ):
        check_ipc_free(endpoint)
    stale = tmp_path / "stale"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
        left.bind(str(stale))  # bound, never listening: what a killed process leaves
    check_ipc_free(f"ipc://{stale}")
    assert stale.is_socket()
    (tmp_path / "file").write_text("not a socket")
    check_ipc_free(f"ipc://{tmp_path}/file")
    assert (tmp_path / "file").read_text() == "not a socket"
    check_ipc_free("tcp://127.0.0.1:5555")


def test_a_live_endpoint_is_not_taken_over(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/detections"
    with Publisher(endpoint) as node, Subscriber([endpoint], ["gnss"]) as sub:
        send_until_received(node, sub, fix(seq=1))
        with pytest.raises(
            TransportError, match=rf"in use by another live process \(pid {os.getpid()}"
        ):
            Publisher(endpoint)
        with pytest.raises(TransportError, match="in use by another live process"):
            Subscriber([endpoint], ["gnss"], bind=True)
        # The holder is untouched: its subscriber still gets what it sends.
        node.send(fix(seq=2))
        frames = sub.recv(timeout_ms=2000)
        assert frames is not None


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "detections"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a socket file nobody listens on: its process died
    dead.close()
    assert path.is_socket()
    with Publisher(f"ipc://{path}") as pub, Subscriber([f"ipc://{path}"], ["gnss"]) as sub:
        send_until_received(pub, sub, fix())


def test_a_file_that_is_not_a_socket_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "detections"
    path.write_text("precious")
    with pytest.raises(TransportError, match="exists and is not a socket"):
        Publisher(f"ipc://{path}")
    assert path.read_text() == "precious"


def test_socket_files_are_removed_at_close(tmp_path: Path) -> None:
    pub_path, sub_path = tmp_path / "out", tmp_path / "in"
    with Publisher(f"ipc://{pub_path}"), Subscriber([f"ipc://{sub_path}"], ["x"], bind=True):
        assert pub_path.is_socket() and sub_path.is_socket()
    assert not pub_path.exists() and not sub_path.exists()
    # A connecting subscriber binds nothing and removes nothing.
    with Publisher(f"ipc://{pub_path}"):
        Subscriber([f"ipc://{pub_path}"], ["x"]).close()
        assert pub_path.is_socket()


def test_close_leaves_a_socket_file_that_replaced_ours(tmp_path: Path) -> None:
    path = tmp_path / "detections"
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw = context.socket(zmq.PUB)
    try:
        pub = Publisher(f"ipc://{path}")
        raw.bind(f"ipc://{path}")  # raw libzmq deletes the file and binds its own
        pub.close()
        assert path.is_socket()  # the newcomer's, not removed by our close
    finally:
        raw.close(linger=0)
        context.term()


def test_a_tcp_port_in_use_is_one_clear_error() -> None:
    with (
        Publisher("tcp://127.0.0.1:*") as holder,
        pytest.raises(TransportError, match=r"cannot bind: in use by another process"),
    ):
        Publisher(holder.last_endpoint)


def test_an_ipc_endpoint_without_a_path_is_named() -> None:
    """It said "ipc://: . exists and is not a socket"."""
    with pytest.raises(TransportError, match=r"^ipc://: an ipc endpoint names a socket file"):
        Publisher("ipc://")


def test_a_socket_folder_that_cannot_be_made_is_found_before_the_bind(tmp_path: Path) -> None:
    """`perception run` said so only once its model had loaded, when it bound the endpoint."""
    afile = tmp_path / "file"
    afile.write_text("")
    endpoint = f"ipc://{afile}/sockets/out.sock"
    with pytest.raises(TransportError, match=rf"cannot create socket folder {afile}/sockets: "
                       rf"{afile} is not a folder$"):  # fmt: skip
        check_ipc_free(endpoint)


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("tcp://no-such-host.invalid:5555", "host 'no-such-host.invalid' does not resolve ("),
        # A connect from a source address: the destination is what must resolve.
        ("tcp://127.0.0.1:0;lidar.invalid:2368", "host 'lidar.invalid' does not resolve ("),
        ("tcp://" + "a" * 64 + ":5555", f"host '{'a' * 64}' is not a host name ("),
        ("tcp://127.0.0.1:5555", None),
        ("tcp://[::1]:5555", None),
        ("tcp://localhost:5555", None),
        ("tcp://*:5555", None),
        ("ipc:///tmp/sensors", None),
        ("inproc://sensors", None),
    ],
)
def test_unresolved_host_says_why_a_tcp_host_has_no_address(endpoint: str, why: str | None) -> None:
    """libzmq retries a connect to a name that does not resolve for ever, without a word (.invalid
    never resolves: RFC 2606)."""
    found = unresolved_host(endpoint)
    if why is None:
        assert found is None
    else:
        assert found is not None and found.startswith(why), found
