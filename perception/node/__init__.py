"""The node: the live process (threads and sockets) around the pipeline."""

from perception.node.node import Node, NodeCounters

__all__ = ["Node", "NodeCounters"]
