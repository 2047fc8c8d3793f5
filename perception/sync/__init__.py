"""Time synchronisation: the bundler and its policies (collector, ApproximateTime), sensor
clocks and ego poses."""

from perception.sync.policies import (
    ApproximateTimePolicy,
    ApproximateTimeSync,
    CollectorSync,
    NearestSync,
    SyncStats,
)

__all__ = [
    "ApproximateTimePolicy",
    "ApproximateTimeSync",
    "CollectorSync",
    "NearestSync",
    "SyncStats",
]
