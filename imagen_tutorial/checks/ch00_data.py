"""Checks for chapter 00 (setup and data)."""

__all__: list[str] = []
