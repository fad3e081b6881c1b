"""The simulator's Anthropic Message Batches: `/v1/messages/batches` create, retrieve, list, cancel
and results, as Anthropic's API reference describes them (see `engine/backends/anthropic_batch.py`).

A batch ends `batch_delay_s` after it was created, when it is next retrieved or listed (tests are
driven by polls, not by a clock thread). Every request goes through the same `MessagesSim.answer`
as /v1/messages — the same replies, the same breakpoint cache rules, usage and bill — at tier
`batch`, which bills every rate (cache reads and writes included) at half. Requests fail at
`batch_line_fail_rate` (`errored`, an `api_error`); a batch expires at `batch_expire_rate`, with
half its requests answered and the rest `expired`; neither is billed, as Anthropic bills only
succeeded requests. A `custom_id` answered (so billed) in an earlier batch is counted in
`batch_lines_repeated`: the figure a client that must never pay twice is checked by (a custom id is
the client's request hash, so the same custom id billed twice is the same request paid twice);
`batch_lines_billed` counts the succeeded requests.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from culturepark.testing.messages import anthropic_error, message_body, parse_messages

if TYPE_CHECKING:
    from culturepark.testing.messages import MessagesSim

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
COUNT_KEYS = ("processing", "succeeded", "errored", "canceled", "expired")


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class MessageBatchSim:
    def __init__(self, messages: MessagesSim) -> None:
        self.messages = messages
        self.sim = messages.sim
        self.batches: dict[str, dict[str, Any]] = {}
        self._paid: Counter[str] = Counter()  # custom_id → times billed

    async def create(self, request: web.Request) -> web.Response:
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        try:
            body = orjson.loads(await request.read())
            requests = body["requests"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return anthropic_error(400, "requests: field required")
        problem = self._check(requests)
        if problem:
            return anthropic_error(400, problem)
        now = time.time()
        bid = f"msgbatch_sim{len(self.batches) + 1:06d}"
        self.batches[bid] = {
            "id": bid, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {k: len(requests) if k == "processing" else 0 for k in COUNT_KEYS},
            "ended_at": None, "created_at": _rfc3339(now), "expires_at": _rfc3339(now + 86400),
            "archived_at": None, "cancel_initiated_at": None, "results_url": None,
            "_requests": requests, "_results": [], "_due": time.monotonic() + self.sim.config.batch_delay_s,
            "_expire": self.sim._rng.random() < self.sim.config.batch_expire_rate}
        st = self.sim.stats
        st.requests += 1
        st.by_path["messages/batches"] = st.by_path.get("messages/batches", 0) + 1
        st.batches_created += 1
        st.batch_lines += len(requests)
        return self._shown(self.batches[bid], request)

    @staticmethod
    def _check(requests: Any) -> str | None:
        """The create call's own checks; a request's params are checked when it is processed."""
        if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_REQUESTS:
            return f"requests: between 1 and {MAX_REQUESTS} requests are required"
        ids: set[str] = set()
        for i, r in enumerate(requests):
            custom_id = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                return f"requests.{i}.custom_id: must be 1-64 characters of letters, digits, _ and -"
            if custom_id in ids:
                return f"requests.{i}.custom_id: {custom_id!r} is used twice in this batch"
            if not isinstance(r.get("params"), dict):
                return f"requests.{i}.params: field required"
            ids.add(custom_id)
        return None

    def _finish(self, batch: dict[str, Any]) -> None:
        if batch["processing_status"] != "in_progress" or time.monotonic() < batch["_due"]:
            return
        requests = batch["_requests"]
        answered = len(requests) // 2 if batch["_expire"] else len(requests)
        for i, r in enumerate(requests):
            if i >= answered:
                result: dict[str, Any] = {"type": "expired"}
            elif self.sim._rng.random() < self.sim.config.batch_line_fail_rate:
                result = self._errored("api_error", "injected batch request failure")
            else:
                result = self._answer(batch, i, r)
            batch["_results"].append({"custom_id": r["custom_id"], "result": result})
            batch["request_counts"][result["type"]] += 1
        batch["request_counts"]["processing"] = 0
        self._ended(batch)

    def _answer(self, batch: dict[str, Any], i: int, r: dict[str, Any]) -> dict[str, Any]:
        try:
            asked = parse_messages(r["params"])
        except (ValueError, TypeError, AttributeError) as exc:
            return self._errored("invalid_request_error", str(exc) or "invalid request")
        text, stop_reason, stop_sequence, usage = self.messages.answer(asked, "batch")
        st = self.sim.stats
        st.batch_lines_billed += 1
        st.batch_lines_repeated += self._paid[r["custom_id"]] > 0
        self._paid[r["custom_id"]] += 1
        return {"type": "succeeded", "message": message_body(f"msg_{batch['id']}_{i}", asked.model, text,
                                                             stop_reason, stop_sequence, usage)}

    @staticmethod
    def _errored(kind: str, message: str) -> dict[str, Any]:
        return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}

    @staticmethod
    def _ended(batch: dict[str, Any]) -> None:
        batch["processing_status"] = "ended"
        batch["ended_at"] = _rfc3339(time.time())
        batch["results_url"] = f"/v1/messages/batches/{batch['id']}/results"  # made absolute when shown

    @staticmethod
    def _public(batch: dict[str, Any], request: web.Request) -> dict[str, Any]:
        shown = {k: v for k, v in batch.items() if not k.startswith("_")}
        shown["request_counts"] = dict(batch["request_counts"])
        if shown["results_url"]:
            shown["results_url"] = f"{request.url.origin()}{shown['results_url']}"
        return shown

    def _shown(self, batch: dict[str, Any], request: web.Request) -> web.Response:
        return web.json_response(self._public(batch, request))

    def _get(self, request: web.Request) -> dict[str, Any] | web.Response:
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return anthropic_error(404, f"message batch {request.match_info['batch_id']} not found")
        self._finish(batch)
        return batch

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self._get(request)
        return batch if isinstance(batch, web.Response) else self._shown(batch, request)

    async def results(self, request: web.Request) -> web.Response:
        batch = self._get(request)
        if isinstance(batch, web.Response):
            return batch
        if batch["processing_status"] != "ended":
            return anthropic_error(400, f"message batch {batch['id']} is still processing; its results are not "
                                        "available yet")
        content = b"".join(orjson.dumps(r) + b"\n" for r in batch["_results"])
        return web.Response(body=content, content_type="application/binary")

    async def cancel(self, request: web.Request) -> web.Response:
        """Requests not yet processed are canceled (and not billed); the batch ends."""
        batch = self._get(request)
        if isinstance(batch, web.Response):
            return batch
        if batch["processing_status"] == "in_progress":
            batch["cancel_initiated_at"] = _rfc3339(time.time())
            for r in batch["_requests"]:
                batch["_results"].append({"custom_id": r["custom_id"], "result": {"type": "canceled"}})
            batch["request_counts"].update(processing=0, canceled=len(batch["_requests"]))
            self._ended(batch)
        return self._shown(batch, request)

    async def list(self, request: web.Request) -> web.Response:
        """Newest first, `limit` per page (1 to 1,000), `after_id`/`before_id` cursors."""
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        try:
            limit = int(request.query.get("limit", 20))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return anthropic_error(400, "limit: must be between 1 and 1000")
        ids = list(reversed(self.batches))
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after in self.batches:
            ids = ids[ids.index(after) + 1:]
        elif before in self.batches:
            ids = ids[: ids.index(before)][-limit:]
        page = [self.batches[i] for i in ids[:limit]]
        for batch in page:
            self._finish(batch)
        data = [self._public(b, request) for b in page]
        return web.json_response({"data": data, "has_more": len(ids) > limit,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages/batches", self.create)
        app.router.add_get("/v1/messages/batches", self.list)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.retrieve)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.results)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self.cancel)


__all__ = ["MessageBatchSim"]
