"""Requests sent through an OpenAI-compatible Batch API (`/v1/files` + `/v1/batches`), in rounds.

Why a backend: batch APIs bill half and answer within 24 h, which suits a run where time does
not matter; the scheduler, the endpoint (validation, retries), the log and `summary.json` stay
exactly as they are, and only how a request travels changes. Conversations await their turn
as usual; the requests that arrive together — a *round*: the next turn of every live
conversation — go into one batch (split by the provider's request and size limits), which is
uploaded, created, polled and downloaded; each waiting request then gets its own line's answer.
A line that failed or expired raises `TransientError`, so the endpoint's retry puts that request
into a later round.

Crash-safety contract, enforced here with the ledger (`batches-ROLE.jsonl` in the run
directory, one fsynced `os.write` per event):
1. `submitting` {input_file_id, custom_ids} is written after the upload and *before* the batch is
   created; 2. `submitted` {input_file_id, batch_id} once it is; 3. `consumed` {batch_id} once
   every answer of the batch has been handed to its conversation, which appends its turn to the
   run log in the same event-loop step (before this backend runs again).
On resume, every batch submitted and not consumed is polled to its end and its answers are kept
by request hash; a resumed conversation whose request matches takes that answer instead of
sending it again. A `submitting` without `submitted` is looked up by its input file in the
provider's batch list (the create may have gone through just before the kill). So no request is
paid for twice, and a resumed run's turns are those of an uninterrupted one.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend, error_for_status
from culturepark.engine.errors import BackendError, FatalBackendError, TransientError


def ledger_name(role: str) -> str:
    """The ledger of one endpoint's batches in the run directory (named by the first role using it)."""
    return f"batches-{role}.jsonl"

FINAL_STATES = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """OpenAI's: 50,000 requests and 200 MB per input file; `gather_s` of quiet closes a round."""

    max_requests: int = 50_000
    max_bytes: int = 190 * 1024 * 1024
    gather_s: float = 2.0
    poll_s: float = 30.0
    first_poll_s: float = 1.0


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


class OpenAIBatchBackend:
    """The `Backend` of `run --batch-api`: the HTTP backend's bodies and parsing, sent in batches."""

    can_stream = False  # answers arrive with their batch
    checks_reachable = False  # as before: the start's recovery is the first call to the server

    def __init__(self, http: OpenAIHTTPBackend, ledger_path: Path, limits: BatchLimits | None = None) -> None:
        self.http = http
        self.name = http.name
        self.model = http.model
        self.price = http.price
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

    def _spawn(self, work: Any, into: set[asyncio.Task[None]] | None = None) -> None:
        tasks = self._tasks if into is None else into
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _split(self, waiting: list[_Waiting]) -> list[list[tuple[str, _Waiting, bytes]]]:
        """Batch files under the provider's limits; `custom_id` is the request hash (numbered when
        two identical requests share a batch), so a restart can match answers to requests."""
        chunks: list[list[tuple[str, _Waiting, bytes]]] = [[]]
        size = 0
        seen: dict[str, int] = defaultdict(int)
        for w in waiting:
            n = seen[w.request_hash]
            seen[w.request_hash] += 1
            custom_id = f"{w.request_hash}.{n}"
            line = orjson.dumps({"custom_id": custom_id, "method": "POST", "url": self.http.path,
                                 "body": self.http.body(w.request)}) + b"\n"
            if chunks[-1] and (len(chunks[-1]) >= self.limits.max_requests or size + len(line) > self.limits.max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append((custom_id, w, line))
            size += len(line)
        return [c for c in chunks if c]

    async def _send(self, chunk: list[tuple[str, _Waiting, bytes]]) -> None:
        waiting = {custom_id: w for custom_id, w, _ in chunk}
        try:
            file_id = await self._upload(b"".join(line for _, _, line in chunk))
            self.ledger.append("submitting", input_file_id=file_id, custom_ids=list(waiting))
            batch = orjson.loads(await self.http.call_api(
                "POST", "/batches", json={"input_file_id": file_id, "endpoint": self.http.path,
                                          "completion_window": "24h"}))
            self.ledger.append("submitted", input_file_id=file_id, batch_id=batch["id"])
            answers = await self._results(batch["id"])
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
        self._consumed_later(batch["id"])

    async def _upload(self, content: bytes) -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename="round.jsonl", content_type="application/jsonl")
        body = form()  # multipart, with the boundary its content type names
        reply = await self.http.call_api("POST", "/files", data=body, timeout_s=600, content_type=body.content_type)
        return str(orjson.loads(reply)["id"])

    async def _results(self, batch_id: str) -> dict[str, Completion | BackendError]:
        """Poll until the batch is final, then read its output and error files."""
        started = time.perf_counter()
        delay = min(self.limits.first_poll_s, self.limits.poll_s)
        while True:
            try:
                batch = orjson.loads(await self.http.call_api("GET", f"/batches/{batch_id}"))
            except TransientError:
                batch = {"status": "polling"}
            if batch.get("status") in FINAL_STATES:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.limits.poll_s)
        answers: dict[str, Completion | BackendError] = {}
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                raw = await self.http.call_api("GET", f"/files/{batch[key]}/content", timeout_s=600)
                for line in raw.splitlines():
                    if line.strip():
                        custom_id, answer = self._answer(orjson.loads(line))
                        answers[custom_id] = answer
        latency_ms = (time.perf_counter() - started) * 1000.0
        for answer in answers.values():
            if isinstance(answer, Completion):
                answer.latency_ms = latency_ms
        return answers

    def _answer(self, line: dict[str, Any]) -> tuple[str, Completion | BackendError]:
        custom_id = str(line.get("custom_id"))
        response = line.get("response") or {}
        error = line.get("error")
        if error and not response:
            code = str(error.get("code") or "error")
            return custom_id, TransientError(code if code.startswith("batch") else f"batch_{code}")
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        if status != 200:
            raw = orjson.dumps(body) if body is not None else b""
            failure = error_for_status(status, {}, raw) if status else FatalBackendError("batch_bad_line")
            return custom_id, failure
        # the request the line answers is only needed for an estimate when usage is missing
        completion = self.http.completion_from(body, Request(prompt=""))
        completion.tier = "batch"
        return custom_id, completion

    # -- after a restart -----------------------------------------------------------
    async def _recover(self) -> None:
        """Collect the answers of every batch paid for and not yet consumed (the module's contract)."""
        events = self.ledger.read()
        consumed = {e["batch_id"] for e in events if e.get("event") == "consumed"}
        submitted = {e["input_file_id"]: e["batch_id"] for e in events if e.get("event") == "submitted"}
        for e in events:
            if e.get("event") == "submitting" and e["input_file_id"] not in submitted:
                found = await self._find_batch(e["input_file_id"])
                if found is not None:
                    self.ledger.append("submitted", input_file_id=e["input_file_id"], batch_id=found)
                    submitted[e["input_file_id"]] = found
        open_batches = [b for b in submitted.values() if b not in consumed]
        results = await asyncio.gather(*(self._results(b) for b in open_batches))
        for batch_id, answers in zip(open_batches, results):
            for custom_id, answer in answers.items():
                self._answers.add(batch_id, custom_id.rsplit(".", 1)[0], answer)
            if not answers:
                self.ledger.append("consumed", batch_id=batch_id)

    async def _find_batch(self, input_file_id: str) -> str | None:
        """The batch created from this file, if the create went through before a kill."""
        after: str | None = None
        while True:
            query = "?limit=100" + (f"&after={after}" if after else "")
            page = orjson.loads(await self.http.call_api("GET", f"/batches{query}"))
            for batch in page.get("data") or []:
                if batch.get("input_file_id") == input_file_id:
                    return str(batch["id"])
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]

    def _consumed_later(self, batch_id: str) -> None:
        """Mark a batch consumed once its answers are handed over: each waiting conversation appends
        its turn in the next event-loop step, before this mark is written."""
        async def mark() -> None:
            await asyncio.sleep(0)  # the conversation appends its turn first
            self.ledger.append("consumed", batch_id=batch_id)
        self._spawn(mark(), self._marks)


__all__ = ["BatchLedger", "BatchLimits", "OpenAIBatchBackend", "ledger_name"]
