"""The `perception` subcommands, one module each (or one per group: calib, engines, models).

Each module is imported only when its command runs (app.cli dispatches by name), so a command
pays only for its own imports: `perception echo` starts without loading the pipeline.
"""
