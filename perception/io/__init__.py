"""Transport: ZeroMQ sockets for the node's inputs and outputs."""
