"""The monitor's evidence (calibration.pooled): a window's frames laid end to end score a
candidate exactly as the frames do one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.pooled import FrameEvidence, PooledEvidence, histograms

BINS = 8


def _frame(
    rng: np.random.Generator, n: int, rows: int, width: int, row0: int, *, edges: bool = True
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
        level=rng.integers(0, BINS, n),
        grey=rng.integers(0, 256, (rows, width)).astype(np.uint8),
        row0=row0,
        width=width,
        origin=np.zeros(6),
        fold=0,
    )


def _one_at_a_time(
    frames: list[FrameEvidence], shifts: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    return sum(
        (
            histograms(f, (offset + s)[None], BINS)[0].astype(np.int64)
            for f, s in zip(frames, shifts, strict=True)
        ),
        np.zeros(BINS * BINS, np.int64),
    )


def test_a_window_laid_end_to_end_counts_what_its_frames_count() -> None:
    """Bands of different heights, widths and first rows, each frame shifted to the centre:
    every candidate's counts are the frames' summed, to the point."""
    rng = np.random.default_rng(0)
    frames = [
        _frame(rng, 3000, 60, 200, 100),
        _frame(rng, 2500, 41, 160, 0),
        _frame(rng, 10, 5, 200, 370),
        _frame(rng, 4000, 120, 200, 17),
    ]
    shifts = rng.integers(-16, 17, (len(frames), 6)) / 8
    pooled = PooledEvidence(frames, shifts, BINS)
    assert len(pooled) == sum(len(f.uv) for f in frames)
    for _ in range(20):
        offset = rng.integers(-24, 25, 6) / 8
        expected = _one_at_a_time(frames, shifts, offset)
        got = pooled.histogram(offset)
        assert expected.sum() > 0.5 * len(pooled)
        np.testing.assert_array_equal(got, expected)


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
