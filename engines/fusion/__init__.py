"""Fusion engine: the frustum fusion graph, its config and runner."""
