"""Multi-object tracking after fusion: EKF tracks (CTRV for vehicles, constant velocity for the
rest) in the world frame, each mixed with a stationary model (an IMM, `modes`), Hungarian
association on gated, class-aware negative log-likelihood costs, M-of-N confirmation and
coasting. `Tracker.update` once per sweep; see
perception.config.TrackingConfig.
"""

from perception.pipeline.tracking.association import assign
from perception.pipeline.tracking.tracker import UNKNOWN_LABEL, Tracker

__all__ = ["UNKNOWN_LABEL", "Tracker", "assign"]
