"""One run session, written once: plan → endpoints → stage → header → scheduler → log → summary.

Every runner of conversations opens its session here, so they share one order of steps and its
guarantees (`engine.stage`: nothing written on bad input; endpoints always closed):

- `run` in one process, and a fork of a run (`run_async`): `run_session` → `start_run` →
  `hold` → `export_after`;
- the `run --ray` driver: `run_session` (no model started) → `start_run` (the header only; the
  workers write the turns) → `export_after`;
- each Ray worker: `open_session` on its shard file → `start(None)` → `hold`;
- `study serve`: `run_session` with the tutors' endpoints → `start_run`; people take the turns
  the scheduler would.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from culturepark.engine.assembly import assemble
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import AccountError, LogWriteError
from culturepark.engine.export import export_run
from culturepark.engine.log import FsyncPolicy, RunLog
from culturepark.engine.records import RunHeader
from culturepark.engine.resume import ResumeState
from culturepark.engine.rundir import RunDir
from culturepark.engine.scheduler import ConversationSpec, RunStats, Scheduler, SchedulerConfig, TurnPolicy
from culturepark.engine.stage import LogPlace, Stage
from culturepark.engine.summary import RunSummary, summarize
from culturepark.runs.prepare import Prepared, RunOptions, run_header
from culturepark.scenarios.endpoints import make_endpoints
from culturepark.scenarios.schema import AnyScenario, BackendConfig, Limits

Progress = Callable[[Any, int, int], Any]  # (something with .stats, conversations in all, already ended)


@dataclass
class Held:
    """How holding a run's conversations ended: the counts, and why it stopped early (if it did)."""

    stats: RunStats
    error: str | None = None


class Session:
    """A stage entered with its endpoints: `start` opens the log, `hold` runs the scheduler on it."""

    def __init__(self, endpoints: dict[str, Endpoint], stage: Stage) -> None:
        self.endpoints = endpoints
        self.stage = stage
        self.log: RunLog | None = None
        self.scheduler: Scheduler | None = None
        self.resume_state: ResumeState | None = None  # what the log held at start (a fork adds its copies)

    def start(self, header: RunHeader | None) -> RunLog:
        """Open the log (writing the header unless the run is being resumed)."""
        self.log = self.stage.start(header)
        self.resume_state = self.stage.resume_state
        return self.log

    @property
    def already(self) -> int:
        """Conversations that ended before this session (a resumed run's)."""
        return len(self.resume_state.ended) if self.resume_state else 0

    async def hold(self, policy: TurnPolicy,
                   conversations: Iterable[ConversationSpec] | AsyncIterable[ConversationSpec],
                   config: SchedulerConfig, *, retry_failed: bool = False,
                   progress: Progress | None = None, total: int = 0) -> Held:
        """Hold the conversations until they end or the run stops, then close the log. A log that
        cannot be written or an account that cannot pay stops the run: an `error`, resumable."""
        assert self.log is not None, "start the session first"
        scheduler = self.scheduler = Scheduler(policy, self.endpoints, self.log, config)
        try:
            with ticking(progress, scheduler, total, self.already):
                return Held(await scheduler.run(conversations, self.resume_state, retry_failed=retry_failed))
        except (LogWriteError, AccountError) as exc:
            return Held(scheduler.stats, str(exc))
        finally:
            self.log.close()


class RunSession(Session):
    """The session of a run directory made from a prepared plan (its header names the plan)."""

    def __init__(self, endpoints: dict[str, Endpoint], stage: Stage, prepared: Prepared, limit: int | None,
                 say: Callable[[str], None]) -> None:
        super().__init__(endpoints, stage)
        self.prepared = prepared
        self.limit = limit
        self.say = say

    def start_run(self, private: Callable[[RunHeader], RunHeader] | None = None, **extra: Any) -> RunLog:
        """Write the run's header (`extra`: details, ray, learners) and say the plan's notices.
        `private`: what the header must not carry in clear is taken out first (the study app's
        invitation codes)."""
        header = run_header(self.prepared, self.endpoints, self.limit, **extra)
        log = self.start(private(header) if private is not None else header)
        for notice in self.prepared.plan.notices:
            self.say(notice)
        return log


def endpoints_for(scenario: AnyScenario, backends: dict[str, BackendConfig], *, limits: Limits | None = None,
                  seed: int | None = None, cache_dirs: list[Path] | None = None, batch_dir: Path | None = None,
                  say: Callable[[str], None] | None = None, adaptive: bool = False) -> dict[str, Endpoint]:
    """A session's endpoints: the scenario's limits, retries and seed unless given (a Ray worker's share).
    `adaptive`: an adaptive concurrency ceiling per provider and model, up to the scenario's
    concurrency, where no limit is stated or sent. Not for Ray workers: each would learn the
    provider's whole limit for itself."""
    endpoints: dict[str, Endpoint] = make_endpoints(
        backends, scenario.limits if limits is None else limits, scenario.retry,
        scenario.seed if seed is None else seed, cache_dirs, batch_dir=batch_dir, say=say,
        concurrency=scenario.concurrency if adaptive else None)
    return endpoints


@asynccontextmanager
async def open_session(endpoints: dict[str, Endpoint], place: LogPlace, *, check: bool = True,
                       start_backends: bool = True) -> AsyncIterator[Session]:
    """A session in any log place (a Ray worker's shard file); see `run_session` for a run directory."""
    async with Stage(endpoints, place, check=check, start_backends=start_backends) as stage:
        yield Session(endpoints, stage)


@asynccontextmanager
async def run_session(prepared: Prepared, opts: RunOptions, say: Callable[[str], None], *,
                      backends: dict[str, BackendConfig] | None = None, cache_dirs: list[Path] | None = None,
                      batch_dir: Path | None = None, resume: bool | None = None, fsync: FsyncPolicy | None = None,
                      start_backends: bool = True, adaptive: bool = False) -> AsyncIterator[RunSession]:
    """plan → endpoints (every role's unless `backends`) → the run directory's stage, checked,
    locked and read back. The caller writes the header (`start_run`) once its own checks passed."""
    sc = prepared.scenario
    endpoints = endpoints_for(sc, prepared.experiment.backends() if backends is None else backends,
                              cache_dirs=cache_dirs, batch_dir=batch_dir, say=say, adaptive=adaptive)
    place = RunDir(prepared.out, opts.resume if resume is None else resume, sc.content_hash(),
                   fsync=fsync or sc.output.fsync, say=say)
    async with Stage(endpoints, place, check=opts.check_reachable, start_backends=start_backends) as stage:
        yield RunSession(endpoints, stage, prepared, opts.limit, say)


@contextmanager
def ticking(progress: Progress | None, source: Any, total: int, already: int) -> Iterator[None]:
    """The progress display, for as long as the block runs (`source.stats` is read by it)."""
    ticker = asyncio.create_task(progress(source, total, already)) if progress else None
    try:
        yield
    finally:
        if ticker:
            ticker.cancel()


def export_after(out: Path, error: str | None, learned: dict[str, dict[str, float]] | None = None
                 ) -> tuple[RunSummary, str | None]:
    """Export a run's log (with the limits its endpoints learned); a failed export (e.g. disk full)
    leaves the log as the truth."""
    try:
        return export_run(out, learned=learned), error
    except OSError as exc:
        return summarize(assemble(out)), f"{error + '; ' if error else ''}export failed: {exc}"


__all__ = ["Held", "Progress", "RunSession", "Session", "endpoints_for", "export_after", "open_session",
           "run_session", "ticking"]
