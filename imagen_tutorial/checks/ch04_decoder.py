"""Checks for chapter 04 (the autoregressive decoder)."""

__all__: list[str] = []
