"""A run: the DetectionLists one replay wrote (`perception replay ... --out RUN.jsonl|.mcap`),
one per frame.

This module lives in `replay` rather than in `app` (where `show` first checked it) because the
ROS 2 bag export, library code, must refuse what `show` and `eval` refuse, and `replay` must
not import `app`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from perception.errors import PerceptionError
from perception.msgs.types import DetectionList

__all__ = ["check_one_per_frame"]


def check_one_per_frame(
    lists: Sequence[DetectionList],
    path: Path,
    lines: Sequence[int] | None = None,
    *,
    numbers: Sequence[int] | None = None,
) -> None:
    """Refuses a run holding a frame twice: two DetectionLists with one `header.seq` (the KITTI
    frame's index) or one `header.stamp_ns` (the drive's sweep). A replay writes one per frame;
    a repeated one (runs concatenated, a line pasted twice) would be counted twice by `eval`,
    drawn twice on one picture by `show` and exported twice by `export`. `lines`: the line of
    each DetectionList in the file `path` (None: an MCAP file, where its number names it);
    `numbers`: for an MCAP file, the number (from 1) of each DetectionList among those of the
    file, where `lists` are some of them (default: their place in `lists`).

    Raises:
        PerceptionError: naming the file, the line of the second DetectionList, the frame and
            the line of the first.
    """

    def place(i: int) -> str:
        if lines is not None:
            return f"line {lines[i]}"
        return f"DetectionList {i + 1 if numbers is None else numbers[i]}"

    seqs: dict[int, int] = {}
    stamps: dict[int, int] = {}
    for i, dl in enumerate(lists):
        seq, stamp_ns = dl.header.seq, dl.header.stamp_ns
        where = f"{path}: {place(i)}" if lines is None else f"{path}:{lines[i]}"
        if seq in seqs:
            raise PerceptionError(
                f"{where}: frame header.seq {seq} again (first on {place(seqs[seq])}); a run "
                "holds one DetectionList per frame"
            )
        if stamp_ns in stamps:
            raise PerceptionError(
                f"{where}: frame header.stamp_ns {stamp_ns} again (first on "
                f"{place(stamps[stamp_ns])}); a run holds one DetectionList per frame"
            )
        seqs[seq] = i
        stamps[stamp_ns] = i
