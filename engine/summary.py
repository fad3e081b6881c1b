"""`summary.json`: a run's counts, tokens, cost and cache use, added up one conversation at a time.

`Tally` is fed by whoever reads the conversations (the export's streaming pass, `report`, a
failed export's fallback), so a run of any size is summed in constant memory. Costs are the ones
the log recorded for each turn; the split of the cost by what was billed uses the rates the run
header recorded, so a summary does not change when a price table does.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from culturepark.engine.assembly import Assembled, AssembledConversation
from culturepark.engine.pricing import CostSplit, Price
from culturepark.engine.records import RunHeader, TurnRecord, Usage

SUMMARY_NAME = "summary.json"


class TokenCounts(BaseModel):
    prompt: int = 0
    completion: int = 0
    total: int = 0
    cached_prompt: int = 0  # the part of `prompt` served from the provider's prompt cache
    cache_write_prompt: int = 0  # the part of `prompt` written to it (Anthropic: billed above input)


class CacheCounts(BaseModel):
    """How much of the input the provider's prompt cache served: as a share of prompt tokens,
    overall and by turn index (a conversation's history grows, so later turns should hit more),
    and the turns that had any cached tokens."""

    hit_rate: float = 0.0
    turns_with_hits: int = 0
    hit_rate_by_turn: dict[int, float] = Field(default_factory=dict)


class CostSplitUSD(BaseModel):
    uncached_input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0
    cache_write_input: float = 0.0


class EndpointCounts(BaseModel):
    """One distinct endpoint's request counts (roles sharing a backend share one entry)."""

    roles: list[str]
    model: str
    requests: int
    rate_limited: int
    retries: int
    cache_hits: int
    errors: dict[str, int]
    # limits nobody stated, as the provider's headers gave them ("rpm"/"tpm" per minute; last seen)
    learned_limits: dict[str, float] = Field(default_factory=dict)
    # the adaptive ceiling on requests in flight (maximum, final, lowest, decreases); None: none
    concurrency_ceiling: dict[str, float] | None = None


class RunSummary(BaseModel):
    """`summary.json`, and what `run --json` prints (with `endpoints`, and `ray` for a Ray run)."""

    model_config = ConfigDict(extra="forbid")
    run_name: str | None = None
    scenario_hash: str | None = None
    conversations: int = 0
    done: int = 0
    failed: int = 0
    incomplete: int = 0
    withdrawn: int = 0  # study participants who withdrew (their rows carry no turns)
    turns: int = 0
    cached_turns: int = 0
    tokens: TokenCounts = TokenCounts()
    cost_usd: float | None = None  # None when some turn's price is unknown (never a silent 0)
    cost_usd_known_part: float = 0.0
    # replies billed but rejected by validation (an echo, an unparseable answer) and re-asked: part of
    # cost_usd; the share is of cost_usd (None: unknown)
    rejected_tokens: int = 0
    rejected_cost_usd: float | None = 0.0
    rejected_cost_share: float | None = 0.0
    # cost_usd split by what was billed, at the rates the run header records (None: some rates unknown)
    cost_split_usd: CostSplitUSD | None = None
    cache: CacheCounts = CacheCounts()
    turns_by_tier: dict[str, int] = Field(default_factory=dict)  # standard, flex, batch
    duration_s: float | None = None
    failures_by_reason: dict[str, int] = Field(default_factory=dict)
    duplicate_turns_dropped: int = 0
    stops: list[str] = Field(default_factory=list)
    endpoints: list[EndpointCounts] | None = None  # known to the process that ran it, not to the log
    # limits nobody stated that the provider's headers gave (model → "rpm"/"tpm" per minute, last seen): also
    # known only to the process that ran, so a later export from the log keeps the previous summary's
    learned_limits: dict[str, dict[str, float]] = Field(default_factory=dict)
    ray: dict[str, Any] | None = None  # `run --ray`: workers, restarts, counts per shard

    def to_json(self) -> dict[str, Any]:
        """The JSON object, without the parts this summary does not have (a plain export has no endpoints)."""
        return self.model_dump(mode="json", exclude={k for k in ("endpoints", "ray") if getattr(self, k) is None})


def learned_by_model(endpoints: list[EndpointCounts]) -> dict[str, dict[str, float]]:
    """The limits each model's endpoints learned from the provider's headers (endpoints of one model
    share the provider's limits; the last one read wins)."""
    out: dict[str, dict[str, float]] = {}
    for ep in endpoints:
        if ep.learned_limits:
            out.setdefault(ep.model, {}).update(ep.learned_limits)
    return out


def header_prices(header: RunHeader | None) -> dict[str, Price]:
    """Each role's rates as its run header recorded them (runs before rates were recorded: none)."""
    prices = {}
    for role, described in (header.backends if header else {}).items():
        if isinstance(described.get("price"), dict):
            prices[role] = Price.from_description(described["price"])
    return prices


class Tally:
    """Counts for `summary.json`, added up one conversation at a time (any size of run)."""

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.prompt = self.completion = self.turns = self.cached = self.cached_prompt = self.turns_hit = 0
        self.written_prompt = 0
        self.cost = 0.0
        self.cost_known = True
        self.prices = prices or {}
        self.costed_roles: set[str] = set()  # roles with a known cost: the split needs their rates
        self.billed: dict[tuple[str, str], Usage] = defaultdict(Usage)  # (role, tier) → tokens billed
        self.by_turn: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # index → [prompt, cached]
        self.tiers: Counter[str] = Counter()
        self.rejected_tokens = 0
        self.rejected_cost = 0.0

    def add(self, conv: AssembledConversation) -> None:
        self.statuses[conv.status] += 1
        if conv.end and conv.end.status == "failed":
            self.failures[conv.end.reason or "unknown"] += 1
            if conv.end.rejected is not None:
                self.add_rejected(conv.end.rejected, conv.end.rejected_cost_usd, conv.end.role or "", "standard")
        for t in conv.turns.values():
            self.add_turn(t)

    def add_rejected(self, u: Usage, cost: float | None, role: str, tier: str) -> None:
        """Replies billed but rejected and re-asked: in the bill (cost, split), not in the turns' tokens."""
        self.rejected_tokens += u.total_tokens
        if cost is None:
            self.cost_known = False
        else:
            self.cost += cost
            self.rejected_cost += cost
            self.costed_roles.add(role)
        self.billed[(role, tier)] = self.billed[(role, tier)].plus(u)

    def add_turn(self, t: TurnRecord) -> None:
        u = t.usage
        self.turns += 1
        self.prompt += u.prompt_tokens
        self.completion += u.completion_tokens
        self.cached += t.cached
        self.cached_prompt += u.cached_tokens
        self.written_prompt += u.cache_write_tokens
        self.turns_hit += u.cached_tokens > 0
        at = self.by_turn[t.index]
        at[0] += u.prompt_tokens
        at[1] += u.cached_tokens
        tier = t.tier or "standard"
        self.tiers[tier] += 1
        if t.rejected is not None:
            self.add_rejected(t.rejected, t.rejected_cost_usd, t.role, tier)
        if t.cost_usd is None:
            self.cost_known = False
        else:
            self.cost += t.cost_usd
            self.costed_roles.add(t.role)
        if not t.cached:  # a turn answered from an earlier run's log was not billed
            self.billed[(t.role, tier)] = self.billed[(t.role, tier)].plus(u)

    def cost_split(self) -> CostSplitUSD | None:
        """`cost_usd` split by what was billed, from the tokens per role and tier at the header's rates
        (prices are linear, so the sum of the turns' splits is the split of their sums)."""
        if not self.cost_known or any(role not in self.prices for role in self.costed_roles):
            return None
        total = CostSplit()
        for (role, tier), billed in self.billed.items():
            if role in self.prices:
                total = total + self.prices[role].of(billed, tier)
        return CostSplitUSD(uncached_input=round(total.uncached_input, 6), cached_input=round(total.cached_input, 6),
                            output=round(total.output, 6), cache_write_input=round(total.cache_write, 6))

    def cache_counts(self) -> CacheCounts:
        return CacheCounts(
            hit_rate=round(self.cached_prompt / self.prompt, 4) if self.prompt else 0.0, turns_with_hits=self.turns_hit,
            hit_rate_by_turn={i: round(c / p, 4) if p else 0.0 for i, (p, c) in sorted(self.by_turn.items())})

    def summary(self, header: RunHeader | None, duplicates: int, stops: list[str],
                last_t: float | None) -> RunSummary:
        started = header.started_at if header else None
        return RunSummary(
            run_name=header.run_name if header else None, scenario_hash=header.scenario_hash if header else None,
            conversations=sum(self.statuses.values()), done=self.statuses["done"], failed=self.statuses["failed"],
            incomplete=self.statuses["incomplete"], withdrawn=self.statuses["withdrawn"], turns=self.turns,
            cached_turns=self.cached,
            tokens=TokenCounts(prompt=self.prompt, completion=self.completion, total=self.prompt + self.completion,
                               cached_prompt=self.cached_prompt, cache_write_prompt=self.written_prompt),
            cost_usd=round(self.cost, 6) if self.cost_known else None, cost_usd_known_part=round(self.cost, 6),
            rejected_tokens=self.rejected_tokens,
            rejected_cost_usd=round(self.rejected_cost, 6) if self.cost_known else None,
            rejected_cost_share=(round(self.rejected_cost / self.cost, 4) if self.cost else 0.0)
            if self.cost_known else None,
            cost_split_usd=self.cost_split(),
            cache=self.cache_counts(), turns_by_tier=dict(self.tiers),
            duration_s=round(last_t - started, 3) if (last_t and started) else None,
            failures_by_reason=dict(self.failures), duplicate_turns_dropped=duplicates, stops=stops)


def summarize(assembled: Assembled) -> RunSummary:
    tally = Tally(header_prices(assembled.header))
    for _, conv in assembled.conversations:
        tally.add(conv)
    return tally.summary(assembled.header, assembled.duplicate_turns, assembled.stop_reasons, assembled.last_t)


__all__ = ["SUMMARY_NAME", "CacheCounts", "CostSplitUSD", "EndpointCounts", "RunSummary", "Tally", "TokenCounts",
           "header_prices", "learned_by_model", "summarize"]
