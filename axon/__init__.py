"""Axon: the homeserver's process entry points (embedded and per-service)."""
__version__ = "0.1.0"
