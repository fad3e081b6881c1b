"""The simulator's settings, apart from the server so that `culturepark sim-server`'s flags (derived
from `SimConfig`) are built without importing aiohttp."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FaultKind = Literal["status", "slow", "reset", "truncated", "malformed", "empty",
                    "length_empty", "bad_usage", "revoked_key", "unknown_model", "quota_exhausted",
                    "overloaded"]  # overloaded: Anthropic's 529 (on /v1/messages; elsewhere no fault)


class Fault(BaseModel):
    """One injectable failure. `rate` is the chance per request; `times` caps how often it fires."""

    model_config = ConfigDict(extra="forbid")
    kind: FaultKind
    rate: float = Field(1.0, ge=0, le=1)
    times: int | None = None
    after: int = Field(0, ge=0)  # requests answered normally before the fault starts (mid-run faults)
    status: int = 500
    retry_after: float | None = None
    delay_s: float = 5.0


class ScriptRule(BaseModel):
    """The first rule whose `pattern` is found in the last user message (or prompt), and whose `model`
    regex (when given) matches the requested model, supplies the reply: one server can play a base
    model and its fine-tune differently."""

    model_config = ConfigDict(extra="forbid")
    pattern: str
    reply: str | None = None  # required unless `distribution` is given
    model: str | None = None
    # the reply is one of these answers, drawn with these probabilities (scaled by the request's temperature,
    # the most probable at 0; seeded by the request), and `logprobs` report them as the answer's first token's
    # alternatives: a model whose answer distribution is known, for checking distributions read from
    # probabilities against distributions from samples
    distribution: dict[str, float] | None = None

    @model_validator(mode="after")
    def _answers(self) -> ScriptRule:
        if self.reply is None and self.distribution is None:
            raise ValueError("a script rule needs a reply or a distribution")
        return self


class SimConfig(BaseModel):
    """The simulated provider; `culturepark sim-server`'s flags are derived from the described fields."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="random seed (replies, latency, faults)")
    rpm: float | None = Field(None, gt=0, description="the simulated provider's requests per minute (429 past it)")
    tpm: float | None = Field(None, gt=0, description="the simulated provider's tokens per minute (429 past it)")
    window_s: float = Field(1.0, gt=0, description="the rate limits' window in seconds: 1 (as providers enforce), "
                                                   "60 for per-minute buckets")
    start_empty: bool = Field(False, description="the windows start with no credit (some servers' per-minute "
                                                 "buckets)")
    charge: Literal["admission", "usage"] = Field(
        "admission", description="tokens counted against tpm: the request's estimate, or the reply's usage")
    latency_ms: float = Field(0.0, ge=0, description="latency of every reply")
    jitter_ms: float = Field(0.0, ge=0, description="random extra latency, up to this much")
    fail_rate: float = Field(0.0, ge=0, le=1, description="share of requests answered with a 500")
    min_reply_tokens: int = 12
    max_reply_tokens: int = 60
    rate_limit_headers: bool = True
    logprobs: bool = Field(True, description="answer `logprobs`/`top_logprobs` when a request asks (off: a server "
                                             "that returns none)")
    script: list[ScriptRule] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    models: list[str] = Field(default_factory=lambda: ["sim-model"])
    finetune_polls: int = Field(6, ge=1, description="job polls from running to done")
    finetune_fail: bool = Field(False, description="fine-tuning jobs end failed")
    stream_chunk_ms: float = Field(0.0, ge=0, description="pause between chunks of a streamed reply")
    # OpenAI's prompt caching rules (testing/cache_rules.py): cached_tokens in usage
    prompt_cache: bool = Field(False, description="cache prompt prefixes by OpenAI's rules (cached_tokens in usage)")
    prompt_cache_min_tokens: int = Field(1024, ge=1, description="prompts shorter than this are not cached "
                                                                   "(OpenAI's and Anthropic's minimum: 1,024)")
    prompt_cache_key_rpm: float = Field(15.0, gt=0)
    # `service_tier: "flex"`: slower by this factor, and refused (429 resource unavailable) at this rate
    flex_latency_factor: float = Field(3.0, ge=1, description="flex requests are this much slower")
    flex_unavailable_rate: float = Field(
        0.0, ge=0, le=1, description='share of service_tier "flex" requests refused with 429 resource unavailable')
    # /v1/batches: a batch is done this long after it was created; lines fail, batches expire at these rates
    batch_delay_s: float = Field(1.0, ge=0, description="a batch is done this long after creation")
    batch_line_fail_rate: float = Field(0.0, ge=0, le=1, description="share of a batch's lines that fail")
    batch_expire_rate: float = Field(0.0, ge=0, le=1, description="share of batches that expire")
    # /v1/messages (Anthropic's mode) keeps a bill in dollars at these rates, with Anthropic's cache rates
    # (reads 0.1, writes 1.25 times input): the figure a client's recorded cost is checked against
    price_input_per_1m: float = Field(3.0, ge=0)
    price_output_per_1m: float = Field(15.0, ge=0)
