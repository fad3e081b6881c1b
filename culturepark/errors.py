"""Errors the CLI turns into one clear line and exit code 2 (bad input, nothing written)."""
from culturepark.engine.errors import InputError

__all__ = ["InputError"]
