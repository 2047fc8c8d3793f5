"""Model engines: backends and the camera encoder."""
