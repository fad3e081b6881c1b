"""RPM + TPM limiter: two token buckets, FIFO waiters, one timer.

Why not a semaphore or a polling loop: at thousands of waiters, a loop in which
every waiter sleeps and re-checks costs milliseconds of CPU per request. Here
waiters queue in a deque; a single `call_at` timer fires when the head can be
granted, grants as many as fit, and re-arms for the next head.

Burst capacity is `rate * burst_s` (default 0.5 s): providers state limits per
minute but enforce them over short windows, so starting with a minute of credit
only buys a wave of 429s (see shared/notes/rate-limits.md). A request larger than
the capacity is admitted once the bucket is full and drives it negative (debt),
so the long-run rate stays exact.

Settling follows the provider: `admission` charges prompt + max_tokens and gives
nothing back (OpenAI); `usage` charges prompt + completion actually used.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

SettleMode = Literal["admission", "usage"]


@dataclass(slots=True)
class _Bucket:
    rate: float  # units per second
    capacity: float
    level: float

    def deficit(self, need: float) -> float:
        """Seconds until `need` (capped at capacity) is available."""
        want = min(need, self.capacity)
        if self.level >= want:
            return 0.0
        return (want - self.level) / self.rate


@dataclass(slots=True)
class _Waiter:
    tokens: int
    future: asyncio.Future[None]


@dataclass(slots=True)
class Grant:
    """What was reserved for one request; settled once the response (or its absence) is known."""

    tokens: int
    settled: bool = False


@dataclass(slots=True)
class LimiterStats:
    granted: int = 0
    waited: int = 0
    pauses: int = 0
    header_corrections: int = 0


@dataclass
class RateLimiter:
    rpm: float | None = None
    tpm: float | None = None
    burst_s: float = 0.5
    settle_mode: SettleMode = "admission"
    stats: LimiterStats = field(default_factory=LimiterStats)

    def __post_init__(self) -> None:
        if self.burst_s <= 0:
            raise ValueError("burst_s must be > 0")
        self._requests = self._make_bucket(self.rpm)
        self._tokens = self._make_bucket(self.tpm)
        self._waiters: deque[_Waiter] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._paused_until = 0.0
        self._last: float | None = None
        self.unlimited = self._requests is None and self._tokens is None
        # limits stated by the scenario or a flag always win; the others may be learned from the provider
        self._stated = (self.rpm is not None, self.tpm is not None)
        self.learned: dict[str, float] = {}  # "rpm"/"tpm" → per minute, as the provider's headers said

    def _make_bucket(self, per_minute: float | None) -> _Bucket | None:
        if per_minute is None:
            return None
        if per_minute <= 0:
            raise ValueError("rate limits must be > 0")
        rate = per_minute / 60.0
        capacity = max(1.0, rate * self.burst_s)
        # Start with one burst's worth, not a minute's: a full minute is what causes 429 waves.
        return _Bucket(rate=rate, capacity=capacity, level=capacity)

    # -- time ---------------------------------------------------------------
    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
            return
        dt = now - self._last
        if dt <= 0:
            return
        self._last = now
        for b in (self._requests, self._tokens):
            if b is not None:
                b.level = min(b.capacity, b.level + b.rate * dt)

    def _wait_s(self, tokens: int, now: float) -> float:
        wait = max(0.0, self._paused_until - now)
        if self._requests is not None:
            wait = max(wait, self._requests.deficit(1))
        if self._tokens is not None:
            wait = max(wait, self._tokens.deficit(tokens))
        return wait

    def _take(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.level -= 1
        if self._tokens is not None:
            self._tokens.level -= tokens
        self.stats.granted += 1

    # -- public API ---------------------------------------------------------
    async def acquire(self, tokens: int) -> Grant:
        """Wait (FIFO) until one request of `tokens` estimated tokens fits both budgets."""
        if self.unlimited:
            self.stats.granted += 1
            return Grant(tokens)
        now = self._now()
        self._refill(now)
        if not self._waiters and self._wait_s(tokens, now) <= 0:
            self._take(tokens)
            return Grant(tokens)
        fut = asyncio.get_running_loop().create_future()
        waiter = _Waiter(tokens, fut)
        self._waiters.append(waiter)
        self.stats.waited += 1
        if len(self._waiters) == 1:
            self._arm(now)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._give_back(tokens)  # granted and cancelled in the same tick
            else:
                was_head = bool(self._waiters) and self._waiters[0] is waiter
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if was_head:
                    self._arm(self._now())
            raise
        return Grant(tokens)

    def settle(self, grant: Grant, prompt_tokens: int | None, completion_tokens: int | None,
               max_tokens: int) -> None:
        """Correct the reservation with what the provider will actually count."""
        if grant.settled or self._tokens is None:
            grant.settled = True
            return
        grant.settled = True
        if prompt_tokens is None:
            return  # no usage reported: keep the estimate
        if self.settle_mode == "admission":
            charged = prompt_tokens + max_tokens
        else:
            charged = prompt_tokens + (completion_tokens or 0)
        delta = charged - grant.tokens
        if delta == 0:
            return
        self._refill(self._now())
        self._tokens.level = min(self._tokens.capacity, self._tokens.level - delta)
        if delta < 0 and self._waiters:
            self._arm(self._now())

    def set_rates(self, rpm: float | None, tpm: float | None) -> None:
        """Change the budget while running (a distributed worker's share is rebalanced).

        Levels keep their credit, capped at the new capacity; waiters are re-timed at once.
        A limit can change but not appear or disappear (that would change what is counted).
        """
        if (rpm is None) == self._stated[0] or (tpm is None) == self._stated[1]:
            raise ValueError("set_rates can change limits, not add or remove them")
        for bucket, per_minute in ((self._requests, rpm), (self._tokens, tpm)):
            if bucket is None or per_minute is None:
                continue
            if per_minute <= 0:
                raise ValueError("rate limits must be > 0")
            bucket.rate = per_minute / 60.0
            bucket.capacity = max(1.0, bucket.rate * self.burst_s)
            bucket.level = min(bucket.level, bucket.capacity)
        self.rpm, self.tpm = rpm, tpm
        if self._waiters:
            now = self._now()
            self._refill(now)
            self._arm(now)

    def learn(self, limit_requests: float | None, limit_tokens: float | None) -> bool:
        """Size the limits nobody stated from what the provider says they are (per minute), and
        follow them when they change; a stated limit is never touched. True when anything changed.

        A new bucket starts with one burst of credit, like a stated one; a changed one keeps its
        credit, capped at the new capacity. Waiters are re-timed at once."""
        changed = False
        for i, (name, limit) in enumerate((("rpm", limit_requests), ("tpm", limit_tokens))):
            if self._stated[i] or limit is None or limit <= 0 or self.learned.get(name) == limit:
                continue
            bucket = self._requests if i == 0 else self._tokens
            if bucket is None:
                bucket = self._make_bucket(limit)
                if i == 0:
                    self._requests = bucket
                else:
                    self._tokens = bucket
            else:
                bucket.rate = limit / 60.0
                bucket.capacity = max(1.0, bucket.rate * self.burst_s)
                bucket.level = min(bucket.level, bucket.capacity)
            self.learned[name] = limit
            changed = True
        if changed:
            self.unlimited = False
            if self._waiters:
                now = self._now()
                self._refill(now)
                self._arm(now)
        return changed

    def observe_headers(self, remaining_requests: float | None, remaining_tokens: float | None) -> None:
        """Lower local credit to what the provider says is left; never raise it (conservative)."""
        corrected = False
        for bucket, remaining in ((self._requests, remaining_requests), (self._tokens, remaining_tokens)):
            if bucket is not None and remaining is not None and remaining < bucket.level:
                bucket.level = remaining
                corrected = True
        if corrected:
            self.stats.header_corrections += 1

    def pause(self, seconds: float) -> None:
        """Stop all grants on this endpoint for `seconds` (a 429's Retry-After applies to everyone)."""
        if seconds <= 0:
            return
        now = self._now()
        until = now + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.stats.pauses += 1
            if self.unlimited:
                # An unlimited endpoint still has to honour Retry-After: route through the queue.
                self.unlimited = False
            if self._waiters:
                self._arm(now)

    @property
    def paused_until(self) -> float:
        return self._paused_until

    @property
    def queue_length(self) -> int:
        return len(self._waiters)

    # -- waking -------------------------------------------------------------
    def _give_back(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.level = min(self._requests.capacity, self._requests.level + 1)
        if self._tokens is not None:
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + tokens)

    def _arm(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters and self._waiters[0].future.done():
            self._waiters.popleft()  # cancelled waiters
        if not self._waiters:
            return
        loop = asyncio.get_running_loop()
        wait = self._wait_s(self._waiters[0].tokens, now)
        self._timer = loop.call_at(now + wait, self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = self._now()
        self._refill(now)
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                self._waiters.popleft()
                continue
            if self._wait_s(head.tokens, now) > 0:
                break
            self._waiters.popleft()
            self._take(head.tokens)
            head.future.set_result(None)
        if self._waiters:
            self._arm(now)
        if self._requests is None and self._tokens is None and self._paused_until <= now:
            self.unlimited = True


@dataclass
class WindowCounter:
    """Events over the last `window_s` seconds, for limits that refuse (or go elsewhere) rather than
    wait — a study's sign-ups, a prompt-cache key's requests; `RateLimiter` makes requests wait."""

    limit: float
    window_s: float = 60.0
    times: deque[float] = field(default_factory=deque)

    def count(self, now: float) -> int:
        while self.times and self.times[0] <= now - self.window_s:
            self.times.popleft()
        return len(self.times)

    def add(self, now: float) -> None:
        self.times.append(now)

    def admit(self, now: float) -> bool:
        """Count the event if it is within the limit; False (and not counted) if not."""
        if self.count(now) >= self.limit:
            return False
        self.add(now)
        return True


@dataclass
class AdaptiveCeiling:
    """How many requests to one (provider, model) may be in flight, learned under load: AIMD.

    Where no limit is stated and none is sent in headers, only 429s say where the limit is. A
    burst of 429s lowers the ceiling once (`backoff`, multiplicative): the 429s of requests that
    were sent before that decrease are the same burst and lower nothing more, as TCP reduces once
    per window. A run of successes as long as the ceiling (about one round trip) raises it by
    one (additive), up to `maximum` (the run's `concurrency`). The endpoint holds a slot around
    each attempt, its token-bucket grant included, so the ceiling composes with the buckets:
    whichever is tighter paces. A 429's Retry-After is honoured by `RateLimiter.pause`; the
    ceiling decides how many go once it is over.
    """

    maximum: int
    minimum: int = 1
    backoff: float = 0.5
    limit: float = 0.0  # 0: start at `maximum`
    in_flight: int = 0
    epoch: int = 0  # decreases so far: a 429 from an earlier epoch belongs to a burst already counted
    decreases: int = 0
    lowest: float = 0.0
    _run: int = 0
    _waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.maximum < 1 or not 1 <= self.minimum <= self.maximum or not 0 < self.backoff < 1:
            raise ValueError("need 1 <= minimum <= maximum and 0 < backoff < 1")
        self.limit = float(self.maximum) if self.limit <= 0 else min(float(self.maximum), self.limit)
        self.lowest = self.limit

    @property
    def slots(self) -> int:
        return max(self.minimum, int(self.limit))

    async def acquire(self) -> int:
        """Wait (FIFO) for a slot; returns the epoch the request is sent in (for `rate_limited`)."""
        if self.in_flight < self.slots and not self._waiters:
            self.in_flight += 1
            return self.epoch
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled in the same tick
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def succeeded(self) -> None:
        """One answer: after as many in a row as the ceiling, one more slot."""
        self._run += 1
        if self._run >= self.slots and self.limit < self.maximum:
            self._run = 0
            self.limit = min(float(self.maximum), self.limit + 1.0)
            self._wake()

    def rate_limited(self, epoch: int) -> bool:
        """A 429 for a request sent in `epoch`: the first of a burst lowers the ceiling (True)."""
        if epoch != self.epoch:
            return False
        self.epoch += 1
        self.decreases += 1
        self._run = 0
        self.limit = max(float(self.minimum), self.limit * self.backoff)
        self.lowest = min(self.lowest, self.limit)
        return True

    def step_aside(self) -> None:
        """The provider told its limits (headers): the token buckets pace from now on, so the
        ceiling goes back to `maximum`, and 429s of requests sent before (the first unpaced wave)
        lower nothing."""
        self.epoch += 1
        self._run = 0
        self.limit = float(self.maximum)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.slots:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def describe(self) -> dict[str, float]:
        return {"maximum": self.maximum, "final": round(self.limit, 2), "lowest": round(self.lowest, 2),
                "decreases": self.decreases}
