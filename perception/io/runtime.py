"""Where ipc sockets live, and binding them without handing them to, or taking them from, anyone.

Any local user can reach a Unix socket in a folder they can write to, and libzmq binds an ipc
endpoint by deleting whatever file is at its path first. So:

- The default endpoints live in a per-user runtime folder, `{runtime}` in an endpoint:
  `$XDG_RUNTIME_DIR/perception-node` when XDG_RUNTIME_DIR is set (that folder must be owned by
  this user and not writable by others), else `<tmp>/perception-node-<uid>`. The folder is
  created with mode 0700 and, before every use, checked: a real folder (not a symbolic link),
  owned by this user, no access for group or others. Anything else is an error naming the
  folder and the problem: another user may have made it to read or replace our sockets.
- A bind into any other folder checks that folder: owned by this user, not writable by group or
  others (a folder only we can write to: nobody else can delete or replace our socket). A
  missing folder is created with mode 0700.
- An ipc path that already holds a socket is probed: if a process answers, the endpoint is live
  and the bind is refused, naming that process; a socket nobody answers on (left by a process
  that died) is removed if it is ours. A path holding anything but a socket is refused.
- `remove_socket_file` removes the file at close, only if it is still the one we bound.

A process of the same user can still replace our socket with raw libzmq calls: that user's
processes are trusted alike (they could also read its memory). Between the probe and the bind
another process could bind the same path; two perception processes starting within that
moment are not told apart.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from perception.errors import TransportError

__all__ = [
    "RUNTIME_TOKEN",
    "BoundSocketFile",
    "bound_socket_file",
    "check_ipc_free",
    "check_private_dir",
    "check_socket_dir",
    "endpoint_problem",
    "ipc_path",
    "prepare_ipc_bind",
    "remove_socket_file",
    "resolve_endpoint",
    "runtime_dir",
    "tcp_endpoint_problem",
    "unresolved_host",
    "url_host",
]

#: Stands for the per-user runtime folder in an ipc endpoint: `ipc://{runtime}/sensors`.
RUNTIME_TOKEN = "{runtime}"

_PROBE_TIMEOUT_S = 1.0


def runtime_dir(*, uid: int | None = None) -> Path:
    """The per-user runtime folder (see the module docstring), created when missing, and
    checked: a real folder owned by `uid` (default: this process's user) that no one else can
    enter.

    Raises:
        TransportError: naming the folder and what is wrong with it.
    """
    uid = os.getuid() if uid is None else uid
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        base = Path(xdg)
        if not base.is_absolute():
            # The XDG specification calls a relative one invalid: it would name a different
            # folder in each working directory, so a node and its player would miss each other.
            raise TransportError(
                f"{base}: XDG_RUNTIME_DIR is a relative path (the XDG specification calls it "
                "invalid); unset it or give an absolute path"
            )
        try:
            st = base.stat()
        except OSError as e:
            raise TransportError(f"{base}: XDG_RUNTIME_DIR is not usable ({e.strerror})") from None
        if not stat.S_ISDIR(st.st_mode):
            raise TransportError(f"{base}: XDG_RUNTIME_DIR is not a folder")
        _check_owner_and_writers(base, st, uid, "XDG_RUNTIME_DIR", "unset it or fix it")
        folder = base / "perception-node"
    else:
        folder = Path(tempfile.gettempdir()) / f"perception-node-{uid}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass  # checked below: it may be somebody else's
    except OSError as e:
        raise TransportError(f"{folder}: cannot create the runtime folder ({e.strerror})") from None
    check_private_dir(folder, uid=uid)
    return folder


def check_private_dir(folder: Path, *, uid: int | None = None) -> None:
    """Check that `folder` is a real folder (not a symbolic link), owned by `uid` (default:
    this process's user), with no access for group or others (mode 0700 or stricter).

    Raises:
        TransportError: naming the folder and what is wrong with it, and what to do.
    """
    uid = os.getuid() if uid is None else uid
    try:
        st = folder.lstat()
    except OSError as e:
        raise TransportError(f"{folder}: runtime folder not usable ({e.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise TransportError(
            f"{folder}: the runtime folder is a symbolic link (to {os.readlink(folder)}); "
            "someone may be redirecting our sockets: remove it"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise TransportError(f"{folder}: the runtime folder is not a folder; remove it")
    if st.st_uid != uid:
        raise TransportError(
            f"{folder}: the runtime folder is owned by uid {st.st_uid}, not by this user "
            f"(uid {uid}): another user may have made it to read or replace our sockets; "
            "remove it (or set XDG_RUNTIME_DIR)"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise TransportError(
            f"{folder}: the runtime folder has mode {mode:04o}, which lets other users in "
            f"(it must be 0700): chmod 700 {folder}"
        )


def check_socket_dir(folder: Path, *, uid: int | None = None) -> None:
    """Check a folder an ipc socket is bound in (not the runtime folder): owned by `uid`
    (default: this process's user) and not writable by group or others, so that nobody else
    can delete or replace the socket. A symbolic link is followed; the link itself must then
    be owned by `uid` or root (else its owner could point it elsewhere).

    Raises:
        TransportError: naming the folder and what is wrong with it.
    """
    uid = os.getuid() if uid is None else uid
    try:
        link = folder.lstat()
        st = folder.stat()
    except OSError as e:
        raise TransportError(f"{folder}: socket folder not usable ({e.strerror})") from None
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (uid, 0):
        raise TransportError(
            f"{folder}: the socket folder is a symbolic link owned by uid {link.st_uid}, who "
            "can point it elsewhere; use a folder of your own"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise TransportError(f"{folder}: not a folder")
    _check_owner_and_writers(
        folder, st, uid, "the socket folder", f"use a folder of your own, or {RUNTIME_TOKEN}"
    )


def _check_owner_and_writers(
    folder: Path, st: os.stat_result, uid: int, what: str, remedy: str
) -> None:
    if st.st_uid != uid:
        raise TransportError(
            f"{folder}: {what} is owned by uid {st.st_uid}, not by this user (uid {uid}), who "
            f"could delete or replace sockets in it; {remedy}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise TransportError(
            f"{folder}: {what} has mode {mode:04o}: group or others can write to it and so "
            f"delete or replace sockets in it; {remedy}"
        )


def tcp_endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with a `tcp://HOST:PORT` endpoint (None: nothing, or not tcp). The port is
    0 to 65535 or `*` (ZeroMQ's any free port): libzmq takes a larger number without a word
    and binds another port."""
    if not endpoint.startswith("tcp://"):
        return None
    host, colon, port = endpoint.removeprefix("tcp://").rpartition(":")
    if not colon or not host:
        return "a tcp endpoint is tcp://HOST:PORT"
    if port != "*" and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return f"port {port!r} is not a TCP port (0-65535, or *)"
    # libzmq takes 999.1.1.1 for a host name: a connect then waits for ever without a word.
    # (A host may be `source;destination`, each an address, a name or an interface.)
    for part in host.split(";"):
        if _DOTTED_NUMBERS.fullmatch(part) and not _is_ipv4(part):
            return f"host {part!r} is not an IPv4 address (four numbers from 0 to 255)"
    return None


_DOTTED_NUMBERS = re.compile(r"[0-9.]+")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def endpoint_problem(endpoint: str, *, connect: bool = False) -> str | None:
    """What is wrong with `endpoint` (None: nothing found): a `{...}` other than `{runtime}`
    (a misspelt `{runtme}` became a folder of that name beside the process, and the node and
    its sensors met nowhere, without a word), a tcp endpoint's fault (`tcp_endpoint_problem`),
    and, where it is connected to (`connect`), a tcp port 0 or `*`: those pick a free port
    when binding; a connect to one waited for ever without a word."""
    for token in _PLACEHOLDER.findall(endpoint):
        if token != RUNTIME_TOKEN:
            return f"{token} is no placeholder (the only one is {RUNTIME_TOKEN})"
    problem = tcp_endpoint_problem(endpoint)
    if problem is not None or not connect or not endpoint.startswith("tcp://"):
        return problem
    port = endpoint.rpartition(":")[2]
    if port in ("0", "*"):
        return (
            f"port {port} picks a free port where an endpoint is bound; connecting needs the "
            "port the other side bound"
        )
    return None


def unresolved_host(endpoint: str) -> str | None:
    """Why the host a `tcp://` endpoint connects to has no address, in the resolver's words
    (None: it has one, or the endpoint is not tcp). libzmq retries such a connect for ever
    without a word, so a misspelt sensor host read only as a silent sensor.

    A host name is looked up as libzmq would (the destination of `source;destination`); with
    no name server answering this can take seconds, so it is called off the hot path.
    """
    if not endpoint.startswith("tcp://"):
        return None
    host, colon, _ = endpoint.removeprefix("tcp://").rpartition(":")
    host = host.rpartition(";")[2].removeprefix("[").removesuffix("]")
    if not colon or host in ("", "*"):
        return None
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"host {host!r} does not resolve ({e.strerror})"
    except (UnicodeError, ValueError) as e:  # a label over 63 bytes, a NUL
        return f"host {host!r} is not a host name ({e})"
    return None


def url_host(host: str) -> str:
    """`host` as a URL names it: an IPv6 address in brackets (`http://::1:9464/` is no URL
    a browser or Prometheus takes; `http://[::1]:9464/` is)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def resolve_endpoint(endpoint: str, *, connect: bool = False) -> str:
    """`endpoint` with `{runtime}` replaced by the runtime folder (created and checked); other
    endpoints unchanged. `connect`: the endpoint is connected to, not bound.

    Raises:
        TransportError: the runtime folder is not usable (see `runtime_dir`), or the endpoint
            is not one (`endpoint_problem`).
    """
    problem = endpoint_problem(endpoint, connect=connect)
    if problem is not None:
        raise TransportError(f"{endpoint}: {problem}")
    if RUNTIME_TOKEN not in endpoint:
        return endpoint
    if not endpoint.startswith("ipc://"):
        raise TransportError(f"{endpoint}: {RUNTIME_TOKEN} is a folder, for ipc:// endpoints only")
    return endpoint.replace(RUNTIME_TOKEN, str(runtime_dir()))


@dataclass(frozen=True)
class BoundSocketFile:
    """An ipc socket file this process bound: its path, and the file's identity right after the
    bind (device, inode), so that close removes it only if nobody has replaced it since."""

    path: Path
    device: int
    inode: int


def ipc_path(endpoint: str) -> Path | None:
    """The file of an `ipc://` endpoint; None for other schemes and Linux abstract sockets
    (`ipc://@name`, which have no file).

    Raises:
        TransportError: `ipc://` with no path.
    """
    if not endpoint.startswith("ipc://") or endpoint.startswith("ipc://@"):
        return None
    path = endpoint.removeprefix("ipc://")
    if not path:
        # Path("") is the working folder: "ipc://: . exists and is not a socket" said nothing.
        raise TransportError(
            f"{endpoint}: an ipc endpoint names a socket file, e.g. ipc://{RUNTIME_TOKEN}/name"
        )
    return Path(path)


def prepare_ipc_bind(endpoint: str) -> Path | None:
    """Make `endpoint` (resolved) ready to bind: its folder created (mode 0700) or checked
    (`check_socket_dir`; the runtime folder was checked by `resolve_endpoint`), and a socket
    already at its path probed: live, the bind is refused; stale and ours, removed. Returns the
    socket's path (None: not an ipc endpoint with a file).

    Raises:
        TransportError: the folder is not safe, another live process holds the endpoint, or the
            path holds something that is not a stale socket of ours.
    """
    path = ipc_path(endpoint)
    if path is None:
        return None
    folder = path.parent
    if not folder.exists():
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise TransportError(f"{endpoint}: cannot create socket folder: {e}") from None
    check_socket_dir(folder)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return path
    except OSError as e:
        raise TransportError(f"{endpoint}: cannot inspect {path} ({e.strerror})") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise TransportError(
            f"{endpoint}: {path} exists and is not a socket; not replacing it (remove it, or "
            "choose another endpoint)"
        )
    check_ipc_free(endpoint)
    if st.st_uid != os.getuid():
        raise TransportError(
            f"{endpoint}: a stale socket owned by uid {st.st_uid} is in the way; remove {path}"
        )
    with contextlib.suppress(FileNotFoundError):  # its owner may have removed it meanwhile
        path.unlink()
    return path


def check_ipc_free(endpoint: str) -> None:
    """Refuse at once an `ipc://` endpoint (resolved) another live process holds, or whose
    socket folder binding it would refuse or fail to create, without touching anything: a
    command can say so before minutes of loading. Other schemes, and a path that is free or a
    stale socket, pass (the bind itself decides).

    Raises:
        TransportError: another live process holds the endpoint, its folder is not safe, or it
            cannot be created (names the folder in the way).
    """
    path = ipc_path(endpoint)
    if path is None:
        return
    folder = path.parent
    if folder.is_dir():
        check_socket_dir(folder)
    else:
        above = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
        if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
            why = "is not a folder" if not above.is_dir() else "is not writable"
            raise TransportError(f"{endpoint}: cannot create socket folder {folder}: {above} {why}")
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return
    except OSError:
        return
    holder = _probe(path, endpoint)
    if holder is not None:
        pid, uid = holder
        raise TransportError(
            f"{endpoint}: in use by another live process (pid {pid}, uid {uid}); stop it or "
            "choose another endpoint"
        )


def _probe(path: Path, endpoint: str) -> tuple[int, int] | None:
    """(pid, uid) of the process listening on the Unix socket `path`, or None when nobody is
    (connection refused: the socket was left by a process that has gone)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT_S)
    try:
        probe.connect(str(path))
        # The credentials of the process that made the listening socket (Linux).
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", creds)
        return pid, uid
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except TimeoutError:
        # A listener whose backlog is full is alive, just busy.
        raise TransportError(
            f"{endpoint}: in use by another live process (not answering); stop it or choose "
            "another endpoint"
        ) from None
    except OSError as e:
        raise TransportError(f"{endpoint}: cannot probe {path} ({e.strerror})") from None
    finally:
        probe.close()


def bound_socket_file(path: Path) -> BoundSocketFile | None:
    """The identity of the socket file just bound at `path` (None if it is not there)."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return BoundSocketFile(path, st.st_dev, st.st_ino)


def remove_socket_file(bound: BoundSocketFile) -> None:
    """Remove the socket file this process bound, unless it has been replaced since (libzmq
    itself leaves ipc socket files behind)."""
    try:
        st = bound.path.lstat()
    except OSError:
        return
    if (st.st_dev, st.st_ino) == (bound.device, bound.inode):
        with contextlib.suppress(OSError):
            bound.path.unlink()
