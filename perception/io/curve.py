"""ZeroMQ CURVE on tcp endpoints: key pairs, the allowed clients, and counting who is refused.

tcp has no permissions of its own: anyone who reaches the port could publish into the node or
read what it publishes. With CURVE every tcp connection is encrypted and both ends prove a key:

- A socket that binds is the CURVE server, with this process's key pair. pyzmq's ZAP
  authenticator (a thread per ZeroMQ context) admits only clients whose public key is in the
  allowed-clients folder. A failed handshake (a key not listed, a client without CURVE, a
  corrupt handshake) is refused by ZeroMQ and counted here (`CurveServer.rejected`) from the
  socket's monitor events.
- A socket that connects is a CURVE client, with this process's key pair, and accepts only a
  server that holds the secret key of the configured server public key.

Keys are the files `perception keys generate` (or pyzmq's `zmq.auth.create_certificates`)
writes: `NAME.key` (public, shareable) and `NAME.key_secret` (both halves; mode 0600, refused
when others can read it). ipc endpoints do not use CURVE: the runtime folder's permissions
(perception.io.runtime) keep other users away from them.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from perception.errors import ConfigError, TransportError

if TYPE_CHECKING:
    from perception.config import SecurityConfig

__all__ = [
    "HANDSHAKE_FAILED_EVENTS",
    "CurveKeys",
    "CurveServer",
    "curve_keys_for",
    "generate_key_pair",
    "load_curve_keys",
    "set_client",
    "uses_curve",
]

#: Socket monitor events of a refused or failed handshake (both ends see one of them).
HANDSHAKE_FAILED_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_MONITOR_POLL_MS = 100
_NAME = re.compile(r"[A-Za-z0-9._-]+")
#: A CURVE key: 32 bytes, 40 characters in Z85.
_KEY_BYTES = 32
#: Key files are a few hundred bytes; a much larger one is something else.
_MAX_KEY_FILE_BYTES = 64 << 10


@dataclass(frozen=True)
class CurveKeys:
    """Key material for CURVE (z85-encoded keys, as ZeroMQ takes them).

    `public_key`, `secret_key`: this process's key pair (server key of what it binds, client
    key of what it connects). `server_key`: the public key a server this process connects to
    must prove. `allowed_clients`: the public keys that may connect to what this process binds
    (None: none were configured, and binding a tcp endpoint is refused); `allowed_from` the
    folder they were read from (for messages).
    """

    public_key: bytes
    secret_key: bytes
    server_key: bytes
    allowed_clients: frozenset[bytes] | None = None
    allowed_from: Path | None = None


def uses_curve(endpoint: str) -> bool:
    """Whether CURVE applies to `endpoint` when it is switched on: tcp endpoints only."""
    return endpoint.startswith("tcp://")


def _read_key_file(path: Path, key: str) -> tuple[bytes, bytes | None]:
    """(public key, secret key or None) of a key file, each a valid CURVE key.

    Raises:
        ConfigError: naming `key` and `path`: missing, not a regular file (a pipe would block
            the read for ever), far larger than a key file, unreadable, or a key in it is not
            one (libzmq refuses it only when the socket is set up, past the config checks).
    """
    try:
        st = path.stat()
    except OSError as e:
        raise ConfigError(f"{key}: {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
        raise ConfigError(f"{key}: {path}: is {kind}, not a key file")
    if st.st_size > _MAX_KEY_FILE_BYTES:
        raise ConfigError(
            f"{key}: {path}: {st.st_size} bytes, not a CURVE key file (those of `perception "
            "keys generate` are under a kilobyte)"
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as e:
        raise ConfigError(f"{key}: {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(f"{key}: {path}: not a readable CURVE key file ({e})") from None
    for half, value in (("public", public), ("secret", secret)):
        if value is not None and not _is_curve_key(value):
            raise ConfigError(
                f"{key}: {path}: its {half} key is not a CURVE key (40 Z85 characters); the "
                "file is damaged: make a new key pair with `perception keys generate`"
            )
    return public, secret


def _is_curve_key(value: bytes) -> bool:
    try:
        return len(z85.decode(value)) == _KEY_BYTES
    except (ValueError, KeyError, struct.error):  # a length, a character, a value out of range
        return False


def _public_key(path: Path, key: str) -> bytes:
    public, _ = _read_key_file(path, key)
    return public


def load_curve_keys(
    secret_key: Path, *, server_key: Path | None = None, allowed_clients: Path | None = None
) -> CurveKeys:
    """Read this process's key pair from `secret_key` (a `.key_secret` file, which others must
    not be able to read), the server's public key from `server_key` (default: this process's
    own, for processes sharing one key pair), and the public keys (`*.key`) in the folder
    `allowed_clients`.

    Raises:
        ConfigError: naming the config key (`security.<key>`), the file and the problem.
    """
    public, secret = _read_key_file(secret_key, "security.secret_key")
    try:
        mode = stat.S_IMODE(secret_key.stat().st_mode)
    except OSError as e:
        raise ConfigError(f"security.secret_key: {secret_key}: {e.strerror or e}") from None
    if secret is None:
        raise ConfigError(
            f"security.secret_key: {secret_key}: holds no secret key (give the .key_secret file "
            "of `perception keys generate`, not the public .key)"
        )
    if mode & 0o077:
        raise ConfigError(
            f"security.secret_key: {secret_key}: other users can read this secret key (mode "
            f"{mode:04o}); chmod 600 it, and make a new key pair if it may have been copied"
        )
    server = public if server_key is None else _public_key(server_key, "security.server_key")
    allowed = None
    if allowed_clients is not None:
        allowed = frozenset(_allowed_keys(allowed_clients))
    return CurveKeys(public, secret, server, allowed, allowed_clients)


def _allowed_keys(folder: Path) -> Iterable[bytes]:
    if not folder.is_dir():
        raise ConfigError(f"security.allowed_clients: {folder}: not a folder")
    files = sorted(folder.glob("*.key"))
    if not files:
        raise ConfigError(
            f"security.allowed_clients: {folder}: holds no public keys (*.key); every client "
            "would be refused"
        )
    return [_public_key(path, "security.allowed_clients") for path in files]


def curve_keys_for(security: SecurityConfig) -> CurveKeys | None:
    """The keys of a node config's `security` section; None when CURVE is off.

    Raises:
        ConfigError: a key file or the allowed-clients folder is missing or unusable.
    """
    if not security.curve:
        return None
    if security.secret_key is None:  # parse_config refuses this; a config built in code may not
        raise ConfigError("security.secret_key: required when security.curve is true")
    return load_curve_keys(
        Path(security.secret_key).expanduser(),
        server_key=_optional_path(security.server_key),
        allowed_clients=_optional_path(security.allowed_clients),
    )


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


def set_client(socket: zmq.Socket[bytes], keys: CurveKeys) -> None:
    """Make `socket` a CURVE client (before it connects)."""
    socket.setsockopt(zmq.CURVE_SERVERKEY, keys.server_key)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, keys.public_key)
    socket.setsockopt(zmq.CURVE_SECRETKEY, keys.secret_key)


class _AllowedClients:
    """The ZAP authenticator's credentials provider: the allowed public keys."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys


class CurveServer:
    """CURVE for one socket that binds: the ZAP authenticator of its context, admitting only the
    allowed clients, and a thread counting the socket's refused handshakes from its monitor.
    Made before the socket binds; the context must be the socket's own (ZAP is one handler
    per context).

    Raises (constructor):
        TransportError: `keys` has no allowed clients (naming `endpoint` and the config key).
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        socket: zmq.Socket[bytes],
        keys: CurveKeys,
        endpoint: str,
    ) -> None:
        if keys.allowed_clients is None:
            raise TransportError(
                f"{endpoint}: binding a tcp endpoint with CURVE needs the clients it admits: "
                "set security.allowed_clients (a folder of public keys)"
            )
        self._socket = socket
        self._lock = threading.Lock()
        self._rejected = 0
        self._stop = threading.Event()
        # Before the authenticator's thread starts: a key libzmq refuses must not leave it
        # running (the process then hung at exit).
        socket.setsockopt(zmq.CURVE_SECRETKEY, keys.secret_key)
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve_callback("*", _AllowedClients(keys.allowed_clients))
        # The monitor socket belongs to the counting thread from here on.
        self._monitor = socket.get_monitor_socket(HANDSHAKE_FAILED_EVENTS)
        self._thread = threading.Thread(target=self._count, name="curve-monitor", daemon=True)
        self._thread.start()

    @property
    def rejected(self) -> int:
        """Handshakes refused so far (a client not allowed, without CURVE, or whose handshake
        failed)."""
        with self._lock:
            return self._rejected

    def _count(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._monitor.poll(_MONITOR_POLL_MS):
                    continue
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                continue
            except zmq.ZMQError:  # the context is ending
                return
            if event["event"] & HANDSHAKE_FAILED_EVENTS:
                with self._lock:
                    self._rejected += 1

    def close(self) -> None:
        """Stop counting and the authenticator, before the socket closes. Call from the
        thread that owns the socket. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5.0)
        with contextlib.suppress(zmq.ZMQError):
            self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._auth.stop()


def generate_key_pair(folder: Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new CURVE key pair into `folder` (created with mode 0700 when missing):
    `NAME.key` (the public key, mode 0644) and `NAME.key_secret` (both halves, mode 0600).
    Returns (public file, secret file). An existing pair is replaced only with `overwrite`
    (every client holding the old public key is then refused).

    Raises:
        ValueError: `name` is empty, has characters other than letters, digits, `.`, `_`, `-`,
            or ends with `.key` or `.key_secret`.
        FileExistsError: the pair exists and `overwrite` is false.
        OSError: the folder or the files cannot be written.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r}: a key name has letters, digits, '.', '_', '-' only")
    if not name[0].isalnum():
        # `.` or `..` made the hidden files `..key` and `...key`.
        raise ValueError(f"{name!r}: a key name starts with a letter or a digit")
    for suffix in (".key", ".key_secret"):
        if name.endswith(suffix):
            # `node.key` wrote node.key.key, which no process looking for node.key finds.
            raise ValueError(
                f"{name!r}: name the pair without {suffix} ({name.removesuffix(suffix)!r} "
                f"writes {name.removesuffix(suffix)}.key and .key_secret)"
            )
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        # Said of a path that is there as no folder: "File exists" alone misleads.
        raise FileExistsError(
            f"{folder}: is not a folder (a file, or a symbolic link to nothing)"
        ) from None
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        # Checked before anything is written: the secret key was replaced, then moving the
        # public key onto a folder failed, leaving a pair that does not match.
        if path.exists() and not path.is_file():
            raise FileExistsError(f"{path}: exists and is not a key file; move it away")
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{path}: exists; give --overwrite to replace the key pair (clients holding "
                "the old public key are then refused)"
            )
    # Written in a private temporary folder and moved into place, so the secret is never
    # readable by others, not even between the write and the chmod.
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".keys-") as tmp:
            tmp_public, tmp_secret = zmq.auth.create_certificates(tmp, name)
            os.chmod(tmp_secret, 0o600)
            os.chmod(tmp_public, 0o644)
            os.replace(tmp_secret, secret)
            os.replace(tmp_public, public)
    except OSError as e:
        # Named by the folder given, not by the temporary one inside it.
        raise OSError(e.errno, f"cannot write the key pair ({e.strerror or e})", str(folder)) from e
    return public, secret
