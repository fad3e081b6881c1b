"""Price per model (USD per 1M tokens), per service tier. Unknown model → cost None, never 0.

Why three rates and three tiers: a conversation re-sends its whole history every turn, so
most input tokens are ones the provider has seen before and bills at the *cached-input*
rate (OpenAI: 25–50 % of input, 10 % on the newest models; Gemini: 25 %). The *flex* and
*batch* tiers (OpenAI, Gemini) bill every rate at half. A cost that ignores either is wrong
as soon as a provider caches or a cheaper tier is used, so a turn is priced from its usage
split (uncached input, cached input, output) at the rates of the tier that served it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Tier = Literal["standard", "flex", "batch"]
TIERS: tuple[Tier, ...] = ("standard", "flex", "batch")
DISCOUNTED_TIER_FACTOR = 0.5  # flex and batch, when a price names no rates of its own for them


@dataclass(frozen=True, slots=True)
class CostSplit:
    uncached_input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0

    @property
    def total(self) -> float:
        return self.uncached_input + self.cached_input + self.output

    def __add__(self, other: CostSplit) -> CostSplit:
        return CostSplit(self.uncached_input + other.uncached_input, self.cached_input + other.cached_input,
                         self.output + other.output)


@dataclass(frozen=True, slots=True)
class Rates:
    """One tier's rates. `cached_input_per_1m` None: cached input is billed as input (no discount known)."""

    input_per_1m: float
    output_per_1m: float
    cached_input_per_1m: float | None = None

    def split(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> CostSplit:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_rate = self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m
        return CostSplit((prompt_tokens - cached) * self.input_per_1m / 1e6, cached * cached_rate / 1e6,
                         completion_tokens * self.output_per_1m / 1e6)

    def scaled(self, factor: float) -> Rates:
        cached = None if self.cached_input_per_1m is None else self.cached_input_per_1m * factor
        return Rates(self.input_per_1m * factor, self.output_per_1m * factor, cached)


@dataclass(frozen=True, slots=True)
class Price:
    """Standard-tier rates, and the flex and batch tiers' (half of standard unless given)."""

    input_per_1m: float
    output_per_1m: float
    cached_input_per_1m: float | None = None
    flex: Rates | None = None
    batch: Rates | None = None

    def rates(self, tier: str = "standard") -> Rates:
        standard = Rates(self.input_per_1m, self.output_per_1m, self.cached_input_per_1m)
        if tier == "standard":
            return standard
        own = self.flex if tier == "flex" else self.batch if tier == "batch" else None
        if own is None and tier not in TIERS:
            raise ValueError(f"unknown service tier {tier!r} (expected one of {', '.join(TIERS)})")
        return own or standard.scaled(DISCOUNTED_TIER_FACTOR)

    def split(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
              tier: str = "standard") -> CostSplit:
        return self.rates(tier).split(prompt_tokens, completion_tokens, cached_tokens)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             tier: str = "standard") -> float:
        return self.split(prompt_tokens, completion_tokens, cached_tokens, tier).total

    def describe(self) -> dict[str, dict[str, float | None]]:
        """Every tier's rates, for the run header: the log then says what its costs were priced at."""
        out: dict[str, dict[str, float | None]] = {}
        for tier in TIERS:
            r = self.rates(tier)
            out[tier] = {"input_per_1m": r.input_per_1m, "cached_input_per_1m": r.cached_input_per_1m,
                         "output_per_1m": r.output_per_1m}
        return out

    @classmethod
    def from_description(cls, described: dict[str, dict[str, float | None]]) -> Price:
        def rates(tier: str) -> Rates:
            r = described[tier]
            return Rates(float(r["input_per_1m"] or 0), float(r["output_per_1m"] or 0),
                         None if r.get("cached_input_per_1m") is None else float(r["cached_input_per_1m"] or 0))
        std = rates("standard")
        return cls(std.input_per_1m, std.output_per_1m, std.cached_input_per_1m,
                   rates("flex") if "flex" in described else None, rates("batch") if "batch" in described else None)


# Public list prices (standard tier, cached input where the provider discounts it) at the time
# of writing; override per scenario (`backend.price`). gpt-3.5-turbo and gpt-4/-turbo have no
# prompt caching. Flex and batch are half of these unless a scenario's price says otherwise.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-3.5-turbo-0125": Price(0.50, 1.50),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gemini-2.0-flash": Price(0.10, 0.40, 0.025),
    "gemini-2.5-flash": Price(0.30, 2.50, 0.075),
}


def lookup_price(model: str, overrides: dict[str, Price] | None = None) -> Price | None:
    if overrides and model in overrides:
        return overrides[model]
    return DEFAULT_PRICES.get(model)
