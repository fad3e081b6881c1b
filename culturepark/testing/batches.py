"""The simulator's `/v1/batches`: create, retrieve, list, cancel; output and error files; expiry.

A batch is answered `batch_delay_s` after it was created, when it is next retrieved or
listed (tests are driven by polls, not by a clock thread). Every line goes through the same
`SimServer.answer` as a synchronous request — the same replies, usage, prompt cache and
bill (tier `batch`) — but not through the RPM/TPM windows: providers queue batches apart.
Lines fail at `batch_line_fail_rate` (a 500 in the error file); a batch expires at
`batch_expire_rate`, with half its lines answered and the rest `batch_expired`, as a batch
that ran out of its 24 h window does. A request body already answered (so billed) in an earlier
batch is counted in `batch_lines_repeated`: the figure a client that must never pay twice is
checked by (a failed or expired line was not billed; sending it again is a retry).
"""
from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from culturepark.testing.responses import error_response as _error

if TYPE_CHECKING:
    from culturepark.testing.jobs import FineTuneSim
    from culturepark.testing.simulator import SimServer

ENDPOINTS = {"/v1/chat/completions": True, "/v1/completions": False}  # url → chat
FINAL = ("completed", "failed", "expired", "cancelled")


def _digest(line: dict[str, Any]) -> bytes:
    return hashlib.blake2b(orjson.dumps(line["body"], option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


class BatchSim:
    def __init__(self, sim: SimServer, files: FineTuneSim) -> None:
        self.sim = sim
        self.files = files
        self.batches: dict[str, dict[str, Any]] = {}
        self._billed: set[bytes] = set()  # digests of request bodies answered (and so billed) in a batch

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            fid, endpoint = body["input_file_id"], body["endpoint"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, "input_file_id and endpoint are required")
        if fid not in self.files.files:
            return _error(404, f"file {fid} not found")
        if endpoint not in ENDPOINTS:
            return _error(400, f"endpoint {endpoint!r} is not supported")
        bid = f"batch_sim{len(self.batches) + 1}"
        now = int(time.time())
        batch = {"id": bid, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": fid,
                 "completion_window": body.get("completion_window", "24h"), "status": "in_progress",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": now,
                 "expires_at": now + 86400, "completed_at": None, "request_counts": {"total": 0, "completed": 0,
                                                                                      "failed": 0},
                 "metadata": body.get("metadata"), "_due": time.monotonic() + self.sim.config.batch_delay_s,
                 "_expire": self.sim._rng.random() < self.sim.config.batch_expire_rate}
        lines, problem = self._lines(self.files.files[fid]["_content"], endpoint)
        if problem:
            batch.update(status="failed", errors={"object": "list", "data": [{"code": "invalid_file",
                                                                             "message": problem}]})
        batch["request_counts"]["total"] = len(lines)
        batch["_lines"] = lines
        self.batches[bid] = batch
        st = self.sim.stats
        st.batches_created += 1
        st.batch_lines += len(lines)
        st.batch_lines_repeated += sum(_digest(line) in self._billed for line in lines)
        return web.json_response(self._public(batch))

    @staticmethod
    def _lines(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], str | None]:
        lines, ids = [], set()
        for n, raw in enumerate(content.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
                ok = line.get("url") == endpoint and isinstance(line.get("body"), dict) and line.get("custom_id")
            except (orjson.JSONDecodeError, AttributeError):
                ok = False
            if not ok:
                return [], f"line {n} is not a request to {endpoint}"
            if line["custom_id"] in ids:
                return [], f"line {n}: custom_id {line['custom_id']!r} is used twice"
            ids.add(line["custom_id"])
            lines.append(line)
        return lines, None

    def _finish(self, batch: dict[str, Any]) -> None:
        from culturepark.testing.simulator import parse_request  # the simulator imports this module

        if batch["status"] != "in_progress" or time.monotonic() < batch["_due"]:
            return
        chat = ENDPOINTS[batch["endpoint"]]
        lines = batch["_lines"]
        answered = len(lines) // 2 if batch["_expire"] else len(lines)
        out, errors = [], []
        for i, line in enumerate(lines):
            rid = f"batch_req_{batch['id']}_{i}"
            if i >= answered:
                errors.append({"id": rid, "custom_id": line["custom_id"], "response": None,
                               "error": {"code": "batch_expired", "message": "This request could not be executed "
                                         "before the completion window expired."}})
            elif self.sim._rng.random() < self.sim.config.batch_line_fail_rate:
                errors.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                               "response": {"status_code": 500, "request_id": rid,
                                            "body": {"error": {"message": "injected batch line failure",
                                                               "type": "server_error"}}}})
            else:
                text, finish, usage = self.sim.answer(parse_request(line["body"], chat), chat, "batch")
                self._billed.add(_digest(line))
                self.sim.stats.batch_lines_billed += 1
                model = str(line["body"].get("model", "sim-model"))
                out.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                            "response": {"status_code": 200, "request_id": rid,
                                         "body": self.sim.completion_body(chat, model, text, finish, usage)}})
        batch["output_file_id"] = self._write(batch, out, "output") if out else None
        batch["error_file_id"] = self._write(batch, errors, "error") if errors else None
        batch["request_counts"].update(completed=len(out), failed=len(errors))
        batch["status"] = "expired" if batch["_expire"] else "completed"
        batch["completed_at"] = int(time.time())

    def _write(self, batch: dict[str, Any], rows: list[dict[str, Any]], kind: str) -> str:
        content = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        return self.files.add_file(content, f"{batch['id']}_{kind}.jsonl", "batch_output")

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, f"batch {request.match_info['batch_id']} not found")
        self._finish(batch)
        return web.json_response(self._public(batch))

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, f"batch {request.match_info['batch_id']} not found")
        if batch["status"] not in FINAL:
            batch["status"] = "cancelled"
            batch["request_counts"]["failed"] = len(batch["_lines"])
        return web.json_response(self._public(batch))

    async def list(self, request: web.Request) -> web.Response:
        """Newest first, `limit` per page, `after` an id (how a resumed client finds its batches)."""
        try:
            limit = max(1, min(100, int(request.query.get("limit", 20))))
        except ValueError:
            return _error(400, "limit must be an integer")
        ids = list(reversed(self.batches))
        after = request.query.get("after")
        if after in self.batches:
            ids = ids[ids.index(after) + 1:]
        page = [self.batches[i] for i in ids[:limit]]
        for batch in page:
            self._finish(batch)
        data = [self._public(b) for b in page]
        return web.json_response({"object": "list", "data": data, "has_more": len(ids) > limit,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list)
        app.router.add_get("/v1/batches/{batch_id}", self.retrieve)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)
