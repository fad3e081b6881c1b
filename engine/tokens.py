"""Cheap token estimates for admission control.

Exact counts need the provider's tokenizer; the limiter only needs an estimate
that the response's `usage` then corrects (see `RateLimiter.settle`). The sim
server counts with the same rule, so limits there are exact.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PER_MESSAGE_OVERHEAD = 4
PER_REQUEST_OVERHEAD = 3


def approx_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def prompt_tokens(messages: Sequence[dict[str, Any]] | None = None, prompt: str | None = None) -> int:
    if messages is not None:
        return PER_REQUEST_OVERHEAD + sum(
            PER_MESSAGE_OVERHEAD + approx_tokens(str(m.get("content") or "")) for m in messages)
    return approx_tokens(prompt or "") + 1
