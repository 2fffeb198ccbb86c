"""Checks for chapter 05 (the training loop)."""

__all__: list[str] = []
