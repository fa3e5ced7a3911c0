"""Digest worker."""
