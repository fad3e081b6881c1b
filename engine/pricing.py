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
from typing import Literal, Protocol

Tier = Literal["standard", "flex", "batch"]
TIERS: tuple[Tier, ...] = ("standard", "flex", "batch")
DISCOUNTED_TIER_FACTOR = 0.5  # flex and batch, when a price names no rates of its own for them


class Billed(Protocol):
    """Tokens as a provider bills them (`records.Usage` is one): the whole prompt, and the parts of it
    read from and written to the prompt cache."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CostSplit:
    uncached_input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0
    cache_write: float = 0.0  # input written to the prompt cache (Anthropic bills it above input)

    @property
    def total(self) -> float:
        return self.uncached_input + self.cached_input + self.output + self.cache_write

    def __add__(self, other: CostSplit) -> CostSplit:
        return CostSplit(self.uncached_input + other.uncached_input, self.cached_input + other.cached_input,
                         self.output + other.output, self.cache_write + other.cache_write)


@dataclass(frozen=True, slots=True)
class Rates:
    """One tier's rates. `cached_input_per_1m` None: cached input is billed as input (no discount known);
    `cache_write_per_1m` None: input written to the prompt cache is billed as input (OpenAI, Gemini),
    where Anthropic bills it at 1.25 times input."""

    input_per_1m: float
    output_per_1m: float
    cached_input_per_1m: float | None = None
    cache_write_per_1m: float | None = None

    def split(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
              written_tokens: int = 0) -> CostSplit:
        """`prompt_tokens` is the whole prompt; `cached_tokens` (read from the cache) and `written_tokens`
        (written to it) are parts of it, the rest is plain input."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        written = min(max(written_tokens, 0), prompt_tokens - cached)
        cached_rate = self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m
        write_rate = self.input_per_1m if self.cache_write_per_1m is None else self.cache_write_per_1m
        return CostSplit((prompt_tokens - cached - written) * self.input_per_1m / 1e6, cached * cached_rate / 1e6,
                         completion_tokens * self.output_per_1m / 1e6, written * write_rate / 1e6)

    def scaled(self, factor: float) -> Rates:
        cached = None if self.cached_input_per_1m is None else self.cached_input_per_1m * factor
        write = None if self.cache_write_per_1m is None else self.cache_write_per_1m * factor
        return Rates(self.input_per_1m * factor, self.output_per_1m * factor, cached, write)


@dataclass(frozen=True, slots=True)
class Price:
    """Standard-tier rates, and the flex and batch tiers' (half of standard unless given)."""

    input_per_1m: float
    output_per_1m: float
    cached_input_per_1m: float | None = None
    flex: Rates | None = None
    batch: Rates | None = None
    cache_write_per_1m: float | None = None

    def rates(self, tier: str = "standard") -> Rates:
        standard = Rates(self.input_per_1m, self.output_per_1m, self.cached_input_per_1m, self.cache_write_per_1m)
        if tier == "standard":
            return standard
        own = self.flex if tier == "flex" else self.batch if tier == "batch" else None
        if own is None and tier not in TIERS:
            raise ValueError(f"unknown service tier {tier!r} (expected one of {', '.join(TIERS)})")
        return own or standard.scaled(DISCOUNTED_TIER_FACTOR)

    def split(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
              tier: str = "standard", written_tokens: int = 0) -> CostSplit:
        return self.rates(tier).split(prompt_tokens, completion_tokens, cached_tokens, written_tokens)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             tier: str = "standard", written_tokens: int = 0) -> float:
        return self.split(prompt_tokens, completion_tokens, cached_tokens, tier, written_tokens).total

    def of(self, tokens: Billed, tier: str = "standard") -> CostSplit:
        """What these tokens cost at the tier's rates, split by what was billed. The one way a cost is
        priced from tokens — turns, rejected replies, summaries, pilot projections, the bench's bill —
        so cache writes (Anthropic: 1.25 times input) are counted wherever cache reads are."""
        return self.split(tokens.prompt_tokens, tokens.completion_tokens, tokens.cached_tokens, tier,
                          tokens.cache_write_tokens)

    def describe(self) -> dict[str, dict[str, float | None]]:
        """Every tier's rates, for the run header: the log then says what its costs were priced at."""
        out: dict[str, dict[str, float | None]] = {}
        for tier in TIERS:
            r = self.rates(tier)
            out[tier] = {"input_per_1m": r.input_per_1m, "cached_input_per_1m": r.cached_input_per_1m,
                         "output_per_1m": r.output_per_1m}
            if r.cache_write_per_1m is not None:  # only where set: headers of other providers stay as they were
                out[tier]["cache_write_per_1m"] = r.cache_write_per_1m
        return out

    @classmethod
    def from_description(cls, described: dict[str, dict[str, float | None]]) -> Price:
        def rates(tier: str) -> Rates:
            r = described[tier]
            return Rates(float(r["input_per_1m"] or 0), float(r["output_per_1m"] or 0),
                         None if r.get("cached_input_per_1m") is None else float(r["cached_input_per_1m"] or 0),
                         None if r.get("cache_write_per_1m") is None else float(r["cache_write_per_1m"] or 0))
        std = rates("standard")
        return cls(std.input_per_1m, std.output_per_1m, std.cached_input_per_1m,
                   rates("flex") if "flex" in described else None, rates("batch") if "batch" in described else None,
                   std.cache_write_per_1m)


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
    # Anthropic: cache reads at 0.1 times input, cache writes (5-minute) at 1.25 times (`anthropic_price`)
    "claude-3-5-haiku-latest": Price(0.80, 4.00, 0.08, cache_write_per_1m=1.00),
    "claude-haiku-4-5": Price(1.00, 5.00, 0.10, cache_write_per_1m=1.25),
    "claude-sonnet-4-5": Price(3.00, 15.00, 0.30, cache_write_per_1m=3.75),
    "claude-sonnet-4-0": Price(3.00, 15.00, 0.30, cache_write_per_1m=3.75),
    "claude-opus-4-1": Price(15.00, 75.00, 1.50, cache_write_per_1m=18.75),
}

ANTHROPIC_CACHE_READ_FACTOR = 0.1  # of the input rate
ANTHROPIC_CACHE_WRITE_FACTOR = 1.25  # of the input rate, for the 5-minute cache


def anthropic_price(price: Price) -> Price:
    """A price for Anthropic's API with its cache rates filled in where the scenario left them out:
    reads at 0.1 and writes at 1.25 times input (a stated rate wins)."""
    cached = price.cached_input_per_1m
    write = price.cache_write_per_1m
    return Price(price.input_per_1m, price.output_per_1m,
                 price.input_per_1m * ANTHROPIC_CACHE_READ_FACTOR if cached is None else cached,
                 price.flex, price.batch,
                 price.input_per_1m * ANTHROPIC_CACHE_WRITE_FACTOR if write is None else write)


def lookup_price(model: str, overrides: dict[str, Price] | None = None) -> Price | None:
    if overrides and model in overrides:
        return overrides[model]
    return DEFAULT_PRICES.get(model)
