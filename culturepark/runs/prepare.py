"""From what the user names (a scenario file or bundled name, flags) to a checked plan.

Everything that can be wrong with the input is found here, before anything is written
(exit 2 at the CLI). `run`, `run --ray`, `run --dry-run` and `study serve` all start here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from culturepark.agents.experiment import Experiment, ExperimentPlan, Overrides, experiment_for
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.export import EndpointCounts
from culturepark.engine.records import RunHeader
from culturepark.engine.stage import distinct
from culturepark.scenarios.data_dir import resolve_data_dir
from culturepark.scenarios.loader import load_scenario, parse_scenario, resolve_path
from culturepark.scenarios.schema import AnyScenario


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
    service_tier: str | None = None  # standard | flex: overrides every backend's service_tier
    every: int = 1  # take every k-th conversation of the plan (a pilot spread over cultures and items)
    batch_api: bool = False  # send each round of turns through the provider's Batch API (half price, slow)


@dataclass
class Prepared:
    """A scenario with the flags applied, its experiment, its plan and where it writes."""

    scenario: AnyScenario
    experiment: Experiment
    plan: ExperimentPlan
    out: Path


def apply_overrides(scenario: AnyScenario, opts: RunOptions, source: str) -> AnyScenario:
    """CLI flags override the scenario; the result is validated like the file itself."""
    data = scenario.model_dump(mode="json", exclude_unset=False)
    experiment_for(scenario).apply(data, Overrides(opts.base_url, opts.model, opts.arms, opts.service_tier))
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


def prepare(scenario_ref: str | Path | AnyScenario, opts: RunOptions) -> Prepared:
    """Load, override, resolve against the data. Raises InputError; writes nothing."""
    if isinstance(scenario_ref, BaseModel):
        scenario, source, base_dir = scenario_ref, "<scenario>", None
    else:
        path = resolve_path(scenario_ref)
        scenario, source, base_dir = load_scenario(path), str(path), path.parent
    scenario = apply_overrides(scenario, opts, source)
    experiment = experiment_for(scenario)
    plan = experiment.plan(resolve_data_dir(opts.data_dir, scenario.data_dir, base_dir), base_dir)
    return Prepared(scenario, experiment, plan, Path(opts.out) if opts.out else default_out_dir(scenario))


def run_header(prepared: Prepared, endpoints: dict[str, Endpoint], limit: int | None, **extra: Any) -> RunHeader:
    """The header of a run or study log (RunDir adds the content hash)."""
    sc, plan = prepared.scenario, prepared.plan
    return RunHeader(
        run_name=sc.name, scenario=sc.model_dump(mode="json"), seed=sc.seed,
        backends={role: ep.backend.describe() for role, ep in endpoints.items()},
        started_at=time.time(), planned_conversations=plan.size,
        limit=limit, data_dir=str(plan.data.data_dir) if plan.data else None, notices=plan.notices, **extra)


def endpoint_summary(endpoints: dict[str, Endpoint]) -> list[EndpointCounts]:
    """One entry per distinct endpoint (roles sharing a backend share its budget and counts)."""
    out = []
    for ep in distinct(endpoints):
        s = ep.stats
        out.append(EndpointCounts(roles=[r for r, e in endpoints.items() if e is ep], model=ep.backend.model,
                                  requests=s.requests, rate_limited=s.rate_limited, retries=s.retries,
                                  cache_hits=s.cache_hits, errors=dict(s.errors),
                                  learned_limits=dict(ep.limiter.learned),
                                  concurrency_ceiling=ep.ceiling.describe() if ep.ceiling else None))
    return out


__all__ = ["Prepared", "RunOptions", "apply_overrides", "endpoint_summary", "prepare",
           "run_header"]
