"""Fixtures for a real server (being written)."""
