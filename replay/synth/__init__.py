"""The synthetic world (drives with ground truth) and `perception demo`."""
