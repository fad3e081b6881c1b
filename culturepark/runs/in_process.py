"""scenario → plan → run session (endpoints → stage → scheduler → log) → export: `run` in one process.

Inputs are checked by `prepare` before anything is written (exit 2 at the CLI); once the
header is written, the log is the truth and the run can always be resumed.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturepark.agents.experiment import ExperimentPlan
from culturepark.engine.errors import InputError
from culturepark.engine.log import LOG_NAME
from culturepark.engine.scheduler import ConversationSpec, RunStats, SchedulerConfig
from culturepark.engine.summary import RunSummary, learned_by_model
from culturepark.runs.fork import Fork, resumed_fork_ids
from culturepark.runs.prepare import RunOptions, endpoint_summary, prepare
from culturepark.runs.session import Progress, export_after, run_session
from culturepark.scenarios.schema import AnyScenario

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


async def run_async(scenario_ref: str | Path | AnyScenario | Fork, opts: RunOptions | None = None,
                    progress: Progress | None = None, say: Callable[[str], None] | None = None) -> RunResult:
    """Run a scenario, or a fork of a run (`runs.fork.fork`), in one session."""
    opts = opts or RunOptions()
    say = say or (lambda _m: None)
    made = scenario_ref if isinstance(scenario_ref, Fork) else None
    prepared = scenario_ref.prepared if isinstance(scenario_ref, Fork) else prepare(scenario_ref, opts)
    scenario, plan, out = prepared.scenario, prepared.plan, prepared.out
    cache_dirs = [Path(p) for p in scenario.cache_from]
    for d in cache_dirs:
        if not (d / LOG_NAME).exists():
            raise InputError(f"cache_from: no {LOG_NAME} in {d}")
    ids = made.ids if made else (resumed_fork_ids(out) if opts.resume else None)
    total = -(-(plan.size if ids is None else len(ids)) // opts.every)
    total = total if opts.limit is None else min(total, opts.limit)
    async with run_session(prepared, opts, say, cache_dirs=cache_dirs,
                           batch_dir=out if opts.batch_api else None, adaptive=True) as session:
        details = {**({"every": opts.every} if opts.every > 1 else {}), **(made.details if made else {})}
        extra: dict[str, Any] = {"details": details} if details else {}
        session.start_run(**extra)
        if made:
            made.carry_into(session, _selection(plan, opts, ids))
        # a batch round holds the next turn of every live conversation: as many as one batch file takes
        concurrency = max(scenario.concurrency, min(total, BATCH_CONVERSATIONS)) if opts.batch_api else \
            scenario.concurrency
        held = await session.hold(prepared.experiment.policy(), _selection(plan, opts, ids),
                                  SchedulerConfig(concurrency=concurrency, budget_usd=scenario.budget_usd),
                                  retry_failed=opts.retry_failed, progress=progress, total=total)
        endpoints = endpoint_summary(session.endpoints)
        summary, error = export_after(out, held.error, learned_by_model(endpoints))
    summary.endpoints = endpoints
    return RunResult(out, summary, held.stats, plan.notices, error)


def _selection(plan: ExperimentPlan, opts: RunOptions, ids: frozenset[str] | None) -> Iterator[ConversationSpec]:
    """The plan's conversations this run holds: a fork's source's only, every k-th, at most `limit`."""
    convs: Iterator[ConversationSpec] = plan.conversations(None if ids is None else ids.__contains__)
    if opts.every > 1:
        convs = itertools.islice(convs, 0, None, opts.every)
    if opts.limit is not None:
        convs = itertools.islice(convs, opts.limit)
    return convs


def run(scenario_ref: str | Path | AnyScenario, **kwargs: Any) -> RunResult:
    """Python API: `culturepark.run("quickstart", out="runs/q")`."""
    values: dict[str, Any] = {k: (Path(v) if k in ("out", "data_dir") and v else v) for k, v in kwargs.items()}
    opts = RunOptions(**values)
    return asyncio.run(run_async(scenario_ref, opts))


__all__ = ["Progress", "RunOptions", "RunResult", "export_after", "run", "run_async"]
