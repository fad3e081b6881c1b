"""Anthropic's Message Batches API as a `BatchProvider`: the rounds, the ledger and resuming are
`batch_api.BatchBackend`'s, the bodies and parsing the Messages backend's (`anthropic_http`).

The API, as its reference documents it (platform.claude.com/docs/en/api/messages/batches/create,
…/retrieve, …/list, …/results; the guide: …/docs/en/build-with-claude/batch-processing):
- `POST /v1/messages/batches` with `{"requests": [{"custom_id", "params"}]}`: `params` is a
  Messages API body, `custom_id` 1–64 characters of `[a-zA-Z0-9_-]`, unique in the batch; at most
  100,000 requests or 256 MB. No file is uploaded: the batch is created in one call.
- `GET /v1/messages/batches/{id}`: a `message_batch` whose `processing_status` is `in_progress`,
  `canceling` or `ended`, with `request_counts` {processing, succeeded, errored, canceled,
  expired}, `created_at` (RFC 3339) and, once ended, `results_url`.
- The results: JSONL at `results_url`, in any order, one `{"custom_id", "result": {"type":
  "succeeded", "message": {...}}}` per request, or `errored` (`error`: an error response,
  `{"type": "error", "error": {"type", "message"}}`), `canceled`, `expired`.
- `GET /v1/messages/batches?limit=&after_id=`: newest first; `last_id` is the next page's
  `after_id`.
- Every rate, cache reads and writes included, is half the Messages API's; `cache_control`
  breakpoints apply inside a batch as outside (the body is the same one, breakpoints and all), so
  a turn's usage splits its prompt into plain, cache-read and cache-written input as it does there.

Why `-` between the request hash and its copy number: a dot is not allowed in a `custom_id`.
Finding a batch created just before a kill: there is no input file to look it up by, so the
candidates are the batches created after the `submitting` event with as many requests as it
recorded, none of them already in the ledger; each is read once it has ended, and the one whose
custom ids are exactly the recorded ones is ours (another job's batch never has our request hashes).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from culturepark.engine.backends.anthropic_http import AnthropicHTTPBackend, same_origin
from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.backends.batch_api import Answers
from culturepark.engine.errors import BackendError, FatalBackendError, TransientError

CLOCK_SKEW_S = 300.0  # the provider's clock against ours, when matching a batch to a `submitting` event
COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


def _created(batch: dict[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(batch["created_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None


def result_answer(result: Any, message_of: Callable[[Any], Completion]) -> Completion | BackendError:
    """One request's result: its message (`message_of` parses it as the Messages API's answer), or why
    it has none. What another round may cure (the API's own errors, overload, expiry, cancellation:
    none is billed) is transient; a request the API calls invalid is not sent again."""
    if not isinstance(result, dict):
        return TransientError("batch_malformed_reply")
    kind = result.get("type")
    if kind == "succeeded":
        try:
            return message_of(result.get("message"))
        except BackendError as exc:
            return exc
    if kind in ("canceled", "expired"):
        return TransientError(f"batch_{kind}")
    if kind == "errored":
        body: dict[str, Any] = result["error"] if isinstance(result.get("error"), dict) else {}
        error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
        reason, message = str(error.get("type") or "error"), str(error.get("message") or "")[:200]
        if reason == "invalid_request_error":
            return FatalBackendError(f"batch_invalid_request: {message}".rstrip())
        return TransientError(f"batch_{reason}")
    return TransientError("batch_malformed_reply")


class AnthropicBatches:
    """The provider adapter: one create call per batch, `processing_status` until ended, `results_url`."""

    separator = "-"

    def __init__(self, http: AnthropicHTTPBackend, poll_s: float = 30.0) -> None:
        self._http = http
        self._poll_s = poll_s  # while a candidate of `find` is still processing

    @property
    def http(self) -> AnthropicHTTPBackend:
        return self._http

    def entry(self, custom_id: str, request: Request) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "params": self._http.body(request)})

    async def prepare(self, entries: list[bytes]) -> dict[str, Any]:
        return {}  # nothing exists before the create call

    async def create(self, prepared: dict[str, Any], entries: list[bytes]) -> str:
        body = b'{"requests":[' + b",".join(entries) + b"]}"
        batch = orjson.loads(await self._http.call_api("POST", "/messages/batches", data=body, timeout_s=600))
        return str(batch["id"])

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch: dict[str, Any] = orjson.loads(await self._http.call_api("GET", f"/messages/batches/{batch_id}"))
        return batch

    def ended(self, batch: dict[str, Any]) -> bool:
        return batch.get("processing_status") == "ended"

    async def results(self, batch: dict[str, Any]) -> Answers:
        answers: Answers = {}
        for row in await self._rows(batch):
            answers[str(row.get("custom_id"))] = result_answer(
                row.get("result"), lambda message: self._http.completion_from(message, Request(prompt="")))
        return answers

    async def _rows(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The JSONL lines at the batch's `results_url` (on the API's own host; else its documented path)."""
        url = str(batch.get("results_url") or "")
        if not same_origin(url, self._http.base_url):
            url = f"/messages/batches/{batch['id']}/results"
        raw = await self._http.call_api("GET", url, timeout_s=600)
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]

    async def find(self, submitting: dict[str, Any], known: set[str]) -> str | None:
        """The batch this `submitting` event created, if it was (see the module's doc)."""
        wanted = set(submitting.get("custom_ids") or [])
        since = float(submitting.get("t") or 0.0) - CLOCK_SKEW_S
        after: str | None = None
        candidates: list[str] = []
        while True:
            query = "?limit=100" + (f"&after_id={after}" if after else "")
            page = orjson.loads(await self._http.call_api("GET", f"/messages/batches{query}"))
            data = page.get("data") or []
            for batch in data:
                created = _created(batch)
                counts = batch.get("request_counts") or {}
                if (batch.get("id") not in known and (created is None or created >= since)
                        and sum(int(counts.get(k) or 0) for k in COUNTS) == len(wanted)):
                    candidates.append(str(batch["id"]))
            oldest = _created(data[-1]) if data else None
            if not page.get("has_more") or not data or (oldest is not None and oldest < since):
                break
            after = str(page.get("last_id") or data[-1]["id"])
        for batch_id in candidates:
            if set(await self._custom_ids(batch_id)) == wanted:
                return batch_id
        return None

    async def _custom_ids(self, batch_id: str) -> list[str]:
        """A candidate's custom ids, once it has ended (its results are the only place they show)."""
        delay = min(1.0, self._poll_s)
        while not self.ended(batch := await self.retrieve(batch_id)):
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._poll_s)
        return [str(row.get("custom_id")) for row in await self._rows(batch)]


__all__ = ["AnthropicBatches", "result_answer"]
