"""Dataset formats: KITTI object folders and raw drives, reference boxes for evaluation."""
