"""OpenAI's Batch API (`/v1/files` + `/v1/batches`, and the servers that copy it) as a `BatchProvider`:
the rounds, the ledger and resuming are `batch_api.BatchBackend`'s.

A round is uploaded as one JSONL file of `{custom_id, method, url, body}` lines (the body is the
HTTP backend's own), the batch is created from it, polled until `status` is final, and its output
and error files are read back. The file is uploaded *before* the ledger's `submitting`, so a batch
created just before a kill is found again by its `input_file_id` in the provider's batch list.
"""
from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.backends.batch_api import Answers
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend, error_for_status
from culturepark.engine.errors import BackendError, FatalBackendError, TransientError

FINAL_STATES = ("completed", "failed", "expired", "cancelled")


class OpenAIBatches:
    """The provider adapter: one file per batch, `status` until final, output and error files."""

    separator = "."

    def __init__(self, http: OpenAIHTTPBackend) -> None:
        self._http = http

    @property
    def http(self) -> OpenAIHTTPBackend:
        return self._http

    def entry(self, custom_id: str, request: Request) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": self._http.path,
                             "body": self._http.body(request)}) + b"\n"

    async def prepare(self, entries: list[bytes]) -> dict[str, Any]:
        return {"input_file_id": await self.upload(b"".join(entries))}

    async def upload(self, content: bytes) -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename="round.jsonl", content_type="application/jsonl")
        body = form()  # multipart, with the boundary its content type names
        reply = await self._http.call_api("POST", "/files", data=body, timeout_s=600, content_type=body.content_type)
        return str(orjson.loads(reply)["id"])

    async def create(self, prepared: dict[str, Any], entries: list[bytes]) -> str:
        batch = orjson.loads(await self._http.call_api(
            "POST", "/batches", json={"input_file_id": prepared["input_file_id"], "endpoint": self._http.path,
                                      "completion_window": "24h"}))
        return str(batch["id"])

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch: dict[str, Any] = orjson.loads(await self._http.call_api("GET", f"/batches/{batch_id}"))
        return batch

    def ended(self, batch: dict[str, Any]) -> bool:
        return batch.get("status") in FINAL_STATES

    async def results(self, batch: dict[str, Any]) -> Answers:
        answers: Answers = {}
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                raw = await self._http.call_api("GET", f"/files/{batch[key]}/content", timeout_s=600)
                for line in raw.splitlines():
                    if line.strip():
                        custom_id, answer = self._answer(orjson.loads(line))
                        answers[custom_id] = answer
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
        return custom_id, self._http.completion_from(body, Request(prompt=""))

    async def find(self, submitting: dict[str, Any], known: set[str]) -> str | None:
        """The batch created from this event's file, if the create went through before a kill."""
        input_file_id = submitting.get("input_file_id")
        after: str | None = None
        while True:
            query = "?limit=100" + (f"&after={after}" if after else "")
            page = orjson.loads(await self._http.call_api("GET", f"/batches{query}"))
            for batch in page.get("data") or []:
                if batch.get("input_file_id") == input_file_id:
                    return str(batch["id"])
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]


__all__ = ["FINAL_STATES", "OpenAIBatches"]
