"""`run --dry-run --pilot N`: run N real conversations, then project the whole scenario from them.

Why a pilot: the static dry run (`runs.estimate`) can only bound tokens (every reply at
`max_tokens`) and cannot know how much of the input the provider's prompt cache will serve.
A pilot measures both on the real model: it runs every k-th conversation of the plan (spread
over cultures and items, k = size / N) into its own run directory, and scales its tokens,
cached tokens and requests by size / N. Cost is projected for every tier from the rates the
scenario prices at (`engine.pricing`: `Price.of`, cache reads and writes included, so Anthropic's 1.25x
write surcharge is projected as the full run pays it); wall time is the largest of what concurrency, RPM and
TPM allow. The full run's `summary.json` has the same fields, to compare estimate and outcome.
The pilot's answers are reusable: give its directory in the scenario's `cache_from`.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from culturepark.engine.export import assemble
from culturepark.engine.files import atomic_write
from culturepark.engine.pricing import Price
from culturepark.engine.records import Usage
from culturepark.runs.in_process import Progress, run_async
from culturepark.runs.prepare import RunOptions, prepare
from culturepark.scenarios.endpoints import price_for
from culturepark.scenarios.schema import AnyScenario

ESTIMATE_NAME = "estimate.json"


@dataclasses.dataclass
class RoleTokens:
    requests: int = 0
    usage: Usage = dataclasses.field(default_factory=Usage)  # prompt, completion, cache reads and writes

    def scaled(self, factor: float) -> RoleTokens:
        u = self.usage
        return RoleTokens(round(self.requests * factor), Usage(
            round(u.prompt_tokens * factor), round(u.completion_tokens * factor), round(u.cached_tokens * factor),
            round(u.cache_write_tokens * factor)))


# Projected costs shown: (name, tier, whether the prompt cache is used: reads at the cached rate, writes at
# the write rate).
COST_VIEWS = (("standard_uncached", "standard", False), ("standard", "standard", True), ("flex", "flex", True),
              ("batch", "batch", True))


def _tier_costs(by_role: dict[str, RoleTokens], prices: dict[str, Price | None]) -> dict[str, float | None]:
    """The projected tokens at each tier's rates (unknown, for every tier, if a role has no price);
    standard is also shown as if nothing were cached (nothing read, nothing written)."""
    known = {role: price for role in by_role if (price := prices.get(role)) is not None}
    if len(known) < len(by_role):
        return {name: None for name, _, _ in COST_VIEWS}

    def tokens(t: RoleTokens, cached: bool) -> Usage:
        return t.usage if cached else Usage(t.usage.prompt_tokens, t.usage.completion_tokens)
    return {name: round(sum(known[role].of(tokens(t, cached), tier).total for role, t in by_role.items()), 6)
            for name, tier, cached in COST_VIEWS}


def _scenario_tier(opts: RunOptions, prepared_backends: dict[str, Any]) -> str:
    if opts.batch_api:
        return "batch"
    tiers = {getattr(cfg, "service_tier", "standard") for cfg in prepared_backends.values()}
    return "flex" if tiers == {"flex"} else "standard"


async def pilot_async(scenario_ref: str | Path | AnyScenario, opts: RunOptions, n: int,
                      progress: Progress | None = None, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    prepared = prepare(scenario_ref, opts)
    total = prepared.plan.size if opts.limit is None else min(prepared.plan.size, opts.limit)
    every = max(1, total // n)
    pilot_opts = dataclasses.replace(opts, out=prepared.out, limit=min(n, total), every=every)
    result = await run_async(scenario_ref, pilot_opts, progress, say)
    convs = assemble(result.run_dir).conversations
    ran = [c for _, c in convs if c.status in ("done", "failed")]
    by_role: dict[str, RoleTokens] = defaultdict(RoleTokens)
    durations = []
    for conv in ran:
        durations.append(sum(t.latency_ms for t in conv.turns.values()) / 1000.0)
        for t in conv.turns.values():
            r = by_role[t.role]
            r.requests += 1
            r.usage = r.usage.plus(t.usage)
    factor = total / len(ran) if ran else 0.0
    projected = {role: t.scaled(factor) for role, t in by_role.items()}
    configs = prepared.experiment.backends()
    costs = _tier_costs(projected, {role: price_for(cfg) for role, cfg in configs.items()})
    sc = prepared.scenario
    requests = sum(t.requests for t in projected.values())
    prompt = sum(t.usage.prompt_tokens for t in projected.values())
    cached = sum(t.usage.cached_tokens for t in projected.values())
    written = sum(t.usage.cache_write_tokens for t in projected.values())
    completion = sum(t.usage.completion_tokens for t in projected.values())
    conversation_s = sum(durations) / len(durations) if durations else 0.0
    bounds = {"concurrency": math.ceil(total / sc.concurrency) * conversation_s,
              "rpm": requests / sc.limits.rpm * 60 if sc.limits.rpm else 0.0,
              "tpm": (prompt + completion) / sc.limits.tpm * 60 if sc.limits.tpm else 0.0}
    tier = _scenario_tier(opts, configs)
    estimate = {
        "dry_run": True, "pilot": {"conversations": len(ran), "every": every, "run_dir": str(result.run_dir),
                                   "done": result.summary.done, "failed": result.summary.failed,
                                   "cost_usd": result.summary.cost_usd, "duration_s": result.summary.duration_s},
        "projected": {
            "conversations": total, "turns": requests,
            "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion,
                       "cached_prompt": cached, "cache_write_prompt": written},
            "cache": {"hit_rate": round(cached / prompt, 4) if prompt else 0.0},
            "tier": tier, "cost_usd": costs.get(tier), "cost_usd_by_tier": costs,
            "duration_s": round(max(bounds.values()), 1) if tier != "batch" else None,
            "duration_bound": max(bounds, key=lambda k: bounds[k]) if tier != "batch" else "batch window (24 h)",
        },
        "reuse": f"cache_from: [{result.run_dir}] answers the pilot's conversations again for free",
    }
    atomic_write(Path(result.run_dir) / ESTIMATE_NAME, orjson.dumps(estimate, option=orjson.OPT_INDENT_2) + b"\n")
    return estimate


__all__ = ["ESTIMATE_NAME", "pilot_async"]
