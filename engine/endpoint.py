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
from typing import TypeVar, cast

from culturepark.engine.backends.base import Backend, Completion, RateHeaders, Request, Streams
from culturepark.engine.backends.cached import ResponseCache
from culturepark.engine.errors import (
    AccountError,
    BackendError,
    InvalidReply,
    RateLimited,
    RequestFailed,
    TierUnavailable,
)
from culturepark.engine.limiter import AdaptiveCeiling, Grant, RateLimiter
from culturepark.engine.prompt_cache import CacheKeyShards
from culturepark.engine.records import Usage
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
    rejected_replies: int = 0  # answered (and billed) but rejected by validation, then re-asked
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Ask:
    """One `complete` call's request as its attempts change it (hotter re-asks, a tier fallback)."""

    request: Request
    unavailable: int = 0  # flex refusals for lack of capacity so far
    rejected: Usage | None = None  # summed usage of the replies rejected so far (each one was billed)


def default_validate(completion: Completion) -> str | None:
    if not completion.text.strip():
        return "empty_reply_length" if completion.finish_reason == "length" else "empty_reply"
    return None


class Endpoint:
    def __init__(self, backend: Backend, limiter: RateLimiter | None = None,
                 retry: RetryPolicy | None = None, cache: ResponseCache | None = None,
                 rng: random.Random | None = None, tier_fallback_after: int | None = None,
                 cache_keys: CacheKeyShards | None = None, say: Callable[[str], None] | None = None,
                 ceiling: AdaptiveCeiling | None = None) -> None:
        self.backend = backend
        # requests in flight, learned from 429s (None: only the scheduler's concurrency bounds them);
        # endpoints to the same provider and model share one
        self.ceiling = ceiling
        self.say = say  # told once what limits were learned from the provider's headers
        self.cache_keys = cache_keys  # shards each conversation's prompt_cache_key (None: keys as given)
        # A flex request refused this many times for lack of capacity goes out at the standard
        # tier (and is priced so); None: it keeps waiting for flex until its attempts run out.
        self.tier_fallback_after = tier_fallback_after
        self.limiter = limiter or RateLimiter()
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self.stats = EndpointStats()
        self._rng = rng or random.Random(0)
        self._told = False

    async def complete(self, request: Request, validate: Validator | None = None,
                       request_hash: str | None = None,
                       on_text: Callable[[str], None] | None = None) -> Completion:
        """Return a usable completion, or raise `RequestFailed` after the last attempt
        (`AccountError` at once: no other request to this provider can succeed either).

        `on_text` (for a person watching): where the backend streams, it gets the text so far
        as it arrives; each retry starts again from the beginning. Limits and retries are the same.
        """
        streams = on_text is not None and self.backend.can_stream
        if self.cache is not None:
            hit = self.cache.get(request_hash or request.key(self.backend.model))
            if hit is not None and not self._invalid(hit, validate):
                self.stats.cache_hits += 1
                return hit
        ask = _Ask(request)

        def send() -> Awaitable[Completion]:
            if streams:
                assert on_text is not None
                return cast(Streams, self.backend).stream(ask.request, on_text)
            return self.backend.complete(ask.request)

        def settle(grant: Grant, completion: Completion) -> None:
            usage = completion.usage
            self.limiter.settle(grant, usage.prompt_tokens if completion.usage_reported else None,
                                usage.completion_tokens, ask.request.max_tokens)
            if completion.rate is not None:
                self._read_limits(completion.rate)

        def rejected(completion: Completion) -> str | None:
            reason = self._invalid(completion, validate)
            if reason is not None:
                ask.request = self._hotter(ask.request)
                if not completion.cached:
                    ask.rejected = completion.usage if ask.rejected is None else ask.rejected.plus(completion.usage)
                    self.stats.rejected_replies += 1
            return reason

        def refused(exc: BackendError) -> None:
            if isinstance(exc, TierUnavailable):
                ask.unavailable += 1
                ask.request = self._maybe_fall_back(ask.request, ask.unavailable)

        estimate = request.estimated_prompt_tokens() + request.max_tokens
        try:
            completion, attempts = await self._attempts(estimate, send, settle, rejected, refused)
        except RequestFailed as exc:
            exc.rejected = ask.rejected
            raise
        completion.attempts = attempts
        completion.rejected = ask.rejected
        if ask.request.temperature != request.temperature:
            completion.temperature = ask.request.temperature
        return completion

    async def call(self, send: Callable[[], Awaitable[T]], tokens: int) -> T:
        """Any other request to this provider (a batch of embeddings): the same limiter, retries
        and failure kinds as `complete`. `send` makes one attempt and raises `BackendError`s."""

        def settle(grant: Grant, _: T) -> None:
            self.limiter.settle(grant, None, None, 0)

        result, _ = await self._attempts(tokens, send, settle)
        return result

    async def _attempts(self, tokens: int, send: Callable[[], Awaitable[T]], settle: Callable[[Grant, T], None],
                        rejected: Callable[[T], str | None] | None = None,
                        refused: Callable[[BackendError], None] | None = None) -> tuple[T, int]:
        """The one retry loop: each attempt waits for a slot under the ceiling (if any) and the
        limiter's grant, then `send` makes it and `settle` gives the grant its answer's usage.

        A failure (`BackendError`) waits its backoff; a result `rejected` names a reason for is
        asked again at once (a rejected reply is no sign of an overloaded server). Both count
        toward `max_attempts`. A 429 does not: it is a pacing signal, so the request pauses the
        endpoint and tries again for as long as `rate_limit_budget_s` (counted from its first
        429) allows; only that budget, an `AccountError` or a cancellation (a stop) ends it.
        Returns the accepted result and the attempts it took, or raises `RequestFailed`.

        Written flat on purpose (no coroutine per attempt or per send): every await of a request
        in flight resumes through each coroutine between the scheduler and the socket, and at
        thousands of requests a second those layers were a measurable part of the engine's CPU."""
        last, budget = self.retry.max_attempts, self.retry.rate_limit_budget_s
        ceiling = self.ceiling
        tries = failures = limited = 0
        refused_since: float | None = None
        while True:
            tries += 1
            try:
                epoch = await ceiling.acquire() if ceiling is not None else 0
                try:
                    grant = await self.limiter.acquire(tokens)
                    self.stats.requests += 1
                    result = await send()
                    settle(grant, result)
                except RateLimited:
                    if ceiling is not None:
                        ceiling.rate_limited(epoch)
                    raise
                finally:
                    if ceiling is not None:
                        ceiling.release()
                if ceiling is not None:
                    ceiling.succeeded()
            except BackendError as exc:
                reason = exc.reason
                self._count_failure(exc, tries)
                if refused is not None:
                    refused(exc)
                if isinstance(exc, RateLimited):
                    limited += 1
                    wait = self._pace(exc, limited)
                    now = asyncio.get_running_loop().time()
                    refused_since = now if refused_since is None else refused_since
                    if now + wait - refused_since > budget:
                        raise RequestFailed(reason, tries) from exc
                else:
                    failures += 1
                    if failures >= last:
                        raise RequestFailed(reason, tries) from exc
                    wait = self.retry.delay(failures, self._rng, exc.retry_after)
            else:
                verdict = rejected(result) if rejected is not None else None
                if verdict is None:
                    self.stats.ok += 1
                    return result, tries
                self.stats.errors[verdict] += 1
                failures += 1
                if failures >= last:
                    raise RequestFailed(verdict, tries)
                self.stats.retries += 1
                continue
            self.stats.retries += 1
            await asyncio.sleep(wait)

    def _read_limits(self, rate: RateHeaders) -> None:
        """The provider's headers size the limits nobody stated (and follow them as they change);
        what is left in its window lowers the local credit. The first limits learned are told once."""
        learned = self.limiter.learn(rate.limit_requests, rate.limit_tokens)
        if learned and self.ceiling is not None:
            self.ceiling.step_aside()  # the buckets know the limit now: no need to guess it from 429s
        if learned and not self._told:
            self._told = True
            if self.say is not None:
                limits = ", ".join(f"{v:,.0f} {'requests' if k == 'rpm' else 'tokens'}/min"
                                   for k, v in sorted(self.limiter.learned.items()))
                self.say(f"{self.backend.model}: limits from the provider's headers: {limits} "
                         "(limits.rpm/tpm in the scenario or --rpm/--tpm win over them)")
        self.limiter.observe_headers(rate.remaining_requests, rate.remaining_tokens)

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

    def _count_failure(self, exc: BackendError, tries: int) -> None:
        """Count a failed attempt; raise when another attempt cannot help (`AccountError` as is,
        else `RequestFailed`)."""
        self.stats.errors[exc.reason.split(":")[0]] += 1
        if isinstance(exc, AccountError):
            raise exc
        if not exc.retryable:
            raise RequestFailed(exc.reason, tries) from exc

    def _pace(self, exc: RateLimited, limited: int) -> float:
        """A 429 pauses the whole endpoint (the server's Retry-After, else a backoff that grows
        with this request's 429s); returns how long this request waits before its next try."""
        self.stats.rate_limited += 1
        pause = exc.retry_after if exc.retry_after is not None else self.retry.delay(limited, self._rng)
        self.limiter.pause(pause)
        wait: float = self.retry.delay(limited, self._rng, exc.retry_after)
        return wait

    @staticmethod
    def _invalid(completion: Completion, validate: Validator | None) -> str | None:
        reason = default_validate(completion)
        if reason is None and validate is not None:
            reason = validate(completion.text)
        return reason

    async def aclose(self) -> None:
        await self.backend.aclose()


__all__ = ["Endpoint", "EndpointStats", "InvalidReply", "RequestFailed"]
