"""Which failures retry, how long to wait, and when a request is given up.

A failed or empty generation is never a turn: after the last attempt the caller
gets `RequestFailed` with the last reason and ends the conversation `failed`.
A 429 is not a failure but a pacing signal: it is retried, without counting
toward `max_attempts`, until `rate_limit_budget_s` has passed since the
request's first 429 (see `Endpoint._attempts`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    # A reply the caller rejected (an echo, an unparseable answer) is asked again at once, each
    # time this much hotter (up to the cap): at the same temperature a small model tends to give
    # the same short reply again, and a rejected reply is no sign of an overloaded server.
    reask_temperature_step: float = 0.2
    reask_temperature_max: float = 1.2
    # How long one request keeps trying through 429s, from its first: a provider that refuses for
    # rate is saying "later", so only a refusal that outlasts this (tens of minutes) fails it.
    rate_limit_budget_s: float = 1800.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Full-jitter exponential backoff; a server's Retry-After is a floor, not a suggestion."""
        # the exponent is capped: a request riding out 429s for half an hour counts many attempts
        cap = min(self.max_delay_s, self.base_delay_s * self.multiplier ** min(attempt - 1, 60))
        backoff = rng.uniform(0, cap)
        if retry_after is not None:
            return retry_after + rng.uniform(0, min(1.0, self.base_delay_s))
        return backoff
