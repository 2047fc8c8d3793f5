"""Lidar encoder: the BEV obstacle grid graph, its config and runner."""
