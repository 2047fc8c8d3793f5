"""The monitor's evidence (calibration.pooled): a window's frames laid end to end score a
candidate exactly as the frames do one at a time; split votes keep each point's weight and
follow a move of part of a pixel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from calibration.pooled import (
    SPLIT_VOTE,
    FrameEvidence,
    PooledEvidence,
    _split_matrix,
    histograms,
)

BINS = 8


def _frame(
    rng: np.random.Generator,
    n: int,
    rows: int,
    width: int,
    row0: int,
    *,
    edges: bool = True,
    levels: int = BINS,
) -> FrameEvidence:
    """A frame whose pixels, steps and shifts are multiples of 1/64 (exact in float32, so
    laid end to end or not the same pixels are looked up), with points on the band's edges
    and outside it."""
    uv = np.column_stack(
        [
            rng.integers(-64 * 3, 64 * (width + 3), n),
            rng.integers(64 * (row0 - 3), 64 * (row0 + rows + 3), n),
        ]
    ).astype(np.float32) / np.float32(64)
    if edges:
        # The last row and column (the bilinear lookup reads past them), and just outside.
        uv[:4] = [
            [width - 0.5, row0 + rows - 0.25],
            [0.0, row0],
            [width - 1 / 64, row0 + 1],
            [-1 / 64, row0 + rows],
        ]
    jacobian = rng.integers(-64, 65, (6, n, 2)).astype(np.float32) / np.float32(64)
    return FrameEvidence(
        uv=uv,
        jacobian=jacobian,
        level=rng.integers(0, levels, n),
        grey=rng.integers(0, 256, (rows, width)).astype(np.uint8),
        row0=row0,
        width=width,
        origin=np.zeros(6),
        fold=0,
    )


def _one_at_a_time(
    frames: list[FrameEvidence], shifts: np.ndarray, offset: np.ndarray, levels: int = BINS
) -> np.ndarray:
    return sum(
        (
            histograms(f, (offset + s)[None], BINS, levels)[0].astype(np.int64)
            for f, s in zip(frames, shifts, strict=True)
        ),
        np.zeros(levels * BINS, np.int64),
    )


@pytest.mark.parametrize("levels", [BINS, 2 * BINS])
def test_a_window_laid_end_to_end_counts_what_its_frames_count(levels: int) -> None:
    """Bands of different heights, widths and first rows, each frame shifted to the centre:
    every candidate's counts are the frames' summed, to the point; with points at more levels
    than grey levels (the monitor's ground and above-ground classes) too."""
    rng = np.random.default_rng(0)
    frames = [
        _frame(rng, 3000, 60, 200, 100, levels=levels),
        _frame(rng, 2500, 41, 160, 0, levels=levels),
        _frame(rng, 10, 5, 200, 370, levels=levels),
        _frame(rng, 4000, 120, 200, 17, levels=levels),
    ]
    shifts = rng.integers(-16, 17, (len(frames), 6)) / 8
    pooled = PooledEvidence(frames, shifts, BINS, levels)
    assert len(pooled) == sum(len(f.uv) for f in frames)
    for _ in range(20):
        offset = rng.integers(-24, 25, 6) / 8
        expected = _one_at_a_time(frames, shifts, offset, levels)
        got = pooled.histogram(offset)
        assert expected.sum() > 0.5 * len(pooled)
        np.testing.assert_array_equal(got, expected)
        # Every point level holds votes, split or not.
        split = pooled.histogram(offset, split=True).reshape(levels, BINS)
        assert (split.sum(axis=1) > 0).all()
        np.testing.assert_array_equal(
            split.sum(axis=1), SPLIT_VOTE * got.reshape(levels, BINS).sum(axis=1)
        )


def test_a_window_taller_than_opencv_takes_is_scored_in_groups() -> None:
    """OpenCV's lookup takes images of fewer than 32767 rows: 90 bands of 400 rows are scored
    in groups, with the same counts."""
    rng = np.random.default_rng(1)
    frames = [_frame(rng, 200, 400, 40, 0, edges=False) for _ in range(90)]
    shifts = np.zeros((len(frames), 6))
    pooled = PooledEvidence(frames, shifts, BINS)
    offset = np.array([0.5, -1.0, 0.25, 0.0, 1.0, -0.5])
    np.testing.assert_array_equal(pooled.histogram(offset), _one_at_a_time(frames, shifts, offset))


def test_an_empty_window_counts_nothing() -> None:
    pooled = PooledEvidence([], np.zeros((0, 6)), BINS)
    assert len(pooled) == 0
    np.testing.assert_array_equal(pooled.histogram(np.zeros(6)), np.zeros(BINS * BINS))


def test_shifts_must_match_the_frames() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(
        ValueError, match=r"shifts: one of 6 values per frame expected, got \(2, 6\)"
    ):
        PooledEvidence([_frame(rng, 10, 5, 20, 0)], np.zeros((2, 6)), BINS)


def test_a_split_vote_keeps_the_points_weight_and_its_grey_level() -> None:
    """Each grey value's vote is split between the two levels whose centres bracket it, in
    proportion: the whole vote is kept, and its mean level is the value's own position on the
    levels' axis (to the vote's integer rounding), so that a value moving between two centres
    moves its vote smoothly from one level to the other."""
    for bins in (BINS, 24):
        split = _split_matrix(bins)
        assert split.shape == (256, bins)
        assert (split >= 0).all()
        np.testing.assert_array_equal(split.sum(axis=1), SPLIT_VOTE)
        # At most two levels, side by side.
        for row in split:
            used = np.flatnonzero(row)
            assert len(used) <= 2 and (len(used) < 2 or used[1] == used[0] + 1), row
        position = (np.arange(256) + 0.5) * bins / 256 - 0.5
        mean_level = split @ np.arange(bins) / SPLIT_VOTE
        inner = (position >= 0) & (position <= bins - 1)
        np.testing.assert_allclose(mean_level[inner], position[inner], atol=0.5 / SPLIT_VOTE)
        # Beyond the first and last centres, all of it to those levels.
        assert (split[~inner & (position < 0), 0] == SPLIT_VOTE).all()
        assert (split[~inner & (position > 0), bins - 1] == SPLIT_VOTE).all()


def test_split_counts_spread_the_hard_counts_over_grey_levels() -> None:
    """Split, a window counts the same points with the same intensity levels as counted hard,
    each with `SPLIT_VOTE`: only the grey axis differs, and where every grey value sits at a
    level's centre, hardly at all."""
    rng = np.random.default_rng(3)
    frames = [_frame(rng, 3000, 60, 200, 100), _frame(rng, 2500, 41, 160, 0)]
    shifts = rng.integers(-16, 17, (len(frames), 6)) / 8
    pooled = PooledEvidence(frames, shifts, BINS)
    for _ in range(10):
        offset = rng.integers(-24, 25, 6) / 8
        hard = pooled.histogram(offset).reshape(BINS, BINS)
        split = pooled.histogram(offset, split=True).reshape(BINS, BINS)
        np.testing.assert_array_equal(split.sum(axis=1), SPLIT_VOTE * hard.sum(axis=1))
        assert not np.array_equal(split, SPLIT_VOTE * hard)
    # A frame whose image is one grey value, at a level's centre (16 + 32 k for 8 levels):
    # nearly every vote stays at that level (a grey value is itself 1/32 of a level wide).
    for frame, level in zip(frames, (1, 6), strict=True):
        flat = replace(frame, grey=np.full_like(frame.grey, 16 + 32 * level))
        pooled = PooledEvidence([flat], np.zeros((1, 6)), BINS)
        hard = pooled.histogram(np.zeros(6)).reshape(BINS, BINS)
        split = pooled.histogram(np.zeros(6), split=True).reshape(BINS, BINS)
        assert hard[:, level].sum() == hard.sum() > 0
        assert split[:, level].sum() >= 0.98 * SPLIT_VOTE * hard.sum()


def test_split_votes_follow_a_move_of_part_of_a_pixel() -> None:
    """On a grey ramp (8 grey values a pixel), points moved by eighths of a pixel: the split
    counts' mean grey level follows the move in proportion; the hard counts' moves in jumps
    (a point moves its whole vote only where it crosses a level's edge)."""
    rng = np.random.default_rng(4)
    n, width, rows = 400, 40, 10
    uv = np.column_stack([rng.uniform(4, 24, n), rng.uniform(2, 8, n)]).astype(np.float32)
    jacobian = np.zeros((6, n, 2), np.float32)
    jacobian[0, :, 0] = 1.0  # one step of the first axis: one pixel to the right
    ramp = np.clip(np.arange(width) * 8, 0, 255).astype(np.uint8)
    frame = FrameEvidence(
        uv=uv,
        jacobian=jacobian,
        level=rng.integers(0, BINS, n),
        grey=np.tile(ramp, (rows, 1)),
        row0=0,
        width=width,
        origin=np.zeros(6),
        fold=0,
    )
    pooled = PooledEvidence([frame], np.zeros((1, 6)), BINS)
    moves = np.arange(9) / 8

    def mean_level(split: bool) -> np.ndarray:
        out = []
        for du in moves:
            counts = pooled.histogram([du, 0, 0, 0, 0, 0], split=split).reshape(BINS, BINS)
            grey = counts.sum(axis=0)
            out.append(float(grey @ np.arange(BINS) / grey.sum()))
        return np.array(out)

    per_pixel = 8 * BINS / 256  # levels a pixel's move shifts the grey value by
    split_steps = np.diff(mean_level(True))
    np.testing.assert_allclose(split_steps, per_pixel / 8, rtol=0.05)
    hard_steps = np.diff(mean_level(False))
    assert np.ptp(hard_steps) > 0.5 * per_pixel / 8, hard_steps
