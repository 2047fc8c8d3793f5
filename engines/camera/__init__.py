"""Camera encoder: 2D detectors, their labels, batching over cameras, the synthetic detector's
graph."""
