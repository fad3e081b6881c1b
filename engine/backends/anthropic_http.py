"""Anthropic's Messages API on one pooled aiohttp session, as the OpenAI backend speaks HTTP itself.

What differs from an OpenAI-compatible server, and is handled here so the rest of the engine sees
the same `Request` → `Completion`:

- The system prompt is a field of its own, and the turns must alternate user/assistant: system
  messages are joined into `system`, consecutive turns of one role are merged into one message, and
  a conversation that would open with the assistant gets a one-line user turn before it.
- Prompt caching is explicit. Every request marks two `cache_control` breakpoints: the system
  prompt (shared by every conversation of a persona) and the end of the whole prompt. The next
  request of the same conversation starts with this whole prompt (the history only grows), so the
  provider reads it from the cache and writes only the new turns. Usage then splits the prompt in
  three: `input_tokens` (plain), `cache_read_input_tokens` (0.1 times input) and
  `cache_creation_input_tokens` (1.25 times input), kept as `Usage.cached_tokens` and
  `Usage.cache_write_tokens` of a prompt that is their sum.
- `temperature` is at most 1 (a hotter re-ask is sent at 1), stop sequences of whitespace only are
  refused by the API and left out, there is no `seed`.
- Errors: 401/403/404 and an empty credit balance stop the run (`AccountError`), 429 paces
  (`RateLimited`, with retry-after), 529 overloaded and 5xx are transient.

The key (ANTHROPIC_API_KEY) goes only into the `x-api-key` header of the session, never into a
log, header record or error.
"""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.backends.openai_http import api_request, parse_retry_after, probe_models, transport_error
from culturepark.engine.backends.rate_headers import read_rate_headers
from culturepark.engine.errors import (
    AccountError,
    BackendError,
    FatalBackendError,
    RateLimited,
    TransientError,
)
from culturepark.engine.pricing import Price
from culturepark.engine.records import Usage

API_VERSION = "2023-06-01"
MAX_TEMPERATURE = 1.0
OPENING_TURN = "(The conversation begins.)"  # before a conversation the assistant would open
CACHE_BREAKPOINT = {"type": "ephemeral"}
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}
CREDIT_WORDS = ("credit balance", "billing")


def anthropic_error(status: int, headers: Any, raw: bytes) -> BackendError:
    """What a non-200 answer of the Messages API means for the run (its body: `{"type": "error",
    "error": {"type": ..., "message": ...}}`); the provider's message is kept for the user."""
    try:
        error = orjson.loads(raw).get("error") or {}
        kind, message = str(error.get("type") or ""), str(error.get("message") or "")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        kind, message = "", raw[:200].decode("utf-8", "replace")
    if status in (401, 403, 404):
        reason = {401: "invalid_key", 403: "forbidden", 404: "not_found"}[status]
        return AccountError(f"{reason}:http_{status}", message or f"HTTP {status}", status=status)
    if status in (400, 402) and any(word in message.lower() for word in CREDIT_WORDS):
        return AccountError(f"quota_exhausted:http_{status}", message, status=status)
    if status == 429:
        return RateLimited("http_429", retry_after=parse_retry_after(headers), status=status)
    if status >= 500 or status in (408, 409):  # 529: overloaded_error, the API's own capacity
        reason = "overloaded" if status == 529 or kind == "overloaded_error" else f"http_{status}"
        return TransientError(reason, retry_after=parse_retry_after(headers), status=status)
    return FatalBackendError(f"http_{status}: {kind} {message[:200]}".rstrip(), status=status)


def same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def _turns(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and alternating user/assistant turns of an OpenAI-style message list."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        role, content = m.get("role"), str(m.get("content") or "")
        if role == "system":
            system.append(content)
            continue
        role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    if not turns or turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": OPENING_TURN})
    return "\n\n".join(system), turns


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_usage(raw: Any) -> Usage | None:
    """Anthropic's usage block as a `Usage` whose prompt is the whole input (plain + read + written);
    None when it is missing or not counts."""
    if not isinstance(raw, dict):
        return None
    plain, out = _count(raw.get("input_tokens")), _count(raw.get("output_tokens"))
    if plain is None or out is None:
        return None
    read = _count(raw.get("cache_read_input_tokens")) or 0
    written = _count(raw.get("cache_creation_input_tokens")) or 0
    return Usage(plain + read + written, out, read, written)


class AnthropicHTTPBackend:
    can_stream = False  # the run's hot path does not stream; a person watching sees the whole reply
    checks_reachable = True  # `check_reachable`: GET /models at a stage's start

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 60.0,
                 max_connections: int = 0, price: Price | None = None, name: str = "anthropic",
                 cache_breakpoints: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.price = price
        self.name = name
        self.cache_breakpoints = cache_breakpoints
        self._api_key = api_key
        self._url = f"{self.base_url}/messages"
        self._session: aiohttp.ClientSession | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "anthropic", "base_url": self.base_url, "model": self.model,
                               "auth": "env key" if self._api_key else "none"}
        if self.price is not None:
            out["price"] = self.price.describe()
        return out

    async def start(self) -> None:
        if self._session is not None:
            return
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def check_reachable(self, timeout_s: float = 5.0) -> None:
        """Fail fast on a wrong base URL: any HTTP answer counts as reachable (`Unreachable`: bad input)."""
        await self.start()
        assert self._session is not None
        await probe_models(self._session, self.base_url, timeout_s)

    async def call_api(self, method: str, path: str, *, data: bytes | None = None,
                       timeout_s: float | None = None) -> bytes:
        """Any other call on this API (`/messages/batches`), with the same key and session: the body
        of a 200, else the `BackendError` Anthropic's status and error body mean (`data`: a JSON body
        already encoded). `path` may be a whole
        URL only on this API's own origin: the key is never sent to another host."""
        await self.start()
        assert self._session is not None
        if path.startswith(("http://", "https://")) and not same_origin(path, self.base_url):
            raise FatalBackendError("batch_results_elsewhere: the results URL is not on the API's host")
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        return await api_request(self._session, method, url, anthropic_error, data=data,
                                 timeout_s=timeout_s or self.timeout_s)

    def body(self, req: Request) -> dict[str, Any]:
        """The Messages API request body, with cache breakpoints at the stable prefix."""
        messages = req.messages if req.messages is not None else [{"role": "user", "content": req.prompt or ""}]
        system, turns = _turns(messages)
        if self.cache_breakpoints:
            last = turns[-1]
            last["content"] = [{"type": "text", "text": last["content"], "cache_control": CACHE_BREAKPOINT}]
        body: dict[str, Any] = {"model": self.model, "max_tokens": req.max_tokens,
                                "temperature": min(req.temperature, MAX_TEMPERATURE), "messages": turns}
        if system:
            block: dict[str, Any] = {"type": "text", "text": system}
            if self.cache_breakpoints:
                block["cache_control"] = CACHE_BREAKPOINT
            body["system"] = [block]
        stops = [s for s in req.stop or [] if s.strip()]
        if stops:
            body["stop_sequences"] = stops
        return body

    async def complete(self, req: Request) -> Completion:
        await self.start()
        assert self._session is not None
        t0 = time.perf_counter()
        try:
            async with self._session.post(self._url, data=orjson.dumps(self.body(req))) as resp:
                status, headers = resp.status, resp.headers
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(exc) from exc
        if status != 200:
            raise anthropic_error(status, headers, raw)
        try:
            completion = self.completion_from(orjson.loads(raw), req)
        except orjson.JSONDecodeError as exc:
            raise TransientError("malformed_body") from exc
        completion.latency_ms = (time.perf_counter() - t0) * 1000.0
        completion.rate = read_rate_headers(headers)  # anthropic-ratelimit-*: limits learned when unstated
        return completion

    def completion_from(self, payload: Any, req: Request) -> Completion:
        """A response body (already JSON-decoded): text blocks joined, the stop reason in OpenAI's words."""
        try:
            blocks = payload["content"]
            text = "".join(b.get("text") or "" for b in blocks if isinstance(b, dict) and b.get("type") == "text")
            stop = payload.get("stop_reason")
        except (KeyError, TypeError, AttributeError) as exc:
            raise TransientError("malformed_body") from exc
        usage = parse_usage(payload.get("usage"))
        reported = usage is not None
        if usage is None:
            usage = Usage(req.estimated_prompt_tokens(), (len(text) + 3) // 4)
        finish = FINISH.get(stop, stop) if isinstance(stop, str) else None
        return Completion(text=text, finish_reason=finish, usage=usage, usage_reported=reported)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["API_VERSION", "AnthropicHTTPBackend", "anthropic_error", "parse_usage"]
