"""Requests sent through a provider's batch API, in rounds, with one ledger and one crash contract.

Why a backend: batch APIs bill half and answer within 24 h, which suits a run where time does
not matter; the scheduler, the endpoint (validation, retries), the log and `summary.json` stay
exactly as they are, and only how a request travels changes. Conversations await their turn
as usual; the requests that arrive together — a *round*: the next turn of every live
conversation — go into one batch (split by the provider's request and size limits), which is
submitted, polled and read back; each waiting request then gets its own line's answer.
A line that failed or expired raises `TransientError`, so the endpoint's retry puts that request
into a later round.

What differs between providers (OpenAI's `/v1/files` + `/v1/batches`, Anthropic's
`/v1/messages/batches`) is one `BatchProvider` adapter: how a request becomes an entry, how a batch
is submitted, when it has ended, how its results read, and how a batch created just before a kill
is found again. Everything else — rounds, the ledger, polling, resuming — is written once here.

Crash-safety contract, enforced here with the ledger (`batches-ROLE.jsonl` in the run
directory, one fsynced `os.write` per event):
1. `submitting` {submission, custom_ids, ...} is written *before* the batch is created (for OpenAI
   after the upload: the submission is the input file); 2. `submitted` {submission, batch_id} once
   it is; 3. `consumed` {batch_id} once every answer of the batch has been handed to its
   conversation, which appends its turn to the run log in the same event-loop step (before this
   backend runs again).
On resume, every batch submitted and not consumed is polled to its end and its answers are kept
by request hash; a resumed conversation whose request matches takes that answer instead of
sending it again. A `submitting` without `submitted` is looked for with the provider (the create
may have gone through just before the kill). So no request is paid for twice, and a resumed run's
turns are those of an uninterrupted one.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.errors import BackendError, TransientError
from culturepark.engine.pricing import Price


def ledger_name(role: str) -> str:
    """The ledger of one endpoint's batches in the run directory (named by the first role using it)."""
    return f"batches-{role}.jsonl"


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """OpenAI's: 50,000 requests and 200 MB per batch (Anthropic allows 100,000 and 256 MB, so these
    fit both); `gather_s` of quiet closes a round."""

    max_requests: int = 50_000
    max_bytes: int = 190 * 1024 * 1024
    gather_s: float = 2.0
    poll_s: float = 30.0
    first_poll_s: float = 1.0


Answers = dict[str, Completion | BackendError]  # custom_id → its answer


class BatchProvider(Protocol):
    """One provider's batch API as the rounds, the ledger and resuming need it."""

    @property
    def http(self) -> Any:
        """The provider's HTTP backend: its name, model, price, start, close and description."""

    separator: str  # between a request hash and its copy number inside a custom_id

    def entry(self, custom_id: str, request: Request) -> bytes:
        """One request as the batch carries it (its size counts against `max_bytes`)."""

    async def prepare(self, entries: list[bytes]) -> dict[str, Any]:
        """What must exist before the batch is created, as ledger fields (OpenAI: the uploaded file)."""

    async def create(self, prepared: dict[str, Any], entries: list[bytes]) -> str:
        """Create the batch; its id."""

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        """The batch object as the provider shows it now."""

    def ended(self, batch: dict[str, Any]) -> bool:
        """Whether the batch is final (its results can be read)."""

    async def results(self, batch: dict[str, Any]) -> Answers:
        """Every answered, failed or expired line of an ended batch."""

    async def find(self, submitting: dict[str, Any], known: set[str]) -> str | None:
        """The batch a `submitting` event created before a kill, if it was created (`known`: ids already
        in the ledger, never this one)."""


class BatchLedger:
    """The append-only record of every batch this run paid for (see the module's contract)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = -1

    def read(self) -> list[dict[str, Any]]:
        """Every complete event; a torn last line (a kill mid-write) is not an event."""
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_bytes().split(b"\n"):
            try:
                event = orjson.loads(line) if line.strip() else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def append(self, event: str, **fields: Any) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_size and not self.path.read_bytes().endswith(b"\n"):
                os.write(self._fd, b"\n")  # a torn line from a killed run ends here, never merges
        os.write(self._fd, orjson.dumps({"event": event, "t": time.time(), **fields}) + b"\n")
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def submission_of(event: dict[str, Any]) -> str:
    """The key pairing a `submitting` with its `submitted` (ledgers written before Anthropic batches
    carried only the input file id, which still pairs them)."""
    return str(event.get("submission") or event.get("input_file_id"))


@dataclass
class _Waiting:
    request: Request
    request_hash: str
    future: asyncio.Future[Completion]


@dataclass
class _Answers:
    """Answers of batches paid for before a restart, by request hash, until each is taken."""

    by_hash: dict[str, deque[tuple[str, Completion | BackendError]]] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)  # batch id → answers not taken yet

    def add(self, batch_id: str, request_hash: str, answer: Completion | BackendError) -> None:
        self.by_hash.setdefault(request_hash, deque()).append((batch_id, answer))
        self.left[batch_id] = self.left.get(batch_id, 0) + 1

    def take(self, request_hash: str) -> tuple[str, Completion | BackendError] | None:
        queue = self.by_hash.get(request_hash)
        if not queue:
            return None
        batch_id, answer = queue.popleft()
        if not queue:
            del self.by_hash[request_hash]
        self.left[batch_id] -= 1
        return batch_id, answer


class BatchBackend:
    """The `Backend` of `run --batch-api`: a provider's bodies and parsing, sent in batches."""

    can_stream = False  # answers arrive with their batch
    checks_reachable = False  # as before: the start's recovery is the first call to the server

    def __init__(self, provider: BatchProvider, ledger_path: Path, limits: BatchLimits | None = None) -> None:
        self.provider = provider
        self.http = provider.http
        self.name: str = self.http.name
        self.model: str = self.http.model
        self.price: Price | None = self.http.price
        self.limits = limits or BatchLimits()
        self.ledger = BatchLedger(ledger_path)
        self.resumed_answers = 0
        self._answers = _Answers()
        self._waiting: list[_Waiting] = []
        self._arrived = asyncio.Event()
        self._collector: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._marks: set[asyncio.Task[None]] = set()

    def describe(self) -> dict[str, Any]:
        return {**self.http.describe(), "service_tier": "batch", "batch_api": True}

    async def start(self) -> None:
        await self.http.start()
        await self._recover()

    async def aclose(self) -> None:
        await asyncio.gather(*self._marks)  # a consumed answer's mark is written, never lost at close
        for task in list(self._tasks) + ([self._collector] if self._collector else []):
            task.cancel()
        self.ledger.close()
        await self.http.aclose()

    # -- one request -------------------------------------------------------------
    async def complete(self, request: Request) -> Completion:
        request_hash = request.key(self.model)
        paid = self._answers.take(request_hash)
        if paid is not None:
            batch_id, answer = paid
            self.resumed_answers += 1
            if self._answers.left.get(batch_id) == 0:
                self._consumed_later(batch_id)
            if isinstance(answer, BackendError):
                raise answer
            return answer
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(request, request_hash, future))
        self._arrived.set()
        if self._collector is None or self._collector.done():
            self._collector = asyncio.create_task(self._collect())
        return await future

    # -- rounds ------------------------------------------------------------------
    async def _collect(self) -> None:
        """Close a round after `gather_s` without a new request (or when it is full), send it, repeat."""
        while self._waiting:
            while len(self._waiting) < self.limits.max_requests:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), self.limits.gather_s)
                except TimeoutError:
                    break
            round_, self._waiting = self._waiting, []
            for chunk in self._split(round_):
                self._spawn(self._send(chunk))

    def _spawn(self, work: Coroutine[Any, Any, None], into: set[asyncio.Task[None]] | None = None) -> None:
        tasks = self._tasks if into is None else into
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _split(self, waiting: list[_Waiting]) -> list[list[tuple[str, _Waiting, bytes]]]:
        """Batches under the provider's limits; `custom_id` is the request hash (numbered when two
        identical requests share a batch), so a restart can match answers to requests."""
        chunks: list[list[tuple[str, _Waiting, bytes]]] = [[]]
        size = 0
        seen: dict[str, int] = defaultdict(int)
        for w in waiting:
            n = seen[w.request_hash]
            seen[w.request_hash] += 1
            custom_id = f"{w.request_hash}{self.provider.separator}{n}"
            entry = self.provider.entry(custom_id, w.request)
            if chunks[-1] and (len(chunks[-1]) >= self.limits.max_requests or
                               size + len(entry) > self.limits.max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append((custom_id, w, entry))
            size += len(entry)
        return [c for c in chunks if c]

    async def _send(self, chunk: list[tuple[str, _Waiting, bytes]]) -> None:
        waiting = {custom_id: w for custom_id, w, _ in chunk}
        entries = [entry for _, _, entry in chunk]
        try:
            prepared = await self.provider.prepare(entries)
            submission = submission_of(prepared) if prepared else uuid.uuid4().hex
            self.ledger.append("submitting", submission=submission, custom_ids=list(waiting), **prepared)
            batch_id = await self.provider.create(prepared, entries)
            self.ledger.append("submitted", submission=submission, batch_id=batch_id, **prepared)
            answers = await self._results(batch_id)
        except Exception as exc:  # every waiting conversation hears of it; a bug stays a crash with its traceback
            error = (exc if isinstance(exc, BackendError) else
                     TransientError("batch_malformed_reply") if isinstance(exc, (KeyError, TypeError, ValueError))
                     else exc)
            for w in waiting.values():
                if not w.future.done():
                    w.future.set_exception(error)
            return
        for custom_id, w in waiting.items():
            if w.future.done():
                continue
            answer = answers.get(custom_id, TransientError("batch_no_answer"))
            if isinstance(answer, BackendError):
                w.future.set_exception(answer)
            else:
                w.future.set_result(answer)
        self._consumed_later(batch_id)

    async def _results(self, batch_id: str) -> Answers:
        """Poll until the batch has ended (from `first_poll_s`, doubling up to `poll_s`), then read it."""
        started = time.perf_counter()
        delay = min(self.limits.first_poll_s, self.limits.poll_s)
        while True:
            try:
                batch = await self.provider.retrieve(batch_id)
            except TransientError:
                batch = {}
            if batch and self.provider.ended(batch):
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.limits.poll_s)
        answers = await self.provider.results(batch)
        latency_ms = (time.perf_counter() - started) * 1000.0
        for answer in answers.values():
            if isinstance(answer, Completion):
                answer.latency_ms = latency_ms
                answer.tier = "batch"
        return answers

    # -- after a restart -----------------------------------------------------------
    async def _recover(self) -> None:
        """Collect the answers of every batch paid for and not yet consumed (the module's contract)."""
        events = self.ledger.read()
        consumed = {e["batch_id"] for e in events if e.get("event") == "consumed"}
        submitted = {submission_of(e): e["batch_id"] for e in events if e.get("event") == "submitted"}
        for e in events:
            if e.get("event") == "submitting" and submission_of(e) not in submitted:
                found = await self.provider.find(e, set(submitted.values()))
                if found is not None:
                    fields = {k: v for k, v in e.items() if k not in ("event", "t", "custom_ids")}
                    self.ledger.append("submitted", batch_id=found, **fields)
                    submitted[submission_of(e)] = found
        open_batches = [b for b in submitted.values() if b not in consumed]
        results = await asyncio.gather(*(self._results(b) for b in open_batches))
        for batch_id, answers in zip(open_batches, results, strict=True):
            for custom_id, answer in answers.items():
                self._answers.add(batch_id, custom_id.rsplit(self.provider.separator, 1)[0], answer)
            if not answers:
                self.ledger.append("consumed", batch_id=batch_id)

    def _consumed_later(self, batch_id: str) -> None:
        """Mark a batch consumed once its answers are handed over: each waiting conversation appends
        its turn in the next event-loop step, before this mark is written."""
        async def mark() -> None:
            await asyncio.sleep(0)  # the conversation appends its turn first
            self.ledger.append("consumed", batch_id=batch_id)
        self._spawn(mark(), self._marks)


__all__ = ["Answers", "BatchBackend", "BatchLedger", "BatchLimits", "BatchProvider", "ledger_name", "submission_of"]
