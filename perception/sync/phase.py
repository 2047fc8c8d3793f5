"""Where each camera's frames fall within their sweeps, against where the config expects them.

The synchroniser pairs a camera frame with the sweep whose stamp + `sync.camera_offsets_ms[c]`
is within the camera's window of the frame's stamp. A camera is usually triggered as the lidar
faces it, part-way through the sweep (the synthetic drive's 62 ms into a 100 ms sweep). With
the offset left at its default of 0 and the default 50 ms window, such a frame misses its own
sweep and lands in the next one's window: every sweep was fused with the frame taken during
the sweep before it, 38 ms older, and nothing said so (the bundles all had their camera).

`CameraPhases` keeps the latest sweep stamps and camera frame stamps (on the common clock) and
measures how far each camera's frames come from the time its offset expects them (after the
stamp of the sweep they fall in, or the one after). A camera whose frames come steadily away
from that time is named in `notes`, with the offset that would place them: the phase within
the sweep they fall in (the latest sweep stamped at or before each, as `perception import`
and a replay without a config measure it).
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections import deque
from collections.abc import Iterable, Mapping

__all__ = ["CameraPhases"]

#: Stamps kept per stream: a few seconds at 10 Hz, enough for a steady median.
_HISTORY = 64
#: Frames whose phase is known before a camera's phase is judged.
_MIN_FRAMES = 10


class CameraPhases:
    """Sweep and camera stamps (ns, on the common clock) and the cameras' phases within their
    sweeps. Not thread-safe: the node core calls it under its lock."""

    def __init__(self) -> None:
        self._sweeps: deque[int] = deque(maxlen=_HISTORY)
        self._frames: dict[str, deque[int]] = {}

    def on_sweep(self, stamp_ns: int) -> None:
        """A sweep accepted by the synchroniser, stamped `stamp_ns` (its start)."""
        if self._sweeps and stamp_ns <= self._sweeps[-1]:
            # A lidar clock stepping back (a reset, a jump): the old timeline's sweeps would
            # place the new frames in no sweep of theirs.
            self._sweeps.clear()
            self._frames.clear()
        self._sweeps.append(stamp_ns)

    def on_frame(self, camera: str, stamp_ns: int) -> None:
        """A frame of `camera` accepted by the synchroniser, stamped `stamp_ns`."""
        frames = self._frames.get(camera)
        if frames is None:
            frames = self._frames[camera] = deque(maxlen=_HISTORY)
        frames.append(stamp_ns)

    def period_ns(self) -> int | None:
        """The lidar's period: the median interval of the latest sweeps (None before two)."""
        sweeps = self._sweeps
        if len(sweeps) < 2:
            return None
        return round(statistics.median(b - a for a, b in itertools.pairwise(sweeps)))

    def residuals_ns(self, camera: str, offset_ns: int) -> list[int]:
        """For each of `camera`'s latest frames whose sweep and the sweep after it have come
        (at most twice the lidar's period apart: a gap, sweeps lost, places no frame): its
        stamp less the nearest time `offset_ns` after a sweep stamp expects a frame, within
        half a sweep interval either way."""
        period = self.period_ns()
        return [] if period is None else self._residuals(camera, offset_ns, period)

    def _residuals(self, camera: str, offset_ns: int, period: int) -> list[int]:
        frames = self._frames.get(camera)
        if not frames:
            return []
        sweeps = list(self._sweeps)
        out = []
        for stamp in frames:
            i = bisect.bisect_right(sweeps, stamp) - 1
            if not 0 <= i < len(sweeps) - 1:
                continue
            interval = sweeps[i + 1] - sweeps[i]
            if interval > 2 * period:
                continue
            out.append((stamp - sweeps[i] - offset_ns + interval // 2) % interval - interval // 2)
        return out

    def notes(self, offsets_ms: Mapping[str, float], cameras: Iterable[str]) -> dict[str, str]:
        """Camera -> a note, for each of `cameras` whose frames come steadily (their residuals'
        median absolute deviation within a tenth of the lidar's period) but away from the time
        their offset (`offsets_ms`, default 0) expects them after a sweep stamp, by more than a
        tenth of the period and three such deviations: each is fused with a sweep it was not taken
        for, or with none. A camera not triggered by the lidar (its frames at any phase) is not
        judged."""
        period = self.period_ns()
        notes: dict[str, str] = {}
        if period is None:
            return notes
        for camera in cameras:
            offset_ms = offsets_ms.get(camera, 0.0)
            residuals = self._residuals(camera, round(offset_ms * 1e6), period)
            if len(residuals) < _MIN_FRAMES:
                continue
            off = statistics.median(residuals)
            spread = statistics.median(abs(r - off) for r in residuals)
            if spread > period / 10 or abs(off) <= max(period / 10, 3 * spread):
                continue
            # Where the frames fall in the sweep they are taken during: the offset to set.
            phase_ms = ((offset_ms * 1e6 + off) % period) / 1e6
            notes[camera] = (
                f"{camera}: its frames come {phase_ms:.0f} ms into the sweep they fall in, "
                f"{abs(off) / 1e6:.0f} ms {'before' if off < 0 else 'after'} the time "
                f"sync.camera_offsets_ms ({offset_ms:g} ms after the sweep stamp) expects them "
                f"(median of {len(residuals)}): each is fused with a sweep it was not taken "
                f"for, or with none. Set sync.camera_offsets_ms: {{{camera}: {phase_ms:.0f}}}"
            )
        return notes
