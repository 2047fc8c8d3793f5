"""The perception node: messages, wire format, transport, sync, pipeline, CLI."""
