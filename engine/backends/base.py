"""The only interface the scheduler sees: `Request` in, `Completion` out."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

from culturepark.engine.pricing import Price
from culturepark.engine.records import Usage
from culturepark.engine.tokens import prompt_tokens


@dataclass(slots=True)
class Request:
    """One generation. `messages` for chat models, `prompt` (+ stop) for base models."""

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    stop: list[str] | None = None
    seed: int | None = None
    # The answer is one of these labels ("yes"/"no", "1".."5"): a backend that can read the model's
    # next-token scores ranks them in one forward pass instead of sampling text (the embedded model);
    # the others generate as usual and the caller parses the text.
    choices: tuple[str, ...] | None = None
    # With `choices`: also return the probability the model gives each of them at the answer position
    # (`Completion.label_probs`): the embedded model's label scores, `logprobs`/`top_logprobs` from an
    # OpenAI-compatible server. An answer *distribution* read in one request, not estimated from N samples.
    label_probs: bool = False
    # Never repeat a span of this many tokens from the prompt (a backend that can: the embedded model;
    # OpenAI-compatible servers have no such field). Keeps a small base model from copying the other
    # speaker's turn word for word, which the echo check would only reject and re-ask.
    no_repeat_ngram_size: int | None = None
    # How the request is served, not what it asks: neither is part of `key`.
    cache_key: str | None = None  # groups requests that share a prompt prefix (OpenAI's prompt_cache_key)
    service_tier: str | None = None  # None: the backend's own tier; "standard" when a flex request falls back

    def key(self, model: str) -> str:
        """Content hash: identical requests to the same model share it (cache, replay)."""
        fields: list[object] = [model, self.messages, self.prompt, self.max_tokens, self.temperature, self.stop,
                                self.seed]
        if self.choices:  # only when set: hashes of requests without them stay as they were
            fields.append(list(self.choices))
        if self.label_probs:
            fields.append("label_probs")
        if self.no_repeat_ngram_size:
            fields.append(["no_repeat_ngram_size", self.no_repeat_ngram_size])
        payload = orjson.dumps(fields)
        return hashlib.blake2b(payload, digest_size=12).hexdigest()

    def estimated_prompt_tokens(self) -> int:
        n: int = prompt_tokens(self.messages, self.prompt)
        return n

    @classmethod
    def instruction(cls, system: str, user: str, cue: str, rendering: str, max_tokens: int,
                    temperature: float, stop: list[str] | None = None, seed: int | None = None,
                    choices: tuple[str, ...] | None = None, label_probs: bool = False) -> Request:
        """One instruction for either kind of model: system + user messages for a chat model, or
        for a base model one completion prompt ending in `cue`, with `stop` (completion only)."""
        if rendering == "chat":
            return cls(messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                       max_tokens=max_tokens, temperature=temperature, seed=seed, choices=choices,
                       label_probs=label_probs)
        return cls(prompt=f"{system}\n\n{user}\n{cue}", max_tokens=max_tokens, temperature=temperature,
                   stop=stop, seed=seed, choices=choices, label_probs=label_probs)


@dataclass(slots=True)
class RateHeaders:
    """A provider's limits as its response headers state them (`backends.rate_headers`): left in
    the current window, the limit per minute, and seconds until the window is full again."""

    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    limit_requests: float | None = None
    limit_tokens: float | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str | None
    usage: Usage
    latency_ms: float = 0.0
    usage_reported: bool = True
    rate: RateHeaders | None = None
    attempts: int = 1
    cached: bool = False
    tier: str | None = None  # the service tier that served it, as the provider reports it (None: standard)
    temperature: float | None = None  # sampled at, when a re-ask raised it above the request's (else None)
    rejected: Usage | None = None  # replies rejected (and re-asked) before this one: billed all the same
    # asked with `Request.label_probs`: each choice's probability as the model gave it, not renormalised
    # (what they leave to 1 is mass on other tokens); None when the backend gave none
    label_probs: dict[str, float] | None = None


@runtime_checkable
class Backend(Protocol):
    """What every backend is and declares. The two capabilities are stated, not probed: a backend
    with `can_stream` also has `Streams.stream`; one with `checks_reachable` has
    `ChecksReachable.check_reachable` (a remote server asked once at a stage's start)."""

    name: str
    model: str
    price: Price | None
    can_stream: bool
    checks_reachable: bool

    async def start(self) -> None: ...

    async def complete(self, request: Request) -> Completion: ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What goes into the run header: never a key."""
        ...


class Streams(Protocol):
    """A backend with `can_stream`: the same completion, with the text so far given to `on_text`."""

    async def stream(self, request: Request, on_text: Callable[[str], None]) -> Completion: ...


class ChecksReachable(Protocol):
    """A backend with `checks_reachable`: raises an `InputError` when its server does not answer."""

    async def check_reachable(self) -> None: ...


@dataclass
class BackendInfo:
    kind: str
    model: str
    extra: dict[str, Any] = field(default_factory=dict)
