"""The simulator's Anthropic mode: `POST /v1/messages` as Anthropic's Messages API answers it.

The same server, limits, latency, faults and replies as the OpenAI routes (`SimServer`), with what
is Anthropic's own: its request rules (an `anthropic-version` header, alternating turns that open
with the user, temperature at most 1, stop sequences not of whitespace only), its prompt cache
(`BreakpointCacheSim`: prefixes up to `cache_control` breakpoints, from 1,024 tokens, written then
read), its usage block (`input_tokens` plain, `cache_creation_input_tokens`,
`cache_read_input_tokens`), its `anthropic-ratelimit-*` headers, its error bodies (`{"type":
"error", "error": {"type": ..., "message": ...}}`, 529 `overloaded_error`) and a bill in dollars at
its rates: cache reads 0.1 and writes 1.25 times input (`SimStats.bill_usd`), which a client's
recorded cost is checked against.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from culturepark.engine.tokens import approx_tokens
from culturepark.testing.cache_rules import CHARS_PER_TOKEN, BreakpointCacheSim

if TYPE_CHECKING:
    from culturepark.testing.sim_config import Fault
    from culturepark.testing.simulator import SimServer

CACHE_READ_FACTOR = 0.1
CACHE_WRITE_FACTOR = 1.25

# Account-level refusals as Anthropic words them: (status, error type, message)
ACCOUNT_FAULTS: dict[str, tuple[int, str, str]] = {
    "revoked_key": (401, "authentication_error", "invalid x-api-key"),
    "unknown_model": (404, "not_found_error", "model: {model}"),
    "quota_exhausted": (400, "invalid_request_error",
                        "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
                        "Billing to upgrade or purchase credits."),
}
STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None,
                    kind: str | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": kind or STATUS_TYPES.get(status, "api_error"), "message": message}}
    return web.Response(status=status, headers=headers, body=orjson.dumps(body), content_type="application/json")


@dataclass(slots=True)
class AskedMessages:
    """A Messages API request as the simulator reads it: its blocks in order (canonical text, marked
    as a breakpoint), the turns flattened to text (for replies) and the whole prompt's tokens."""

    model: str
    max_tokens: int
    flat: list[dict[str, str]]
    blocks: list[tuple[bytes, bool]]
    prompt_tokens: int
    stops: list[str]


def _texts(content: Any) -> list[tuple[str, bool]]:
    """A content (a string or a list of text blocks) as (text, breakpoint) pairs."""
    if isinstance(content, str):
        return [(content, False)]
    if not isinstance(content, list):
        raise ValueError("content must be a string or a list of blocks")
    out = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise ValueError("only text blocks are supported")
        if not block["text"]:
            raise ValueError("text content blocks must be non-empty")
        out.append((block["text"], isinstance(block.get("cache_control"), dict)))
    return out


def parse_messages(body: Any) -> AskedMessages:
    """The fields of a /v1/messages body, checked by the API's rules; ValueError with its message if not."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise ValueError("max_tokens: field required")
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 1:
        raise ValueError("temperature: must be between 0 and 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: at least one message is required")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or any(not isinstance(s, str) or not s.strip() for s in stops):
        raise ValueError("stop_sequences: each stop sequence must contain non-whitespace")
    blocks: list[tuple[bytes, bool]] = []
    flat: list[dict[str, str]] = []
    system = body.get("system")
    if system:
        parts = _texts(system)
        blocks += [(f"system\x00{t}\x01".encode(), mark) for t, mark in parts]
        flat.append({"role": "system", "content": "".join(t for t, _ in parts)})
    previous = None
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise ValueError(f"messages.{i}.role: must be user or assistant")
        if i == 0 and role != "user":
            raise ValueError("messages: first message must use the user role")
        if role == previous:
            raise ValueError("messages: roles must alternate between user and assistant")
        previous = role
        parts = _texts(m.get("content"))
        blocks += [(f"{role}\x00{t}\x01".encode(), mark) for t, mark in parts]
        flat.append({"role": role, "content": "".join(t for t, _ in parts)})
    length = sum(len(text) for text, _ in blocks)
    return AskedMessages(str(body.get("model", "sim-model")), body["max_tokens"], flat, blocks,
                         math.ceil(length / CHARS_PER_TOKEN), stops)


def message_body(message_id: str, model: str, text: str, stop_reason: str, stop_sequence: str | None,
                 usage: dict[str, Any]) -> dict[str, Any]:
    """A `message` object as /v1/messages answers it (and a succeeded batch result carries it)."""
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}] if text else [], "stop_reason": stop_reason,
            "stop_sequence": stop_sequence, "usage": usage}


class MessagesSim:
    def __init__(self, sim: SimServer) -> None:
        self.sim = sim
        self.cache = BreakpointCacheSim(min_tokens=sim.config.prompt_cache_min_tokens)

    def limit_headers(self) -> dict[str, str]:
        """`anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`, the reset as an RFC 3339 time."""
        sim = self.sim
        if not sim.config.rate_limit_headers:
            return {}
        h: dict[str, str] = {}
        now = time.time()
        for name, bucket, limit in (("requests", sim._req_bucket, sim.config.rpm),
                                    ("tokens", sim._tok_bucket, sim.config.tpm)):
            if bucket is not None:
                full_in = (bucket.capacity - bucket.level) / bucket.rate
                h[f"anthropic-ratelimit-{name}-limit"] = str(int(limit or 0))
                h[f"anthropic-ratelimit-{name}-remaining"] = str(max(0, int(bucket.level)))
                h[f"anthropic-ratelimit-{name}-reset"] = datetime.fromtimestamp(
                    now + full_in, UTC).isoformat().replace("+00:00", "Z")
        return h

    def fault_response(self, fault: Fault, model: str) -> web.Response | None:
        """An injected failure in Anthropic's shape (None: a fault applied to a normal body or none)."""
        if fault.kind in ACCOUNT_FAULTS:
            status, kind, message = ACCOUNT_FAULTS[fault.kind]
            return anthropic_error(status, message.format(model=model), kind=kind)
        if fault.kind == "overloaded":
            return anthropic_error(529, "Overloaded")
        if fault.kind == "status":
            headers = {"retry-after": str(fault.retry_after)} if fault.retry_after is not None else None
            if fault.status == 429:
                self.sim.stats.rate_limited += 1
            return anthropic_error(fault.status, f"injected {fault.status}", headers)
        return None

    async def messages(self, request: web.Request) -> web.StreamResponse:
        sim, st = self.sim, self.sim.stats
        st.requests += 1
        st.by_path["messages"] = st.by_path.get("messages", 0) + 1
        if not request.headers.get("anthropic-version"):
            st.failed += 1
            return anthropic_error(400, "anthropic-version: header is required")
        try:
            asked = parse_messages(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            st.failed += 1
            return anthropic_error(400, str(exc) or "invalid request body")
        charge = asked.prompt_tokens + (asked.max_tokens if sim.config.charge == "admission" else 0)
        refused, fault = await sim._gate(request, charge, anthropic=self, model=asked.model)
        if refused is not None:
            return refused
        text, stop_reason, stop_sequence, usage = self.answer(asked, "standard")
        if fault is not None and fault.kind in ("empty", "length_empty"):
            text, stop_reason = "", ("max_tokens" if fault.kind == "length_empty" else "end_turn")
        elif fault is not None and fault.kind == "bad_usage":
            usage = {"input_tokens": -1, "output_tokens": "many"}
        if sim.config.charge == "usage" and sim._tok_bucket is not None:
            sim._tok_bucket.level -= approx_tokens(text)
        st.ok += 1
        body = message_body(f"msg_sim{st.requests}", asked.model, text, stop_reason, stop_sequence, usage)
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=self.limit_headers())

    def answer(self, asked: AskedMessages, tier: str) -> tuple[str, str, str | None, dict[str, Any]]:
        """The reply, its stop reason and sequence, and its usage; the request is billed."""
        sim = self.sim
        text, finish = sim.reply(asked.model, asked.flat, None, asked.max_tokens)
        stop_sequence = None
        cut = min(((i, s) for s in asked.stops if (i := text.find(s)) >= 0), default=None)
        if cut is not None:
            text, stop_sequence = text[: cut[0]], cut[1]
        stop_reason = "stop_sequence" if stop_sequence else ("max_tokens" if finish == "length" else "end_turn")
        read, written = self.cache.read_and_write(asked.model, asked.blocks)
        completion = approx_tokens(text)
        plain = asked.prompt_tokens - read - written
        sim.stats.prompt_tokens += asked.prompt_tokens
        sim.stats.completion_tokens += completion
        sim.stats.bill(tier, asked.prompt_tokens, read, completion, written)
        price_in, price_out = sim.config.price_input_per_1m, sim.config.price_output_per_1m
        factor = 0.5 if tier == "batch" else 1.0
        sim.stats.bill_usd += factor * (plain * price_in + read * price_in * CACHE_READ_FACTOR
                                        + written * price_in * CACHE_WRITE_FACTOR + completion * price_out) / 1e6
        usage = {"input_tokens": plain, "output_tokens": completion, "cache_creation_input_tokens": written,
                 "cache_read_input_tokens": read}
        return text, stop_reason, stop_sequence, usage

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)


__all__ = ["MessagesSim", "anthropic_error", "message_body", "parse_messages"]
