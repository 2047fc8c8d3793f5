"""Training of the project's own models (needs torch; not used at run time)."""

__all__: list[str] = []
