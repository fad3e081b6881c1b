"""One backend behind its limiter, retry policy and optional cache.

Both conversation turns (scheduler) and single requests (refinement,
evaluation) go through `Endpoint.complete`, so every stage shares one
mechanism for limits, retries and empty-reply handling.
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from culturepark.engine.backends.base import Backend, Completion, Request
from culturepark.engine.backends.cached import ResponseCache
from culturepark.engine.errors import (
    AccountError,
    BackendError,
    InvalidReply,
    RateLimited,
    RequestFailed,
    TierUnavailable,
)
from culturepark.engine.limiter import RateLimiter
from culturepark.engine.prompt_cache import CacheKeyShards
from culturepark.engine.retry import RetryPolicy

Validator = Callable[[str], "str | None"]
T = TypeVar("T")


@dataclass(slots=True)
class EndpointStats:
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    retries: int = 0
    cache_hits: int = 0
    tier_unavailable: int = 0  # flex refusals for lack of capacity
    tier_fallbacks: int = 0  # requests then sent at the standard tier
    errors: Counter = field(default_factory=Counter)


def default_validate(completion: Completion) -> str | None:
    if not completion.text.strip():
        return "empty_reply_length" if completion.finish_reason == "length" else "empty_reply"
    return None


class Endpoint:
    def __init__(self, backend: Backend, limiter: RateLimiter | None = None,
                 retry: RetryPolicy | None = None, cache: ResponseCache | None = None,
                 rng: random.Random | None = None, tier_fallback_after: int | None = None,
                 cache_keys: CacheKeyShards | None = None) -> None:
        self.backend = backend
        self.cache_keys = cache_keys  # shards each conversation's prompt_cache_key (None: keys as given)
        # A flex request refused this many times for lack of capacity goes out at the standard
        # tier (and is priced so); None: it keeps waiting for flex until its attempts run out.
        self.tier_fallback_after = tier_fallback_after
        self.limiter = limiter or RateLimiter()
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self.stats = EndpointStats()
        self._rng = rng or random.Random(0)

    async def complete(self, request: Request, validate: Validator | None = None,
                       request_hash: str | None = None,
                       on_text: Callable[[str], None] | None = None) -> Completion:
        """Return a usable completion, or raise `RequestFailed` after the last attempt
        (`AccountError` at once: no other request to this provider can succeed either).

        `on_text` (for a person watching): where the backend streams, it gets the text so far
        as it arrives; each retry starts again from the beginning. Limits and retries are the same.
        """
        stream = getattr(self.backend, "stream", None) if on_text is not None else None
        if self.cache is not None:
            hit = self.cache.get(request_hash or request.key(self.backend.model))
            if hit is not None and not self._invalid(hit, validate):
                self.stats.cache_hits += 1
                return hit
        reason = "no_attempt"
        estimate = request.estimated_prompt_tokens() + request.max_tokens
        unavailable = 0
        asked_at = request.temperature
        for attempt in range(1, self.retry.max_attempts + 1):
            grant = await self.limiter.acquire(estimate)
            self.stats.requests += 1
            retry_after: float | None = None
            try:
                if stream is not None:
                    completion = await stream(request, on_text)
                else:
                    completion = await self.backend.complete(request)
            except BackendError as exc:
                reason, retry_after = exc.reason, self._failed_attempt(exc, attempt)
                if isinstance(exc, TierUnavailable):
                    unavailable += 1
                    request = self._maybe_fall_back(request, unavailable)
            else:
                usage = completion.usage
                self.limiter.settle(grant, usage.prompt_tokens if completion.usage_reported else None,
                                    usage.completion_tokens, request.max_tokens)
                if completion.rate is not None:
                    self.limiter.observe_headers(completion.rate.remaining_requests,
                                                 completion.rate.remaining_tokens)
                invalid = self._invalid(completion, validate)
                if invalid is None:
                    self.stats.ok += 1
                    completion.attempts = attempt
                    if request.temperature != asked_at:
                        completion.temperature = request.temperature
                    return completion
                reason = invalid
                self.stats.errors[reason] += 1
                if attempt < self.retry.max_attempts:
                    self.stats.retries += 1
                    request = self._hotter(request)
                continue
            if attempt < self.retry.max_attempts:
                self.stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, self._rng, retry_after))
        raise RequestFailed(reason, self.retry.max_attempts)

    def _hotter(self, request: Request) -> Request:
        step, cap = self.retry.reask_temperature_step, self.retry.reask_temperature_max
        if step <= 0 or request.temperature >= cap:
            return request
        return dataclasses.replace(request, temperature=round(min(cap, request.temperature + step), 6))

    def _maybe_fall_back(self, request: Request, unavailable: int) -> Request:
        self.stats.tier_unavailable += 1
        if (self.tier_fallback_after is None or unavailable < self.tier_fallback_after
                or request.service_tier == "standard"):
            return request
        self.stats.tier_fallbacks += 1
        return dataclasses.replace(request, service_tier="standard")

    def _failed_attempt(self, exc: BackendError, attempt: int) -> float | None:
        """Count a failed attempt; a 429 pauses the whole endpoint. Returns the server's wait, if
        any; raises when another attempt cannot help (`AccountError` as is, else `RequestFailed`)."""
        self.stats.errors[exc.reason.split(":")[0]] += 1
        retry_after = exc.retry_after
        if isinstance(exc, RateLimited):
            self.stats.rate_limited += 1
            retry_after = retry_after if retry_after is not None else self.retry.delay(attempt, self._rng)
            self.limiter.pause(retry_after)
        if isinstance(exc, AccountError):
            raise exc
        if not exc.retryable:
            raise RequestFailed(exc.reason, attempt) from exc
        return retry_after

    async def call(self, send: Callable[[], Awaitable[T]], tokens: int) -> T:
        """Any other request to this provider (a batch of embeddings): the same limiter, retries
        and failure kinds as `complete`. `send` makes one attempt and raises `BackendError`s."""
        reason = "no_attempt"
        for attempt in range(1, self.retry.max_attempts + 1):
            grant = await self.limiter.acquire(tokens)
            self.stats.requests += 1
            try:
                result = await send()
            except BackendError as exc:
                reason, retry_after = exc.reason, self._failed_attempt(exc, attempt)
            else:
                self.limiter.settle(grant, None, None, 0)
                self.stats.ok += 1
                return result
            if attempt < self.retry.max_attempts:
                self.stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, self._rng, retry_after))
        raise RequestFailed(reason, self.retry.max_attempts)

    @staticmethod
    def _invalid(completion: Completion, validate: Validator | None) -> str | None:
        reason = default_validate(completion)
        if reason is None and validate is not None:
            reason = validate(completion.text)
        return reason

    async def aclose(self) -> None:
        await self.backend.aclose()


__all__ = ["Endpoint", "EndpointStats", "InvalidReply", "RequestFailed"]
