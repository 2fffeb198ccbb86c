"""Checks for chapter 02 (feed-forward and blocks)."""

__all__: list[str] = []
