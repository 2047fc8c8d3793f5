"""Camera frames encoded as they arrive (`pipeline.camera_ahead`), for the sweep that will take
them.

A spinning lidar's sweep is published when its last point is in, after the cameras that fired
within it: encoding each frame on arrival takes the camera encoder off the sweep's path, and
runs one sweep's camera encoding beside the previous sweep's lidar work. The encodings are
`Pipeline.encode_camera`'s, one at a time on a thread of their own; `claim` gives the bundle's
(by stream, as futures) to `Pipeline.step`, which waits for the ones still running and encodes
any frame without one in line (the bundle matched an older frame, the rig changed).

Bounded: an encoding not yet started is cancelled when a newer frame of its stream arrives (the
newest is the one a current sweep takes; a worker falling behind must not be fed a backlog of
encodings nobody will claim), and at most `max_kept` finished or running ones are kept, the
oldest forgotten first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from calibration import Rig
from perception.closeable import Closeable
from perception.msgs.types import CameraFrame
from perception.pipeline import Pipeline
from perception.pipeline.pipeline import CameraEncoding

__all__ = ["CameraAhead"]


class CameraAhead(Closeable):
    """Encodes camera frames ahead of their sweeps (see the module docstring).

    Thread safety: `offer` (receive side) and `claim` (processing side) may run on two threads.
    """

    def __init__(self, pipeline: Pipeline, max_kept: int = 16) -> None:
        self.pipeline = pipeline
        self.max_kept = max_kept
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="camera-ahead")
        self._lock = threading.Lock()
        # By frame identity: the frame is held beside its encoding, so its id is not reused
        # while kept.
        self._kept: OrderedDict[int, tuple[CameraFrame, Future[CameraEncoding]]] = OrderedDict()
        self._newest: dict[str, Future[CameraEncoding]] = {}
        self._closed = False
        #: Encodings started ahead, and cancelled before they started (a newer frame came).
        self.offered = 0
        self.cancelled = 0

    def offer(self, frame: CameraFrame, rig: Rig | None) -> None:
        """Start encoding `frame` with `rig`'s camera (nothing when the rig has no camera for
        it)."""
        name = None if rig is None else self.pipeline.camera_name(frame, rig)
        if rig is None or name is None:
            return
        with self._lock:
            if self._closed:
                return
            stream = frame.header.stream
            older = self._newest.get(stream)
            if older is not None and older.cancel():
                self.cancelled += 1
            future = self._executor.submit(self.pipeline.encode_camera, frame, rig.cameras[name])
            self._newest[stream] = future
            self._kept[id(frame)] = (frame, future)
            self.offered += 1
            while len(self._kept) > self.max_kept:
                _, (_, dropped) = self._kept.popitem(last=False)
                dropped.cancel()

    def claim(self, cameras: Mapping[str, CameraFrame]) -> Mapping[str, Future[CameraEncoding]]:
        """The encodings of a bundle's camera frames (by stream) that were offered, by stream
        (taken: a frame is claimed once)."""
        out: dict[str, Future[CameraEncoding]] = {}
        with self._lock:
            for stream, frame in cameras.items():
                kept = self._kept.pop(id(frame), None)
                if kept is not None:
                    out[stream] = future = kept[1]
                    # Claimed: a newer frame of its stream must no longer cancel it.
                    if self._newest.get(frame.header.stream) is future:
                        del self._newest[frame.header.stream]
        return out

    def close(self) -> None:
        """Cancel what has not started, wait for what has, end the thread."""
        with self._lock:
            self._closed = True
            self._kept.clear()
            self._newest.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)
