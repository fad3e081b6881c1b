"""Errors the CLI turns into one clear line and exit code 2 (bad input, nothing written)."""


class InputError(ValueError):
    pass
