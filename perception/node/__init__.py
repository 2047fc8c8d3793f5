"""The node: the socket-free core (`NodeCore`) and the live process around it (`Node`)."""

from perception.node.core import CLOCK_MIN_SWEEPS, NodeCore, NodeCounters, ReadyBundle
from perception.node.node import Node

__all__ = ["CLOCK_MIN_SWEEPS", "Node", "NodeCore", "NodeCounters", "ReadyBundle"]
