"""Recorded drives: dataset sources, offline runs."""
