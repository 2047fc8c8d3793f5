"""Training loops of the project's own models (need torch; not used at run time)."""
