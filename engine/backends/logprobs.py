"""An answer's probabilities over its choices, read from an OpenAI-compatible server's `logprobs`.

Why: a distribution over an item's options estimated from N sampled answers carries sampling
noise and costs N requests; the server already knows the probability of each option at the
answer position. Chat completions return `logprobs.content[i].top_logprobs` (at most 20
alternatives per position); legacy completions `logprobs.top_logprobs[i]`, a token → logprob
mapping (OpenAI allows at most 5 there; vLLM and llama.cpp more). The answer position is the
first generated token that is not whitespace. A choice's probability is the summed probability
of the alternatives that spell it ("3" and " 3"); a choice outside the top K gets 0 — what the
choices leave to 1 is reported by the caller as mass outside the options, never hidden.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

TOP_LOGPROBS_CHAT = 20  # OpenAI's maximum for chat completions
TOP_LOGPROBS_COMPLETIONS = 5  # OpenAI's maximum for legacy completions


def request_fields(api: str) -> dict[str, Any]:
    """What a request body adds to get the alternatives at each position."""
    if api == "chat":
        return {"logprobs": True, "top_logprobs": TOP_LOGPROBS_CHAT}
    return {"logprobs": TOP_LOGPROBS_COMPLETIONS}


def _positions(choice: dict[str, Any], api: str) -> list[tuple[str, dict[str, float]]]:
    """(token, {alternative: logprob}) per generated position; [] when the body has none."""
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return []
    if api == "chat":
        out = []
        for pos in block.get("content") or []:
            alts = {str(a["token"]): float(a["logprob"]) for a in pos.get("top_logprobs") or []}
            out.append((str(pos.get("token", "")), alts or {str(pos.get("token", "")): float(pos["logprob"])}))
        return out
    tokens, tops = block.get("tokens") or [], block.get("top_logprobs") or []
    return [(str(t), {str(k): float(v) for k, v in (alts or {}).items()}) for t, alts in zip(tokens, tops)]


def label_probs(choice: dict[str, Any], labels: Sequence[str], api: str) -> dict[str, float] | None:
    """Each label's probability at the answer position (not renormalised); None when the server sent
    no logprobs (it does not support them, or ignored the request) or they cannot be read."""
    try:
        positions = _positions(choice, api)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    answer = next((alts for token, alts in positions if token.strip()), None)
    if answer is None:
        return None
    wanted = {label.strip().lower(): label for label in labels}
    probs = dict.fromkeys(labels, 0.0)
    for token, logprob in answer.items():
        label = wanted.get(token.strip().lower())
        if label is not None and math.isfinite(logprob):
            probs[label] += math.exp(logprob)
    return probs
