"""Which failures retry, how long to wait, and when a request is given up.

A failed or empty generation is never a turn: after the last attempt the caller
gets `RequestFailed` with the last reason and ends the conversation `failed`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


class BackendError(Exception):
    """A request that did not produce a usable completion."""

    retryable = True

    def __init__(self, reason: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


class RateLimited(BackendError):
    """HTTP 429: the endpoint (not just this request) must pause for `retry_after`."""


class TransientError(BackendError):
    """5xx, timeouts, resets, truncated or malformed bodies: worth another attempt."""


class InvalidReply(BackendError):
    """A 200 whose content cannot be a turn (empty, echo of the prompt, ...)."""


class FatalBackendError(BackendError):
    """4xx other than 408/409/429: retrying the same request cannot help."""

    retryable = False


class RequestFailed(Exception):
    def __init__(self, reason: str, attempts: int):
        super().__init__(f"{reason} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.reason = reason
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Full-jitter exponential backoff; a server's Retry-After is a floor, not a suggestion."""
        cap = min(self.max_delay_s, self.base_delay_s * self.multiplier ** (attempt - 1))
        backoff = rng.uniform(0, cap)
        if retry_after is not None:
            return retry_after + rng.uniform(0, min(1.0, self.base_delay_s))
        return backoff
