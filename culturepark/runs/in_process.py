"""scenario → plan → endpoints → scheduler → log → export: the `run` stage in one process.

Inputs are checked by `prepare` before anything is written (exit 2 at the CLI); once the
header is written, the log is the truth and the run can always be resumed.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturepark.engine.errors import AccountError, InputError, LogWriteError
from culturepark.engine.export import RunSummary, assemble, export_run, summarize
from culturepark.engine.log import LOG_NAME
from culturepark.engine.scheduler import RunStats, Scheduler, SchedulerConfig
from culturepark.engine.stage import Stage
from culturepark.runs.prepare import RunOptions, endpoint_summary, prepare, run_header
from culturepark.scenarios.endpoints import make_endpoints
from culturepark.scenarios.schema import AnyScenario

Progress = Callable[[Any, int, int], Any]
BATCH_CONVERSATIONS = 50_000  # live conversations in a `--batch-api` run (one batch file's request limit)


@dataclass
class RunResult:
    run_dir: Path
    summary: RunSummary
    stats: RunStats
    notices: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0 all done; 1 some conversations failed, or the run stopped before the end."""
        s = self.summary
        return 0 if (not self.error and s.failed == 0 and s.incomplete == 0) else 1


def export_after(out: Path, error: str | None) -> tuple[RunSummary, str | None]:
    """Export a run's log; a failed export (e.g. disk full) leaves the log as the truth."""
    try:
        return export_run(out), error
    except OSError as exc:
        return summarize(assemble(out)), f"{error + '; ' if error else ''}export failed: {exc}"


async def run_async(scenario_ref: str | Path | AnyScenario, opts: RunOptions | None = None,
                    progress: Progress | None = None, say: Callable[[str], None] | None = None) -> RunResult:
    opts = opts or RunOptions()
    say = say or (lambda _m: None)
    prepared = prepare(scenario_ref, opts)
    scenario, plan, out = prepared.scenario, prepared.plan, prepared.out
    cache_dirs = [Path(p) for p in scenario.cache_from]
    for d in cache_dirs:
        if not (d / LOG_NAME).exists():
            raise InputError(f"cache_from: no {LOG_NAME} in {d}")
    endpoints = make_endpoints(prepared.experiment.backends(), scenario.limits, scenario.retry, scenario.seed,
                               cache_dirs, batch_dir=out if opts.batch_api else None, say=say,
                               concurrency=scenario.concurrency)
    async with Stage.in_dir(endpoints, out, opts.resume, scenario.content_hash(), fsync=scenario.output.fsync,
                            say=say, check=opts.check_reachable) as stage:
        extra = {"details": {"every": opts.every}} if opts.every > 1 else {}
        log = stage.start(run_header(prepared, endpoints, opts.limit, **extra))
        for notice in plan.notices:
            say(notice)
        total = -(-plan.size // opts.every)
        total = total if opts.limit is None else min(total, opts.limit)
        already = len(stage.resume_state.ended) if stage.resume_state else 0
        convs = plan.conversations()
        if opts.every > 1:
            convs = itertools.islice(convs, 0, None, opts.every)
        if opts.limit is not None:
            convs = itertools.islice(convs, opts.limit)
        # a batch round holds the next turn of every live conversation: as many as one batch file takes
        concurrency = max(scenario.concurrency, min(total, BATCH_CONVERSATIONS)) if opts.batch_api else \
            scenario.concurrency
        scheduler = Scheduler(prepared.experiment.policy(), endpoints, log,
                              SchedulerConfig(concurrency=concurrency, budget_usd=scenario.budget_usd))
        ticker = asyncio.create_task(progress(scheduler, total, already)) if progress else None
        error = None
        try:
            stats = await scheduler.run(convs, stage.resume_state, retry_failed=opts.retry_failed)
        except (LogWriteError, AccountError) as exc:
            error, stats = str(exc), scheduler.stats
        finally:
            if ticker:
                ticker.cancel()
            log.close()
        summary, error = export_after(out, error)
    summary.endpoints = endpoint_summary(endpoints)
    return RunResult(out, summary, stats, plan.notices, error)


def run(scenario_ref: str | Path | AnyScenario, **kwargs: Any) -> RunResult:
    """Python API: `culturepark.run("quickstart", out="runs/q")`."""
    opts = RunOptions(**{k: (Path(v) if k in ("out", "data_dir") and v else v) for k, v in kwargs.items()})
    return asyncio.run(run_async(scenario_ref, opts))


__all__ = ["RunOptions", "RunResult", "export_after", "run", "run_async"]
