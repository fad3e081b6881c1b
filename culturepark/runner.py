"""scenario → plan → endpoints → scheduler → log → export: the `run` stage end to end.

Everything that can be wrong with the input is checked before anything is
written (exit 2 at the CLI); once the header is written, the log is the truth
and the run can always be resumed.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from culturepark.agents.protocol import PlanError
from culturepark.agents.studies import backend_configs, build_study_plan, policy_for
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.export import assemble, export_run, summarize
from culturepark.engine.log import LOG_NAME, LogWriteError
from culturepark.engine.session import RunDir
from culturepark.engine.scheduler import RunStats, Scheduler, SchedulerConfig
from culturepark.errors import InputError
from culturepark.scenarios.factory import (check_reachable, close_endpoints, is_loopback, make_endpoints,
                                           start_backends)
from culturepark.paths import resolve_data_dir
from culturepark.scenarios.loader import ScenarioError, load_scenario, parse_scenario, resolve_path
from culturepark.scenarios.schema import AnyScenario, EducationScenario, Scenario


def package_version() -> str:
    try:
        return metadata.version("culturepark")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class RunOptions:
    out: Path | None = None
    resume: bool = False
    retry_failed: bool = False
    limit: int | None = None
    base_url: str | None = None
    model: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int | None = None
    data_dir: Path | None = None
    check_reachable: bool = True
    arms: list[str] | None = None  # education studies: NAME=MODEL_SPEC, replacing the scenario's arms


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    stats: RunStats
    notices: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0 all done; 1 some conversations failed, or the run stopped before the end."""
        s = self.summary
        return 0 if (not self.error and s["failed"] == 0 and s["incomplete"] == 0) else 1


def apply_overrides(scenario: AnyScenario, opts: RunOptions, source: str) -> AnyScenario:
    """CLI flags override the scenario; the result is validated like the file itself."""
    data = scenario.model_dump(mode="json", exclude_unset=False)
    if opts.arms and not isinstance(scenario, EducationScenario):
        raise InputError("--arm applies to education studies (kind: education) only")
    if isinstance(scenario, EducationScenario):
        if opts.arms:
            arms = []
            for arm in opts.arms:
                name, eq, spec = arm.partition("=")
                if not eq or not name or not spec:
                    raise InputError(f"--arm {arm!r}: expected NAME=MODEL_SPEC, e.g. tuned=local:gemma3-270m+lora:DIR")
                arms.append({"name": name, "tutor": spec})
            data["arms"] = arms
        if opts.model:
            raise InputError("--model does not apply to an education study (its arms name their tutors)")
        targets = [data["learner_backend"]]
        if opts.base_url:
            for arm in data["arms"]:
                arm["base_url"] = opts.base_url
                if arm["tutor"].startswith("local:"):
                    arm["tutor"] = "openai:" + arm["tutor"].removeprefix("local:").partition("+lora:")[0]
    else:
        targets = [data["backend"]] + [r["backend"] for r in data["roles"].values() if r.get("backend")]
    for b in targets:
        if opts.base_url:
            if b["provider"] == "local":
                b["provider"] = "openai"
                b["api"] = "completions"
            b["base_url"] = opts.base_url
        if opts.model:
            b["model"] = opts.model
    if opts.rpm is not None:
        data["limits"]["rpm"] = opts.rpm
    if opts.tpm is not None:
        data["limits"]["tpm"] = opts.tpm
    if opts.concurrency is not None:
        data["concurrency"] = opts.concurrency
    return parse_scenario(data, f"{source} (with command-line overrides)")


def default_out_dir(scenario: AnyScenario) -> Path:
    if scenario.output.dir:
        return Path(scenario.output.dir)
    return Path("runs") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare(scenario_ref: str | Path | AnyScenario, opts: RunOptions) -> tuple[AnyScenario, Any, Path]:
    """Load, override, resolve against the data. Raises InputError; writes nothing."""
    try:
        if isinstance(scenario_ref, (Scenario, EducationScenario)):
            scenario, source, base_dir = scenario_ref, "<scenario>", None
        else:
            path = resolve_path(scenario_ref)
            scenario, source, base_dir = load_scenario(path), str(path), path.parent
        scenario = apply_overrides(scenario, opts, source)
        data_dir = resolve_data_dir(opts.data_dir, scenario.data_dir, base_dir)
        plan = build_study_plan(scenario, data_dir, base_dir)
    except (ScenarioError, PlanError) as exc:
        raise InputError(str(exc)) from None
    out = Path(opts.out) if opts.out else default_out_dir(scenario)
    return scenario, plan, out


async def run_async(scenario_ref: str | Path | AnyScenario, opts: RunOptions | None = None,
                    progress: Callable[[Scheduler, int, int], Any] | None = None,
                    say: Callable[[str], None] | None = None) -> RunResult:
    opts = opts or RunOptions()
    say = say or (lambda _m: None)
    scenario, plan, out = prepare(scenario_ref, opts)
    configs = backend_configs(scenario)
    cache_dirs = [Path(p) for p in scenario.cache_from]
    for d in cache_dirs:
        if not (d / LOG_NAME).exists():
            raise InputError(f"cache_from: no {LOG_NAME} in {d}")
    endpoints = make_endpoints(configs, scenario.limits, scenario.retry, scenario.seed, cache_dirs)
    try:
        if opts.check_reachable:
            await check_reachable(endpoints)
        with RunDir(out, opts.resume, scenario.content_hash(), fsync=scenario.output.fsync, say=say) as rd:
            await start_backends(endpoints)
            log = rd.start(_header(scenario, plan, endpoints, opts))
            resume_state = rd.resume_state
            for notice in plan.notices:
                say(notice)
            total = plan.size if opts.limit is None else min(plan.size, opts.limit)
            already = len(resume_state.ended) if resume_state else 0
            convs = plan.conversations()
            if opts.limit is not None:
                convs = itertools.islice(convs, opts.limit)
            scheduler = Scheduler(policy_for(scenario), endpoints, log,
                                  SchedulerConfig(concurrency=scenario.concurrency,
                                                  budget_usd=scenario.budget_usd))
            ticker = asyncio.create_task(progress(scheduler, total, already)) if progress else None
            error = None
            try:
                stats = await scheduler.run(convs, resume_state, retry_failed=opts.retry_failed)
            except LogWriteError as exc:
                error = str(exc)
                stats = scheduler.stats
            finally:
                if ticker:
                    ticker.cancel()
                log.close()
            try:
                summary = export_run(out)
            except OSError as exc:  # e.g. the disk filled up: the log stays the truth, export later
                error = f"{error + '; ' if error else ''}export failed: {exc}"
                summary = summarize(assemble(out))
        summary["endpoints"] = endpoint_summary(endpoints)
        return RunResult(out, summary, stats, plan.notices, error)
    finally:
        await close_endpoints(endpoints)


def endpoint_summary(endpoints: dict[str, Endpoint]) -> list[dict[str, Any]]:
    """One entry per distinct endpoint (roles sharing a backend share its budget and counts)."""
    out: dict[int, dict[str, Any]] = {}
    for role, ep in endpoints.items():
        if id(ep) in out:
            out[id(ep)]["roles"].append(role)
            continue
        out[id(ep)] = {"roles": [role], "model": ep.backend.model, "requests": ep.stats.requests,
                       "rate_limited": ep.stats.rate_limited, "retries": ep.stats.retries,
                       "cache_hits": ep.stats.cache_hits, "errors": dict(ep.stats.errors)}
    return list(out.values())


def _header(scenario: AnyScenario, plan: Any, endpoints: dict[str, Endpoint], opts: RunOptions) -> dict:
    return {
        "type": "run", "format": 1, "run_name": scenario.name,
        "scenario": scenario.model_dump(mode="json"),  # RunDir.start adds scenario_hash
        "seed": scenario.seed,
        "backends": {role: ep.backend.describe() for role, ep in endpoints.items()},
        "package_version": package_version(), "started_at": time.time(),
        "planned_conversations": plan.size, "limit": opts.limit,
        "data_dir": str(plan.data.data_dir) if plan.data else None,
        "notices": plan.notices,
    }


def estimate(scenario_ref: str | Path | AnyScenario, opts: RunOptions | None = None) -> dict[str, Any]:
    """`--dry-run`: requests, tokens and cost of a scenario without sending anything.

    Each conversation is played through the real turn policy with placeholder replies of
    `max_tokens` length, so prompt tokens are an upper-bound estimate (replies are usually
    shorter) and completion tokens are the ceiling that `admission` limits charge.
    """
    from culturepark.engine.scheduler import Turn
    from culturepark.scenarios.factory import price_for

    opts = opts or RunOptions()
    scenario, plan, _ = prepare(scenario_ref, opts)
    policy = policy_for(scenario)
    configs = backend_configs(scenario)
    per_role: dict[str, dict[str, float]] = {}
    conversations = 0
    convs = plan.conversations()
    if opts.limit is not None:
        convs = itertools.islice(convs, opts.limit)
    for conv in convs:
        conversations += 1
        turns: list[Turn] = []
        while (nxt := policy.next_turn(conv, turns)) is not None:
            agg = per_role.setdefault(nxt.role, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
            agg["requests"] += 1
            agg["prompt_tokens"] += nxt.request.estimated_prompt_tokens()
            agg["completion_tokens"] += nxt.request.max_tokens
            filler = ("word " * nxt.request.max_tokens)[: nxt.request.max_tokens * 4]
            turns.append(Turn(len(turns), nxt.speaker, nxt.role, filler))
    cost: float | None = 0.0
    for role, agg in per_role.items():
        cfg = configs[role]
        price = price_for(cfg)
        agg["model"] = cfg.model  # type: ignore[assignment]
        agg["cost_usd"] = round(price.cost(int(agg["prompt_tokens"]), int(agg["completion_tokens"])), 4) if price else None  # type: ignore[assignment]
        cost = None if (cost is None or price is None) else cost + agg["cost_usd"]
    return {"dry_run": True, "conversations": conversations,
            "requests": int(sum(a["requests"] for a in per_role.values())),
            "prompt_tokens_est": int(sum(a["prompt_tokens"] for a in per_role.values())),
            "completion_tokens_max": int(sum(a["completion_tokens"] for a in per_role.values())),
            "cost_usd_max": round(cost, 4) if cost is not None else None, "by_role": per_role,
            "skipped_never_asked": len(plan.skipped)}


def run(scenario_ref: str | Path | AnyScenario, **kwargs: Any) -> RunResult:
    """Python API: `culturepark.run("quickstart", out="runs/q")`."""
    opts = RunOptions(**{k: (Path(v) if k in ("out", "data_dir") and v else v) for k, v in kwargs.items()})
    return asyncio.run(run_async(scenario_ref, opts))


__all__ = ["RunOptions", "RunResult", "run", "run_async", "prepare", "is_loopback"]
