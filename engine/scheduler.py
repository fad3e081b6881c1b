"""Run many conversations as coroutines under one event loop.

A conversation asks its `TurnPolicy` who speaks next and with which request,
awaits its endpoint, appends the turn to the log, and repeats until the policy
says it is over. Concurrency is a fixed pool of worker coroutines pulling from
one lazy source (a generated plan, or specs streamed in by a Ray driver through a
`SpecFeed`), so memory follows the concurrency, not the run's size.

Determinism: a policy is a pure function of (conversation spec, turns so far),
so a resumed conversation continues exactly where its log stops (what it reads back from the
log is `engine.resume`'s; `Turn` and the resume names are importable from here too).
"""
from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.endpoint import Endpoint, Validator
from culturepark.engine.errors import AccountError, LogWriteError, RequestFailed
from culturepark.engine.log import RunLog
from culturepark.engine.pricing import Price
from culturepark.engine.records import EndRecord, Record, StopRecord, TurnRecord, Usage
from culturepark.engine.resume import EndedIds as EndedIds
from culturepark.engine.resume import ResumeState as ResumeState
from culturepark.engine.resume import pending_conversations, still_to_hold
from culturepark.engine.turns import Turn as Turn


@dataclass(slots=True)
class ConversationSpec:
    id: str
    seq: int
    meta: dict[str, Any]


@dataclass(slots=True)
class TurnRequest:
    speaker: str
    role: str  # which endpoint answers (e.g. "delegate", "main_contact")
    request: Request
    validate: Validator | None = None


class TurnPolicy(Protocol):
    def next_turn(self, conv: ConversationSpec, turns: Sequence[Turn]) -> TurnRequest | None:
        """The next turn to generate, or None when the conversation is over."""
        ...


@dataclass
class LatencySample:
    """Turn latencies for percentiles in bounded memory: every value up to `capacity`, then a
    uniform reservoir sample (Algorithm R, seeded): a 14M-turn run holds 1.6 MB, not 112 MB,
    and its percentiles are those of a 200k-value uniform sample."""

    capacity: int = 200_000
    values: array[float] = field(default_factory=lambda: array("d"))
    seen: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.capacity:
            self.values.append(value)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self.capacity:
                self.values[slot] = value

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[float]:
        return iter(self.values)


@dataclass
class RunStats:
    started: float = field(default_factory=time.monotonic)
    conversations_started: int = 0
    done: int = 0
    failed: int = 0
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # served from the provider's prompt cache
    cost_usd: float = 0.0  # everything billed, the rejected replies' part included
    cost_unknown_turns: int = 0
    rejected_cost_usd: float = 0.0  # replies billed but rejected by validation and re-asked
    failures: Counter[str] = field(default_factory=Counter)
    latencies_ms: LatencySample = field(default_factory=LatencySample)
    stop_reason: str | None = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


@dataclass(slots=True)
class SchedulerConfig:
    concurrency: int = 64
    budget_usd: float | None = None
    record_latencies: bool = True


class SpecFeed:
    """Conversation specs pushed in chunks by another process (the Ray driver) and read by the
    scheduler as an async iterable. The queue is short, so a producer that runs ahead waits in
    `put` (backpressure): a worker holds a few chunks, never its whole shard."""

    def __init__(self, depth: int = 4) -> None:
        self._queue: asyncio.Queue[list[ConversationSpec] | None] = asyncio.Queue(depth)

    async def put(self, chunk: list[ConversationSpec]) -> None:
        await self._queue.put(chunk)

    async def close(self) -> None:
        """No more specs: the scheduler ends once it has held the ones it has."""
        await self._queue.put(None)

    async def __aiter__(self) -> AsyncIterator[ConversationSpec]:
        while (chunk := await self._queue.get()) is not None:
            for spec in chunk:
                yield spec


class _Pending:
    """The one source the scheduler's worker coroutines share, filtered the same way either kind:
    a plain iterable (read without a lock; nothing awaits inside `next`) or an async one (read
    under a lock, since two coroutines may not step one async generator at once)."""

    def __init__(self, conversations: Iterable[ConversationSpec] | AsyncIterable[ConversationSpec],
                 resume: ResumeState | None, retry_failed: bool) -> None:
        self._sync: Iterator[ConversationSpec] | None = None
        self._async: AsyncIterator[ConversationSpec] | None = None
        if isinstance(conversations, AsyncIterable):
            self._async = (conv async for conv in conversations if still_to_hold(conv.id, resume, retry_failed))
        else:
            self._sync = pending_conversations(conversations, resume, retry_failed)
        self._lock = asyncio.Lock()

    async def next(self) -> ConversationSpec | None:
        if self._sync is not None:
            return next(self._sync, None)
        assert self._async is not None
        async with self._lock:
            return await anext(self._async, None)


def turn_cost(completion: Completion, price: Price | None) -> float | None:
    """What the provider bills for a completion: nothing when it was answered from an earlier run's
    log, unknown without a price, else its uncached, cached and output tokens at its tier's rates."""
    if completion.cached:
        return 0.0
    if price is None:
        return None
    cost: float | None = price.of(completion.usage, completion.tier or "standard").total
    return cost


def rejected_cost(completion: Completion, price: Price | None) -> float | None:
    """What the replies rejected before this completion cost (None: none, or no price): each was
    billed like a turn, at the tier that served the completion."""
    u = completion.rejected
    if u is None or price is None:
        return None
    cost: float | None = price.of(u, completion.tier or "standard").total
    return cost


def turn_record(conv: ConversationSpec, index: int, nxt: TurnRequest, completion: Completion,
                endpoint: Endpoint, request_hash: str, t: float) -> TurnRecord:
    """The log record of one generated turn (the scheduler's and the study server's).

    The text keeps the whole reply but not its surrounding whitespace; the cost is priced
    from the endpoint's backend (None when its price is unknown) at the rates of the tier that
    served it, with the provider's cached prompt tokens at the cached-input rate.
    """
    usage = completion.usage
    return TurnRecord(
        conversation_id=conv.id, seq=conv.seq, index=index, speaker=nxt.speaker, role=nxt.role,
        text=completion.text.strip(),
        usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens),
        cost_usd=turn_cost(completion, endpoint.backend.price),
        latency_ms=round(completion.latency_ms, 3), attempts=completion.attempts,
        request_hash=request_hash, finish_reason=completion.finish_reason, cached=completion.cached, t=t,
        tier=completion.tier, temperature=completion.temperature, rejected=completion.rejected,
        rejected_cost_usd=rejected_cost(completion, endpoint.backend.price), label_probs=completion.label_probs)


class Scheduler:
    def __init__(self, policy: TurnPolicy, endpoints: Mapping[str, Endpoint], log: RunLog,
                 config: SchedulerConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.endpoints = endpoints
        self.log = log
        self.config = config or SchedulerConfig()
        self.stats = RunStats()
        self._clock = clock
        self._stopping = False
        self._write_error: LogWriteError | None = None
        self._account_error: AccountError | None = None
        self._key_shards = list({id(e.cache_keys): e.cache_keys for e in endpoints.values()
                                 if e.cache_keys is not None}.values())

    def _spent(self, kept: Completion | None, cost: float | None, rejected: Usage | None,
               rejected_cost: float | None) -> None:
        """Count what a request billed: its kept reply (`kept`, priced `cost`; None for a request that
        failed) and the replies rejected on the way (`rejected`), which the provider billed too. The
        budget stops the run on their sum."""
        stats = self.stats
        if kept is not None:
            usage = kept.usage
            stats.prompt_tokens += usage.prompt_tokens
            stats.completion_tokens += usage.completion_tokens
            stats.cached_prompt_tokens += usage.cached_tokens
            if cost is None:
                stats.cost_unknown_turns += 1
            else:
                stats.cost_usd += cost
        if rejected is not None:
            if rejected_cost is None:
                stats.cost_unknown_turns += 1
            else:
                stats.rejected_cost_usd += rejected_cost
                stats.cost_usd += rejected_cost
        budget = self.config.budget_usd
        if budget is not None and stats.cost_usd >= budget:
            self.stop("budget_reached")

    def stop(self, reason: str) -> None:
        """Finish in-flight requests' bookkeeping and start nothing new; the run stays resumable."""
        if not self._stopping:
            self._stopping = True
            self.stats.stop_reason = reason

    async def run(self, conversations: Iterable[ConversationSpec] | AsyncIterable[ConversationSpec],
                  resume: ResumeState | None = None, retry_failed: bool = False) -> RunStats:
        pending = _Pending(conversations, resume, retry_failed)
        workers = [asyncio.create_task(self._worker(pending, resume))
                   for _ in range(max(1, self.config.concurrency))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
        if self._write_error is not None:
            raise self._write_error
        if self.stats.stop_reason and self.stats.stop_reason != "write_error":
            self._append(StopRecord(self.stats.stop_reason, self._clock()))
            if self._write_error is not None:
                raise self._write_error
        if self._account_error is not None:
            raise self._account_error  # after the stop record: the log says why, --resume continues
        return self.stats

    async def _worker(self, pending: _Pending, resume: ResumeState | None) -> None:
        while (conv := await pending.next()) is not None:
            if self._stopping:
                return
            prior = resume.turns.pop(conv.id, None) if resume else None
            await self._converse(conv, prior or [])

    def _append(self, record: Record) -> bool:
        try:
            self.log.append(record)
            return True
        except LogWriteError as exc:
            self._write_error = exc
            self.stop("write_error")
            return False

    async def _converse(self, conv: ConversationSpec, turns: list[Turn]) -> None:
        if not self._key_shards:
            return await self._turns(conv, turns)
        try:
            await self._turns(conv, turns)
        finally:
            for shards in self._key_shards:
                shards.release(conv.id)

    async def _turns(self, conv: ConversationSpec, turns: list[Turn]) -> None:
        stats = self.stats
        stats.conversations_started += 1
        while not self._stopping:
            nxt = self.policy.next_turn(conv, turns)
            if nxt is None:
                if self._append(EndRecord(conv.id, conv.seq, "done", meta=conv.meta, t=self._clock())):
                    stats.done += 1
                return
            endpoint = self.endpoints[nxt.role]
            request_hash = nxt.request.key(endpoint.backend.model)
            if endpoint.cache_keys is not None and nxt.request.cache_key:
                nxt.request.cache_key = endpoint.cache_keys.key(nxt.request.cache_key, conv.id)
            try:
                completion = await endpoint.complete(nxt.request, nxt.validate, request_hash)
            except AccountError as exc:  # no request can succeed: stop the run, fail nobody
                if self._account_error is None:
                    self._account_error = exc
                    self.stop(f"account_error:{exc.reason}")
                return
            except RequestFailed as exc:
                lost_cost = rejected_cost(Completion("", None, Usage(), rejected=exc.rejected),
                                          endpoint.backend.price)
                if self._append(EndRecord(conv.id, conv.seq, "failed", exc.reason, conv.meta, exc.attempts,
                                          self._clock(), exc.rejected, lost_cost,
                                          nxt.role if exc.rejected is not None else None)):
                    stats.failed += 1
                    stats.failures[exc.reason] += 1
                    self._spent(None, None, exc.rejected, lost_cost)
                return
            if self._stopping and stats.stop_reason == "write_error":
                return
            record = turn_record(conv, len(turns), nxt, completion, endpoint, request_hash, self._clock())
            if not self._append(record):
                return
            turns.append(Turn(record.index, nxt.speaker, nxt.role, record.text))
            stats.turns += 1
            if self.config.record_latencies and not completion.cached:
                stats.latencies_ms.add(completion.latency_ms)
            self._spent(completion, record.cost_usd, record.rejected, record.rejected_cost_usd)
