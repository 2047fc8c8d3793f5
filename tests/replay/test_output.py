"""Output paths (replay.output): what would be destroyed by writing beside and renaming over is
refused before any work, in one line naming the path."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import replay.output
from replay.output import (
    OutputError,
    atomic_output,
    check_name_fits,
    check_output_dir,
    check_output_file,
    check_outputs_not_inputs,
    find_output_input,
    output_dir,
    place_new,
)


def test_a_pipe_a_device_or_a_link_to_one_is_not_replaced(tmp_path: Path) -> None:
    """Renamed over, a FIFO or a device node (through a link too) would become a plain file:
    a replay once replaced /dev/full that way."""
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    link = tmp_path / "link.jsonl"
    link.symlink_to(fifo)
    for path in (fifo, link, Path("/dev/null")):
        with pytest.raises(OutputError) as info:
            check_output_file(path, "--out")
        assert str(info.value) == (
            f"{path}: is a device, pipe or socket; --out must be a regular file"
        )
        with pytest.raises(OutputError), atomic_output(path):
            pass
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)


def test_a_link_to_a_regular_file_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "run.jsonl"
    target.write_text("old\n")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    with atomic_output(link) as tmp:
        tmp.write_text("new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_a_target_named_as_long_as_a_name_may_be_is_written(tmp_path: Path) -> None:
    """The temporary beside it added to its name, past 255 bytes: "File name too long"."""
    target = tmp_path / ("q" * 249 + ".jsonl")
    with atomic_output(target) as tmp:
        tmp.write_text("done\n")
    assert target.read_text() == "done\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_failed_block_removes_only_the_empty_folders_it_created(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), output_dir(tmp_path / "a" / "b" / "c") as folder:
        assert folder.is_dir()
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError), output_dir(tmp_path / "a" / "b") as folder:
        (folder / "written").write_text("kept")
        raise OutputError("failed after writing")
    assert (tmp_path / "a" / "b" / "written").is_file()
    with pytest.raises(OutputError), output_dir(tmp_path / "a" / "b" / "new"):
        raise OutputError("failed before writing")
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["written"]
    with output_dir(tmp_path / "done") as folder:
        pass
    assert folder.is_dir()


def test_a_file_named_as_a_folder_is_refused(tmp_path: Path) -> None:
    """A trailing / names a folder; `Path` drops it, so the path must be given as typed."""
    for given in (f"{tmp_path}/x.yaml/", f"{tmp_path}/x.yaml/."):
        with pytest.raises(OutputError, match=r"names a folder \(it ends in /\.?\); --out must"):
            check_output_file(given, "--out")
    assert check_output_file(f"{tmp_path}/x.yaml", "--out") == tmp_path / "x.yaml"
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_as_the_temporary_is_made_leaves_nothing(monkeypatch, tmp_path: Path) -> None:
    """A SIGTERM (raised as an exception by the CLI's handler) that landed just after the
    temporary file was made, before the block that removes it began, left the hidden partial
    file behind (seen under load by the SIGTERM test of the replay)."""
    real_close = os.close

    def interrupted_close(fd: int) -> None:
        real_close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "close", interrupted_close)
    with pytest.raises(KeyboardInterrupt), atomic_output(tmp_path / "run.jsonl"):
        pass
    monkeypatch.setattr(os, "close", real_close)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_named_by_a_link_to_nothing_is_refused_saying_so(tmp_path: Path) -> None:
    # Creating it failed with "cannot create the folder (File exists)".
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for out in (dangling, loop, dangling / "sub"):
        with pytest.raises(OutputError, match="a symbolic link that leads to nothing") as e:
            check_output_dir(out, "--out")
        where = "is" if out != dangling / "sub" else f"{dangling} is"
        assert str(e.value).startswith(f"{out}: {where} a symbolic link")
    assert not (tmp_path / "gone").exists()


def test_without_replace_a_target_that_appeared_meanwhile_is_kept(tmp_path: Path) -> None:
    """A rename replaces: of two processes writing one new file, the last one's content was
    all that was left, without a word. Without `replace` the one that finishes second is
    refused, and the first's file stays."""
    target = tmp_path / "d.mcap"
    with pytest.raises(OutputError) as info, atomic_output(target, replace=False) as tmp:
        tmp.write_text("second")
        target.write_text("first")  # another process finished first
    assert str(info.value) == (
        f"{target}: appeared while this command wrote it (another process writing the same "
        "file?); not replaced, and what was written here is dropped"
    )
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mcap"]  # no temporary left
    # Nothing there by the end: written as with `replace`.
    other = tmp_path / "e.mcap"
    with atomic_output(other, replace=False) as tmp:
        tmp.write_text("only")
    assert other.read_text() == "only"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mcap", "e.mcap"]


def _staged_folder(tmp_path: Path) -> Path:
    staged = tmp_path / ".bag.part"
    staged.mkdir()
    (staged / "data").write_text("written")
    return staged


def _no_renameat2() -> Callable[..., int] | None:
    return None


def _renameat2_einval() -> Callable[..., int]:
    """renameat2 on a file system without RENAME_NOREPLACE."""

    def rename(*_args: object) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1

    return rename


@pytest.mark.parametrize("renameat2", ["real", "missing", "einval"])
def test_a_folder_is_placed_only_where_nothing_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, renameat2: str
) -> None:
    """A rename replaces an empty folder: one made at the target while a bag was written was
    replaced without a word. renameat2 (RENAME_NOREPLACE) refuses; without it (no symbol, or a
    file system that refuses the flag) a check and a rename, as before."""
    if renameat2 != "real":
        fake = _no_renameat2 if renameat2 == "missing" else _renameat2_einval
        monkeypatch.setattr(replay.output, "_renameat2", fake)
    target = tmp_path / "bag"
    target.mkdir()  # another process made it
    staged = _staged_folder(tmp_path)
    with pytest.raises(OutputError) as info:
        place_new(staged, target)
    assert str(info.value) == (
        f"{target}: appeared while this command wrote it (another process writing the same "
        "folder?); not replaced, and what was written here is dropped"
    )
    assert list(target.iterdir()) == [] and (staged / "data").is_file()
    target.rmdir()
    place_new(staged, target)
    assert (target / "data").read_text() == "written" and not staged.exists()


def test_renameat2_refuses_even_where_the_check_would_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The kernel's refusal, not a check before it: an existence test that says "free" (the
    folder made just after it) still leaves the folder alone."""
    monkeypatch.setattr(os.path, "lexists", lambda _path: False)
    target = tmp_path / "bag"
    target.mkdir()
    staged = _staged_folder(tmp_path)
    with pytest.raises(OutputError, match="appeared while this command wrote it"):
        place_new(staged, target)
    assert list(target.iterdir()) == []


def test_a_name_too_long_for_the_file_system_is_refused(tmp_path: Path) -> None:
    check_name_fits(tmp_path / ("n" * 249 + ".jsonl"))
    long = tmp_path / "later" / ("n" * 250 + ".jsonl")  # its folder made later: its parent's
    with pytest.raises(OutputError) as info:
        check_name_fits(long, "the output of n.mcap")
    assert str(info.value) == (
        f"{long}: a name of 256 bytes, longer than the 255 its file system takes; the output "
        "of n.mcap needs a shorter one"
    )
    # Counted in bytes: a letter of two bytes counts twice.
    with pytest.raises(OutputError, match="a name of 256 bytes"):
        check_name_fits(tmp_path / ("é" * 125 + ".jsonl"))


def test_an_output_that_is_an_input_is_found_with_that_input(tmp_path: Path) -> None:
    """One function finds an output that is an input, for the commands that word the refusal
    themselves (the bench names which input it is) and for check_outputs_not_inputs."""
    config = tmp_path / "node.yaml"
    config.touch()
    link = tmp_path / "link.yaml"
    link.symlink_to(config)
    other = tmp_path / "other.yaml"
    assert find_output_input([other], [config]) is None
    assert find_output_input([other, link], [tmp_path / "x", config]) == (link, config)
    with pytest.raises(OutputError) as info:
        check_outputs_not_inputs([other, link], [config], "--out")
    assert (
        str(info.value) == f"{link}: is also an input of this command; --out must be another file"
    )
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OutputError, match="is a symbolic link loop; --out names no file"):
        find_output_input([loop], [config], "--out")
