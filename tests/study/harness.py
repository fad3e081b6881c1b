"""The study app in this process (aiohttp's test server), for tests that need its clock, its log or
its failures in hand; the rest of tests/study drives the `study serve` process as participants do."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml
from aiohttp import CookieJar
from aiohttp.test_utils import TestClient, TestServer

from culturepark.engine.log import LOG_NAME, RunLog
from culturepark.runs.prepare import RunOptions, prepare, run_header
from culturepark.scenarios.endpoints import make_endpoints
from culturepark.study.routes import build_app
from culturepark.study.server import StudyServer, private_header
from tests.conftest import write_hofstede
from tests.study.test_server import study

ADMIN = "admin-token-for-tests"


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_server(tmp_path: Path, data_dir: Path, url: str = "http://127.0.0.1:9/v1", clock: Clock | None = None,
                pilot: bool = False, spec_changes: dict[str, Any] | None = None, **human: Any) -> StudyServer:
    """A `StudyServer` over a fresh (or existing) run directory `tmp_path/run`; `human` updates the scenario's
    human block, `spec_changes` the rest. Its tutors point at `url` (no server there unless the test starts one)."""
    write_hofstede(data_dir)
    spec = study(url, **(spec_changes or {}))
    spec["human"].update(human)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    prepared = prepare(path, RunOptions(out=tmp_path / "run", data_dir=data_dir))
    prepared.out.mkdir(parents=True, exist_ok=True)
    tutors = {r: c for r, c in prepared.experiment.backends().items() if r.startswith("tutor:")}
    endpoints = make_endpoints(tutors, prepared.scenario.limits, prepared.scenario.retry, prepared.scenario.seed)
    fresh = not (prepared.out / LOG_NAME).exists()
    log = RunLog(prepared.out / LOG_NAME, fsync="never").open()
    if fresh:
        log.append(private_header(run_header(prepared, endpoints, None, learners="human"), prepared.out))
    return StudyServer(prepared.scenario, prepared.plan, prepared.out, endpoints, log, ADMIN,  # type: ignore[arg-type]
                       clock=clock or Clock(), pilot=pilot)


@contextlib.asynccontextmanager
async def client(server: StudyServer):  # type: ignore[no-untyped-def]
    """A browser (one cookie jar) against the app of `server`."""
    async with TestClient(TestServer(build_app(server)), cookie_jar=CookieJar(unsafe=True)) as c:
        yield c
