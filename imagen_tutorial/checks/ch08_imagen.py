"""Checks for chapter 08 (from here to Imagen)."""

__all__: list[str] = []
