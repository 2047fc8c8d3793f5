"""Time synchronisation: the bundler and its policies (collector, ApproximateTime), sensor
clocks and ego poses."""

from perception.sync.approximate_time import ApproximateTimeAdapter, ApproximateTimePolicy
from perception.sync.bundler import AddResult, Bundler, SyncStats
from perception.sync.collector import CollectorPolicy
from perception.sync.policy import Filed, Filing, MatchedSet, SyncPolicy

__all__ = [
    "AddResult",
    "ApproximateTimeAdapter",
    "ApproximateTimePolicy",
    "Bundler",
    "CollectorPolicy",
    "Filed",
    "Filing",
    "MatchedSet",
    "SyncPolicy",
    "SyncStats",
]
