"""Streaming: the in-process fan-out of committed events and the watch loop built on it."""
