"""One module per CLI stage: each `register`s its subcommand(s) next to the code that runs them.

The argument types below refuse impossible numbers while parsing (one line, exit 2), so no
stage ever starts with `--limit -5` or `--seeds 0`.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(kind: type, low: float, strict: bool) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value: int | float = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '≥'} {low:g} (got {text})")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, 0, strict=True)
count = _number(int, 0, strict=False)  # 0 or more
positive_float = _number(float, 0.0, strict=True)
non_negative_float = _number(float, 0.0, strict=False)
