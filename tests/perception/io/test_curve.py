"""ZeroMQ CURVE on tcp (perception.io.curve) through Publisher and Subscriber, over real sockets:
who is admitted, who is refused and counted, and the key files."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import zmq

from perception.config import parse_config
from perception.errors import ConfigError, TransportError
from perception.io.curve import (
    CurveKeys,
    CurveServer,
    curve_keys_for,
    generate_key_pair,
    load_curve_keys,
)
from perception.io.transport import Publisher, Subscriber
from tests.perception.io.test_transport import fix, send_until_received

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")

WAIT_S = 3.0


def keys_in(tmp_path: Path, name: str, allowed: list[Path]) -> CurveKeys:
    """A new key pair `name`, admitting the holders of the public keys `allowed`."""
    folder = tmp_path / f"{name}-allowed"
    folder.mkdir()
    for public in allowed:
        shutil.copy(public, folder)
    _, secret = generate_key_pair(tmp_path / "keys", name)
    return load_curve_keys(secret, allowed_clients=folder)


@pytest.fixture
def pairs(tmp_path: Path) -> dict[str, Path]:
    """Public key files of three key pairs: the node, a client it admits, a stranger."""
    return {
        name: generate_key_pair(tmp_path / "pairs", name)[0]
        for name in ("node", "client", "stranger")
    }


def secret_of(public: Path) -> Path:
    return public.with_suffix(".key_secret")


def wait_for(condition, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_generated_key_files(tmp_path: Path) -> None:
    public, secret = generate_key_pair(tmp_path / "keys", "node")
    assert (public.stat().st_mode & 0o777) == 0o644
    assert (secret.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "keys").stat().st_mode & 0o777) == 0o700
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["node.key", "node.key_secret"]
    keys = load_curve_keys(secret)
    assert keys.server_key == keys.public_key  # by default: a server sharing this key pair
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_key_pair(tmp_path / "keys", "node")
    generate_key_pair(tmp_path / "keys", "node", overwrite=True)
    assert load_curve_keys(secret).public_key != keys.public_key
    with pytest.raises(ValueError, match="letters, digits"):
        generate_key_pair(tmp_path / "keys", "../x")


def test_unusable_key_files_are_refused(tmp_path: Path, pairs: dict[str, Path]) -> None:
    secret = secret_of(pairs["node"])
    with pytest.raises(ConfigError, match=r"security.secret_key: .*holds no secret key"):
        load_curve_keys(pairs["node"].with_suffix(".key"))
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"security.secret_key: .*other users can read.*0644"):
        load_curve_keys(secret)
    secret.chmod(0o600)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"security.allowed_clients: .*holds no public keys"):
        load_curve_keys(secret, allowed_clients=empty)
    with pytest.raises(ConfigError, match=r"security.secret_key: .*No such file"):
        load_curve_keys(tmp_path / "missing.key_secret")


def test_config_security_section(tmp_path: Path, pairs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"security\.secret_key: required when security\.curve"):
        parse_config({"security": {"curve": True}})
    with pytest.raises(ConfigError, match=r"inputs\.endpoints: with security\.curve"):
        parse_config(
            {
                "inputs": {"endpoints": ["tcp://127.0.0.1:5555", "ipc://{runtime}/sensors"]},
                "security": {"curve": True, "secret_key": "k"},
            }
        )
    with pytest.raises(ConfigError, match=r"security\.allowed_clients: required"):
        parse_config(
            {
                "outputs": {"endpoint": "tcp://127.0.0.1:5555"},
                "security": {"curve": True, "secret_key": "k"},
            }
        )
    off = parse_config({})
    assert curve_keys_for(off.security) is None
    on = parse_config({"security": {"curve": True, "secret_key": str(secret_of(pairs["node"]))}})
    keys = curve_keys_for(on.security)
    assert keys is not None and keys.allowed_clients is None


def _node_and_client(
    tmp_path: Path, pairs: dict[str, Path], client: str
) -> tuple[CurveKeys, CurveKeys]:
    """The node's keys (admitting `client`) and the client's keys (knowing the node's key)."""
    allowed = tmp_path / "allowed"
    allowed.mkdir(exist_ok=True)
    shutil.copy(pairs["client"], allowed)
    node = load_curve_keys(secret_of(pairs["node"]), allowed_clients=allowed)
    visitor = load_curve_keys(secret_of(pairs[client]), server_key=pairs["node"])
    return node, visitor


def test_an_allowed_subscriber_receives(tmp_path: Path, pairs: dict[str, Path]) -> None:
    node, client = _node_and_client(tmp_path, pairs, "client")
    with (
        Publisher("tcp://127.0.0.1:*", curve=node) as pub,
        Subscriber([pub.last_endpoint], ["gnss"], curve=client) as sub,
    ):
        send_until_received(pub, sub, fix())
        assert pub.rejected_peers == 0 and sub.rejected_peers == 0


@pytest.mark.parametrize("visitor", ["stranger", "no CURVE"])
def test_a_subscriber_without_an_allowed_key_is_refused_and_counted(
    tmp_path: Path, pairs: dict[str, Path], visitor: str
) -> None:
    node, client = _node_and_client(tmp_path, pairs, "client")
    _, stranger = _node_and_client(tmp_path, pairs, "stranger")
    with (
        Publisher("tcp://127.0.0.1:*", curve=node) as pub,
        Subscriber(
            [pub.last_endpoint], ["gnss"], curve=stranger if visitor == "stranger" else None
        ) as intruder,
        Subscriber([pub.last_endpoint], ["gnss"], curve=client) as sub,
    ):
        send_until_received(pub, sub, fix())  # the allowed one is served meanwhile
        assert wait_for(lambda: pub.rejected_peers >= 1)
        for _ in range(20):
            pub.send(fix())
        assert intruder.recv(timeout_ms=200) is None
        if visitor == "stranger":
            # Both ends see each refusal; the intruder retries once a second, and the node
            # counts every attempt it refused.
            assert wait_for(lambda: (intruder.recv(0), intruder.rejected_peers)[1] >= 3, 5.0)
            # The node counts refusals on a monitor thread polled every so often, a moment after
            # the intruder hears of one, so it is given that moment to catch up.
            seen = intruder.rejected_peers
            assert wait_for(lambda: pub.rejected_peers >= seen), (pub.rejected_peers, seen)


def test_a_publisher_without_the_server_key_is_refused_counted_and_not_spun_on(
    tmp_path: Path, pairs: dict[str, Path]
) -> None:
    """The node's subscriber connects to a publisher that does not hold the expected server
    key (a rogue with a key pair of its own): no message gets through, every refused handshake
    is counted, and retrying costs next to no CPU."""
    node = load_curve_keys(secret_of(pairs["node"]), allowed_clients=pairs["node"].parent)
    rogue = keys_in(tmp_path, "rogue", [pairs["node"]])
    with (
        Publisher("tcp://127.0.0.1:*", curve=rogue) as pub,
        Subscriber([pub.last_endpoint], ["gnss"], curve=node) as sub,
    ):
        start = resource.getrusage(resource.RUSAGE_SELF)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            pub.send(fix())
            assert sub.recv(timeout_ms=20) is None
        end = resource.getrusage(resource.RUSAGE_SELF)
        assert sub.rejected_peers >= 2  # refused, retried a second later, refused again
        cpu_s = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
        assert cpu_s < 0.5, f"{cpu_s:.2f} s of CPU in 2 s: the subscriber spins on refusals"


def test_a_bound_subscriber_admits_only_allowed_publishers(
    tmp_path: Path, pairs: dict[str, Path]
) -> None:
    node, client = _node_and_client(tmp_path, pairs, "client")
    _, stranger = _node_and_client(tmp_path, pairs, "stranger")
    with Subscriber(["tcp://127.0.0.1:*"], ["gnss"], bind=True, curve=node) as sub:
        endpoint = sub.socket_for("gnss").getsockopt_string(zmq.LAST_ENDPOINT)
        with Publisher(endpoint, bind=False, curve=stranger) as intruder:
            assert wait_for(lambda: sub.rejected_peers >= 1)
            intruder.send(fix())
            assert sub.recv(timeout_ms=100) is None
        with Publisher(endpoint, bind=False, curve=client) as pub:
            send_until_received(pub, sub, fix())


def test_curve_needs_allowed_clients_to_bind_and_its_own_context(pairs: dict[str, Path]) -> None:
    keys = load_curve_keys(secret_of(pairs["node"]))
    with pytest.raises(TransportError, match=r"set security\.allowed_clients"):
        Publisher("tcp://127.0.0.1:*", curve=keys)
    allowed = replace(keys, allowed_clients=frozenset({keys.public_key}))
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with pytest.raises(ValueError, match="context of its own"):
            Publisher("tcp://127.0.0.1:*", curve=allowed, context=context)
    finally:
        context.term()
    with pytest.raises(TransportError, match="all tcp:// or none"):
        Subscriber(["tcp://127.0.0.1:5999", "ipc:///tmp/x"], ["gnss"], curve=allowed)


def test_curve_leaves_ipc_alone(tmp_path: Path, pairs: dict[str, Path]) -> None:
    """ipc endpoints are guarded by their folder, not CURVE: peers with and without keys meet."""
    node, _ = _node_and_client(tmp_path, pairs, "client")
    endpoint = f"ipc://{tmp_path}/detections"
    with Publisher(endpoint, curve=node) as pub, Subscriber([endpoint], ["gnss"]) as sub:
        send_until_received(pub, sub, fix())


def _with_key(path: Path, half: str, value: str) -> Path:
    """`path` (a key file) with its `half` ("public" or "secret") key replaced by `value`."""
    text = path.read_text()
    start = text.index(f'{half}-key = "') + len(f'{half}-key = "')
    damaged = path.with_name(f"damaged-{half}-{len(value)}{path.suffix}")
    damaged.write_text(text[:start] + value + text[start + 40 :])
    damaged.chmod(0o600)
    return damaged


@pytest.mark.parametrize(
    "value", ["", "short", "a" * 38, "~" * 40, "#" * 40], ids=["empty", "5", "38", "char", "range"]
)
def test_a_damaged_key_is_refused_when_read(
    tmp_path: Path, pairs: dict[str, Path], value: str
) -> None:
    """libzmq refused such a key only when the socket was set up: `perception run` said
    "unexpected ZMQError: Invalid argument" with a thread's traceback, then hung at exit."""
    secret = secret_of(pairs["node"])
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(pairs["client"], allowed)
    for half in ("public", "secret"):
        damaged = _with_key(secret, half, value)
        with pytest.raises(ConfigError) as info:
            load_curve_keys(damaged)
        assert str(info.value) == (
            f"security.secret_key: {damaged}: its {half} key is not a CURVE key (40 Z85 "
            "characters); the file is damaged: make a new key pair with `perception keys "
            "generate`"
        )
    client = _with_key(pairs["client"], "public", value)
    client.replace(allowed / "client.key")
    with pytest.raises(ConfigError, match=r"^security\.allowed_clients: .*client\.key: its public"):
        load_curve_keys(secret, allowed_clients=allowed)
    with pytest.raises(ConfigError, match=r"^security\.server_key: .*client\.key: its public"):
        load_curve_keys(secret, server_key=allowed / "client.key")


def test_a_key_path_that_is_no_file_is_refused(tmp_path: Path, pairs: dict[str, Path]) -> None:
    """A pipe given as the secret key blocked `perception run` for ever; a folder or a pipe
    among the allowed clients was "no such key file"."""
    pipe = tmp_path / "node.key_secret"
    os.mkfifo(pipe, 0o600)
    with pytest.raises(ConfigError) as info:
        load_curve_keys(pipe)
    assert str(info.value) == (
        f"security.secret_key: {pipe}: is a device, pipe or socket, not a key file"
    )
    allowed = tmp_path / "allowed"
    (allowed / "folder.key").mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        load_curve_keys(secret_of(pairs["node"]), allowed_clients=allowed)
    assert str(info.value) == (
        f"security.allowed_clients: {allowed / 'folder.key'}: is a folder, not a key file"
    )


def test_generating_over_a_folder_writes_nothing(tmp_path: Path) -> None:
    """With --overwrite, the secret key was replaced before moving the public key onto the
    folder failed: a key pair that does not match, and the old secret gone."""
    keys = tmp_path / "keys"
    _, secret = generate_key_pair(keys, "node")
    before = secret.read_bytes()
    (keys / "node.key").unlink()
    (keys / "node.key").mkdir()
    with pytest.raises(FileExistsError, match=r"node\.key: exists and is not a key file"):
        generate_key_pair(keys, "node", overwrite=True)
    assert secret.read_bytes() == before
    assert sorted(p.name for p in keys.iterdir()) == ["node.key", "node.key_secret"]


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_key_names_make_visible_files(tmp_path: Path, name: str) -> None:
    """`.` and `..` made the hidden files `..key` and `...key`."""
    with pytest.raises(ValueError, match="starts with a letter or a digit"):
        generate_key_pair(tmp_path / "keys", name)
    assert not list((tmp_path / "keys").glob("*key*"))


@pytest.mark.parametrize(
    ("name", "suffix"), [("node.key", ".key"), ("node.key_secret", ".key_secret")]
)
def test_a_key_name_with_the_files_suffix_is_refused(
    tmp_path: Path, name: str, suffix: str
) -> None:
    """`node.key` wrote node.key.key, which no process looking for node.key finds."""
    with pytest.raises(ValueError, match=f"name the pair without {suffix} .'node' writes node"):
        generate_key_pair(tmp_path / "keys", name)
    assert not list((tmp_path / "keys").glob("*key*"))


def test_a_key_libzmq_refuses_leaves_no_authenticator_running(pairs: dict[str, Path]) -> None:
    """The authenticator's thread was started before the key was set: when libzmq refused it,
    the thread kept running and the process hung at exit."""
    keys = replace(load_curve_keys(secret_of(pairs["node"])), secret_key=b"short")
    keys = replace(keys, allowed_clients=frozenset({keys.public_key}))
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socket = context.socket(zmq.SUB)
    before = set(threading.enumerate())
    try:
        with pytest.raises(zmq.ZMQError):
            CurveServer(context, socket, keys, "tcp://127.0.0.1:0")
        assert set(threading.enumerate()) == before
    finally:
        # destroy, not term: on failure the leaked authenticator's sockets would block term.
        context.destroy(linger=0)


def test_a_folder_that_cannot_hold_the_keys_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder was named by the temporary folder inside it (`.keys-xxxx`), and a
    dangling link given as the folder was "[Errno 17] File exists"."""
    dangling = tmp_path / "keys"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(FileExistsError) as info:
        generate_key_pair(dangling, "node")
    assert str(info.value) == f"{dangling}: is not a folder (a file, or a symbolic link to nothing)"

    def read_only(*, dir: Path, prefix: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system", f"{dir}/{prefix}abcd")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", read_only)
    folder = tmp_path / "ro"
    with pytest.raises(OSError) as error:
        generate_key_pair(folder, "node")
    assert (error.value.filename, error.value.strerror) == (
        str(folder),
        "cannot write the key pair (Read-only file system)",
    )
