"""`run --dry-run`: requests, tokens and cost of a scenario without sending anything.

Each conversation is played through the real turn policy with placeholder replies of
`max_tokens` length, so prompt tokens are an upper-bound estimate (replies are usually
shorter) and completion tokens are the ceiling that `admission` limits charge.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from culturepark.engine.scheduler import Turn
from culturepark.runs.prepare import RunOptions, prepare
from culturepark.scenarios.endpoints import price_for
from culturepark.scenarios.schema import AnyScenario


def estimate(scenario_ref: str | Path | AnyScenario, opts: RunOptions | None = None) -> dict[str, Any]:
    opts = opts or RunOptions()
    prepared = prepare(scenario_ref, opts)
    policy = prepared.experiment.policy()
    configs = prepared.experiment.backends()
    per_role: dict[str, dict[str, Any]] = {}
    conversations = 0
    convs = prepared.plan.conversations()
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
        price = price_for(configs[role])
        agg["model"] = configs[role].model
        agg["cost_usd"] = round(price.cost(agg["prompt_tokens"], agg["completion_tokens"]), 4) if price else None
        cost = None if (cost is None or price is None) else cost + agg["cost_usd"]
    return {"dry_run": True, "conversations": conversations,
            "requests": sum(a["requests"] for a in per_role.values()),
            "prompt_tokens_est": sum(a["prompt_tokens"] for a in per_role.values()),
            "completion_tokens_max": sum(a["completion_tokens"] for a in per_role.values()),
            "cost_usd_max": round(cost, 4) if cost is not None else None, "by_role": per_role,
            "skipped_never_asked": len(prepared.plan.skipped)}


__all__ = ["estimate"]
