"""The simulator's job APIs: `/v1/files` and `/v1/fine_tuning/jobs` (enough for the openai SDK);
batches (`testing/batches.py`) keep their input and output files here too."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import BodyPartReader, web

from culturepark.engine.tokens import approx_tokens
from culturepark.testing.responses import error_response as _error

if TYPE_CHECKING:  # the simulator owns these; the job routes only read them
    from culturepark.testing.sim_config import SimConfig
    from culturepark.testing.simulator import SimStats

class FineTuneSim:
    """Minimal `/v1/files` and `/v1/fine_tuning/jobs`: enough for the openai SDK to upload a
    file, create a job, follow it (validating_files → running → succeeded | failed), list
    its events, and list jobs (which is how a resumed client finds a job it already paid for).
    Each retrieval of a job advances it one step, so tests are driven by polls, not time."""

    def __init__(self, config: SimConfig, stats: SimStats) -> None:
        self.config = config
        self.stats = stats
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}

    def _event(self, job_id: str, message: str, level: str = "info") -> None:
        evs = self.events.setdefault(job_id, [])
        evs.append({"object": "fine_tuning.job.event", "id": f"ftevent-{job_id}-{len(evs)}",
                    "created_at": int(time.time()), "level": level, "message": message, "type": "message"})

    async def upload(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        purpose, content, filename = "fine-tune", b"", "file.jsonl"
        async for part in reader:
            assert isinstance(part, BodyPartReader)  # the SDK's upload is flat form fields
            if part.name == "purpose":
                purpose = (await part.read()).decode()
            elif part.name == "file":
                filename = part.filename or filename
                content = bytes(await part.read())
        fid = f"file-sim{len(self.files) + 1}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                           "filename": filename, "purpose": purpose, "status": "processed",
                           "_tokens": approx_tokens(content.decode("utf-8", "replace")), "_content": content}
        self.stats.by_path["files_uploaded"] = self.stats.by_path.get("files_uploaded", 0) + 1
        return web.json_response({k: v for k, v in self.files[fid].items() if not k.startswith("_")})

    async def create_job(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        fid = body.get("training_file")
        if fid not in self.files:
            return _error(400, f"training_file {fid!r} not found")
        jid = f"ftjob-sim{len(self.jobs) + 1}"
        epochs = (body.get("hyperparameters") or {}).get("n_epochs", 3)
        if epochs == "auto":
            epochs = 3
        self.jobs[jid] = {"id": jid, "object": "fine_tuning.job", "created_at": int(time.time()),
                          "model": body.get("model"), "training_file": fid, "validation_file": None,
                          "status": "validating_files", "fine_tuned_model": None, "finished_at": None,
                          "hyperparameters": {"n_epochs": epochs}, "trained_tokens": None, "error": None,
                          "organization_id": "org-sim", "result_files": [], "seed": body.get("seed") or 0,
                          "suffix": body.get("suffix"), "_polls": 0, "_epochs": epochs}
        self.stats.by_path["jobs_created"] = self.stats.by_path.get("jobs_created", 0) + 1
        self._event(jid, f"Created fine-tuning job: {jid}")
        return web.json_response(self._public(jid))

    def add_file(self, content: bytes, filename: str, purpose: str) -> str:
        """A file the server itself writes (a batch's output or errors); returns its id."""
        fid = f"file-sim{len(self.files) + 1}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                           "filename": filename, "purpose": purpose, "status": "processed", "_tokens": 0,
                           "_content": content}
        return fid

    async def file_content(self, request: web.Request) -> web.Response:
        fid = request.match_info["file_id"]
        if fid not in self.files:
            return _error(404, f"file {fid} not found")
        return web.Response(body=self.files[fid]["_content"], content_type="application/octet-stream")

    async def file_info(self, request: web.Request) -> web.Response:
        fid = request.match_info["file_id"]
        if fid not in self.files:
            return _error(404, f"file {fid} not found")
        return web.json_response({k: v for k, v in self.files[fid].items() if not k.startswith("_")})

    def _public(self, jid: str) -> dict[str, Any]:
        return {k: v for k, v in self.jobs[jid].items() if not k.startswith("_")}

    def _advance(self, jid: str) -> None:
        job = self.jobs[jid]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        job["_polls"] += 1
        n = self.config.finetune_polls
        if job["status"] == "validating_files":
            job["status"] = "running"
            self._event(jid, "Validated training file; fine-tuning job started")
            return
        step = job["_polls"] - 1
        if step < n:
            self._event(jid, f"Step {step}/{n}: training loss={2.0 / (1 + step):.3f}")
            return
        job["finished_at"] = int(time.time())
        if self.config.finetune_fail:
            job["status"] = "failed"
            job["error"] = {"code": "sim_failure", "message": "injected failure", "param": None}
            self._event(jid, "Fine-tuning job failed: injected failure", "error")
        else:
            job["status"] = "succeeded"
            job["trained_tokens"] = self.files[job["training_file"]]["_tokens"] * job["_epochs"]
            job["fine_tuned_model"] = f"ft:{job['model']}:sim:{job['suffix'] or 'model'}:{jid[-4:]}"
            self._event(jid, "The job has successfully completed")

    async def retrieve_job(self, request: web.Request) -> web.Response:
        jid = request.match_info["job_id"]
        if jid not in self.jobs:
            return _error(404, f"job {jid} not found")
        self._advance(jid)
        return web.json_response(self._public(jid))

    async def list_jobs(self, request: web.Request) -> web.Response:
        data = [self._public(j) for j in reversed(self.jobs)]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def job_events(self, request: web.Request) -> web.Response:
        jid = request.match_info["job_id"]
        if jid not in self.jobs:
            return _error(404, f"job {jid} not found")
        evs = list(reversed(self.events.get(jid, [])))  # newest first, like the API
        return web.json_response({"object": "list", "data": evs, "has_more": False})

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{file_id}", self.file_info)
        app.router.add_get("/v1/files/{file_id}/content", self.file_content)
        app.router.add_post("/v1/fine_tuning/jobs", self.create_job)
        app.router.add_get("/v1/fine_tuning/jobs", self.list_jobs)
        app.router.add_get("/v1/fine_tuning/jobs/{job_id}", self.retrieve_job)
        app.router.add_get("/v1/fine_tuning/jobs/{job_id}/events", self.job_events)
