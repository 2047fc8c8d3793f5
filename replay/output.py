"""Output files that a failed run never damages: write beside the target, rename on success.

Every file the commands write (replay detections, drives, bench reports, demo files, the
calibration overlay) goes through `atomic_output`: the data is written to a hidden temporary
file in the target's folder (same file system, so the final `os.replace` is atomic) and renamed
over the target only when the block completes. A run that fails, is interrupted or is killed
leaves an existing target exactly as it was (a kill can leave the hidden temporary file, whose
name says what it was for).

`check_output_file` and `check_output_dir` turn the usual mistakes (a missing folder, a folder
where a file is wanted, a file where a folder is wanted) into one-line errors naming the path,
before any work is done.

This module lives in `replay` rather than `app` because library code writes outputs too (the
demo, many-drive replays, importers) and `replay` must not import `app`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from perception.errors import PerceptionError

__all__ = [
    "OutputError",
    "atomic_output",
    "check_free_space",
    "check_name_fits",
    "check_not_an_input",
    "check_output_dir",
    "check_output_file",
    "check_outputs_not_inputs",
    "find_output_input",
    "output_dir",
    "place_new",
    "try_lock",
]


class OutputError(PerceptionError):
    """An output path cannot be written; the message names the path and the problem."""


def check_output_file(path: Path | str, what: str = "the output") -> Path:
    """`path` (expanded) if a file can be written there: its folder exists, and it is not a
    folder, a device, a pipe or a socket. Given as the user typed it (a str), it must not end
    in `/` or `/.`: that names a folder, which `Path` forgets (`Path("x.yaml/")` is x.yaml, and
    the file was written there).

    Raises:
        OutputError: naming the path and the problem.
    """
    if isinstance(path, str) and path.endswith(("/", "/.")):
        ending = "/." if path.endswith("/.") else "/"
        raise OutputError(f"{path}: names a folder (it ends in {ending}); {what} must be a file")
    path = Path(path).expanduser()
    if path.is_symlink():
        _resolved(path, what)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; {what} must be a file")
    if path.exists() and not path.is_file():
        # Written beside and renamed over, a device or pipe would be replaced by a file.
        raise OutputError(f"{path}: is a device, pipe or socket; {what} must be a regular file")
    parent = path.parent
    if not parent.exists():
        raise OutputError(f"{path}: folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise OutputError(f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: exists and is not writable")
    return path


def check_not_an_input(
    out: Path,
    inputs: Iterable[Path],
    what: str = "the output",
    *,
    folders: Iterable[Path] = (),
) -> None:
    """Refuses an output path that names one of the command's inputs, or a file in one of its
    input `folders` (writing it would replace the data being read), symbolic links resolved:
    a link is written through to the file it names.

    Raises:
        OutputError: naming the path (also for a symbolic link loop, which names no file).
    """
    check_outputs_not_inputs([out], inputs, what, folders=folders)


def check_outputs_not_inputs(
    outs: Iterable[Path],
    inputs: Iterable[Path],
    what: str = "the output",
    *,
    folders: Iterable[Path] = (),
) -> None:
    """`check_not_an_input` for each of `outs`, the inputs resolved once for all.

    Raises:
        OutputError: naming the first output that is an input.
    """
    outs = list(outs)
    found = find_output_input(outs, inputs, what)
    if found is not None:
        raise OutputError(
            f"{found[0]}: is also an input of this command; {what} must be another file"
        )
    within: dict[Path, Path] = {}
    for folder in folders:
        resolved = _resolved_or_none(folder)
        if resolved is not None:
            within.setdefault(resolved, folder)
    if not within:
        return
    for out in outs:
        read = within.get(_resolved(Path(out).expanduser(), what).parent)
        if read is not None:
            raise OutputError(
                f"{out}: is in {read}, which this command reads; {what} must be written elsewhere"
            )


def find_output_input(
    outs: Iterable[Path], inputs: Iterable[Path], what: str = "the output"
) -> tuple[Path, Path] | None:
    """The first of `outs` that is one of `inputs` (writing it would replace the data being
    read), with that input, both as given; None when none is. Symbolic links are resolved: a
    link is written through to the file it names. For callers that word the refusal
    themselves (`check_outputs_not_inputs` is the usual one).

    Raises:
        OutputError: an output is a symbolic link loop (it names no file).
    """
    files: dict[Path, Path] = {}
    for given in inputs:
        resolved = _resolved_or_none(given)
        if resolved is not None:
            files.setdefault(resolved, given)
    for out in outs:
        read = files.get(_resolved(Path(out).expanduser(), what))
        if read is not None:
            return out, read
    return None


def _resolved(path: Path, what: str) -> Path:
    """`path` with its symbolic links resolved.

    Raises:
        OutputError: the links form a loop (Python 3.11 raises RuntimeError for it).
    """
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:
        raise OutputError(f"{path}: is a symbolic link loop; {what} names no file") from e


def _resolved_or_none(path: Path) -> Path | None:
    """`path` resolved, None when its links loop (then it names no file to protect)."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):
        return None


def check_output_dir(path: Path, what: str = "the output", *, create: bool = True) -> Path:
    """`path` as a folder to write into, created (with its parents) when `create`.

    Raises:
        OutputError: `path` or one of its parents is a file, or it cannot be created or written.
    """
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            where = "is a file" if p == path else f"{p} is a file"
            raise OutputError(f"{path}: {where}; {what} must be a folder")
        if p.exists():
            break
        if p.is_symlink():
            # A link to nothing (or in a loop): creating the folder failed with "File exists".
            where = "is" if p == path else f"{p} is"
            raise OutputError(
                f"{path}: {where} a symbolic link that leads to nothing (a missing target, or "
                f"a loop); {what} must be a folder"
            )
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{path}: cannot create the folder ({e.strerror})") from e
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: the folder is not writable")
    return path


@contextlib.contextmanager
def output_dir(path: Path, what: str = "the output") -> Iterator[Path]:
    """`check_output_dir(path, what)` for a block that writes into the folder: when the block
    raises (including KeyboardInterrupt), the folders this created are removed again if they
    are still empty, so that a run failing after it started leaves no empty folder behind. A
    folder that was there before, or that holds anything, is never removed.

    Raises:
        OutputError: as `check_output_dir`.
    """
    path = Path(path).expanduser()
    # The folders that mkdir(parents=True) will create, deepest first.
    created: list[Path] = []
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            break
        created.append(p)
    try:
        yield check_output_dir(path, what)
    except BaseException:
        for p in created:
            try:
                p.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                # Something was written into it: it and its parents stay.
                break
        raise


def try_lock(fd: int, kind: int) -> bool:
    """Takes the advisory lock `kind` (fcntl.LOCK_EX, LOCK_SH) on `fd` without waiting; False
    when another process holds a conflicting one. A file system without locks (some network
    ones) counts as unlocked: the lock guards against a mistake, it is not needed to write."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def check_free_space(path: Path, needed_bytes: float, what: str = "the output") -> None:
    """That the file system holding `path` (or its nearest existing parent) has room for
    `needed_bytes` more, so that a long write is refused before it starts rather than failing
    when the disk is full.

    Raises:
        OutputError: naming the path, what it needs and what is free.
    """
    path = Path(path).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    if needed_bytes > free:
        raise OutputError(
            f"{path}: {what} needs about {_size(needed_bytes)}, and {existing} has "
            f"{_size(free)} free"
        )


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:,.0f} TB"


_MAX_NAME_BYTES = 255  # a file name's limit on Linux's file systems (NAME_MAX)


def _longest_name(folder: Path) -> int:
    """The longest file name, in bytes, that the file system holding `folder` (or its nearest
    existing parent, for a folder still to be made) takes."""
    existing = next((p for p in (folder, *folder.parents) if p.is_dir()), Path("."))
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return _MAX_NAME_BYTES


def check_name_fits(path: Path, what: str = "the output") -> None:
    """Refuses an output whose file name is longer than its file system takes (255 bytes on
    Linux's), before any work is done: writing it failed only at the end, with the raw
    "File name too long". Counted in the bytes the file system gets, as `_temporary_beside`.

    Raises:
        OutputError: naming the path, its length and the limit.
    """
    path = Path(path).expanduser()
    size, limit = len(os.fsencode(path.name)), _longest_name(path.parent)
    if size > limit:
        raise OutputError(
            f"{path}: a name of {size} bytes, longer than the {limit} its file system takes; "
            f"{what} needs a shorter one"
        )


def _temporary_beside(target: Path) -> Path:
    """A new empty file in `target`'s folder, hidden, keeping `target`'s suffix (writers such
    as OpenCV and matplotlib choose the format from it)."""
    # A file name takes at most 255 bytes: a target's name near that has no room for the
    # temporary's additions, which then keeps only the name's start. Counted in the bytes the
    # file system gets: a name's undecodable bytes (surrogates) failed `str.encode()`.
    stem = target.stem
    while len(os.fsencode(f".{stem}.00000000.part{target.suffix}")) > _MAX_NAME_BYTES and stem:
        stem = stem[:-1]
    for _ in range(100):
        token = secrets.token_hex(4)
        tmp = target.with_name(f".{stem}.{token}.part{target.suffix}")
        try:
            # 0o666 and the umask, as a new file written with open() would get.
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            os.close(fd)
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputError(f"{target}: cannot write in {target.parent} ({e.strerror})") from e
        except BaseException:
            # A signal (SIGINT, SIGTERM) as the file was made: it is ours (O_EXCL made it or
            # nothing), and the caller will never know its name.
            tmp.unlink(missing_ok=True)
            raise
        return tmp
    raise OutputError(f"{target}: no free temporary name in {target.parent}")


_AT_FDCWD = -100  # <fcntl.h>: paths relative to the working folder, as os.rename takes them
_RENAME_NOREPLACE = 1  # <linux/fs.h>


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2(2), None where there is none (not Linux, or a glibc before 2.28)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _rename_noreplace(src: Path, dst: Path) -> bool:
    """`src` renamed to `dst` unless `dst` exists, in one step (renameat2 RENAME_NOREPLACE):
    True when done, False where the kernel or file system cannot (nothing was done).

    Raises:
        FileExistsError: `dst` exists.
        OSError: the rename failed otherwise.
    """
    rename = _renameat2()
    if rename is None:
        return False
    if rename(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    # ENOSYS: a kernel before 3.15; EINVAL: a file system without RENAME_NOREPLACE.
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def place_new(tmp: Path, target: Path) -> None:
    """`tmp` (a file or a folder) renamed to `target` unless `target` exists (a rename
    replaces a file, or an empty folder: two imports of one new drive left the second's alone,
    the first's gone without a word). A file: a hard link, which the kernel refuses over an
    existing name (`tmp` stays, for the caller to remove). A folder (no hard links):
    renameat2 with RENAME_NOREPLACE, which refuses likewise. Where neither is supported, a
    rename after a check.

    Raises:
        OutputError: `target` exists, or neither the link nor the rename can be made.
    """
    folder = tmp.is_dir() and not tmp.is_symlink()
    appeared = OutputError(
        f"{target}: appeared while this command wrote it (another process writing the same "
        f"{'folder' if folder else 'file'}?); not replaced, and what was written here is "
        "dropped"
    )
    if folder:
        try:
            if _rename_noreplace(tmp, target):
                return
        except FileExistsError:
            raise appeared from None
        except OSError as e:
            raise OutputError(f"{target}: cannot write it ({e.strerror})") from e
        _rename_after_check(tmp, target, appeared)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise appeared from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise OutputError(f"{target}: cannot write it ({e.strerror})") from e
        _rename_after_check(tmp, target, appeared)


def _rename_after_check(tmp: Path, target: Path, appeared: OutputError) -> None:
    """`place_new` where neither a hard link nor renameat2 can refuse an existing `target`:
    a rename after a check, the narrowest window there is (a file, or an empty folder, made
    between the two is replaced).

    Raises:
        OutputError: `appeared` where `target` exists, or the rename fails.
    """
    if os.path.lexists(target):
        raise appeared
    try:
        os.replace(tmp, target)
    except OSError as e:
        raise OutputError(f"{target}: cannot write it ({e.strerror})") from e


@contextlib.contextmanager
def atomic_output(
    target: Path, what: str = "the output", *, replace: bool = True
) -> Iterator[Path]:
    """A temporary path to write `target`'s content to; renamed to `target` when the block
    completes, removed when it raises (including KeyboardInterrupt). An existing `target` keeps
    its permissions; a symbolic link is written through to the file it names. With `replace`
    False, a `target` that appeared meanwhile (another process writing the same new file) is
    not replaced: that is an error, and the content written here is dropped.

    Raises:
        OutputError: `target` cannot be written (see `check_output_file`), the rename fails,
            or (without `replace`) `target` exists by then.
    """
    target = check_output_file(Path(target), what)
    if target.is_symlink():
        target = _resolved(target, what)
    tmp: Path | None = None
    try:
        # Made inside the try: a signal just after it is made still removes it.
        tmp = _temporary_beside(target)
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        yield tmp
        if replace:
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise OutputError(f"{target}: cannot replace it ({e.strerror})") from e
        else:
            place_new(tmp, target)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
