"""Checks for chapter 03 (the encoder)."""

__all__: list[str] = []
