"""Training loops of the project's own models (need torch; not used at run time), and their
training data: one sample type (`samples`) from synthetic drives, recorded drives and KITTI
object folders behind one interface (`sources`, numpy only)."""
