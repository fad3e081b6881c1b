"""Errors a user fixes by changing input (exit code 2, one clear line, nothing written)."""


class InputError(ValueError):
    pass
