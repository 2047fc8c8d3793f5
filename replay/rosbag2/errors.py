"""Errors of the ROS 2 bag import and export."""

from __future__ import annotations

from replay.errors import ReplayError

__all__ = ["Rosbag2Error"]


class Rosbag2Error(ReplayError):
    """A ROS 2 bag or a `--topics` file cannot be read or converted, or a bag cannot be
    written. The message is one line naming the path (and the topic, where one is at fault)
    and what is wrong."""
