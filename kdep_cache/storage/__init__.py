"""Bytes on disk: atomic files, locks, content digests (torch-free)."""
