"""The application: the `perception` command and the latency bench. The only package that
ties calibration, engines, perception and replay together."""
