"""OpenAI-compatible HTTP backend on one pooled aiohttp session.

The openai SDK costs ~10x more CPU per request than raw aiohttp (measured in
shared/notes/rate-limits.md), so the hot path speaks HTTP itself. Works with
OpenAI, vLLM, llama.cpp's server, Ollama's /v1, Gemini's OpenAI endpoint and the
sim server. `api="completions"` uses /v1/completions for base models.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

import aiohttp
import orjson

from culturepark.engine.backends import logprobs
from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.backends.rate_headers import read_rate_headers
from culturepark.engine.errors import (
    AccountError,
    BackendError,
    FatalBackendError,
    InputError,
    RateLimited,
    TierUnavailable,
    TransientError,
)
from culturepark.engine.pricing import Price
from culturepark.engine.records import Usage


class Unreachable(InputError, ConnectionError):
    """The base URL does not answer at start: a wrong URL or a server that is not running."""

_JSON = {"Content-Type": "application/json"}


QUOTA_WORDS = ("insufficient_quota", "exceeded your current quota", "per day", "perday", "billing")


def account_refusal(status: int, raw: bytes) -> AccountError | None:
    """401/403 (key), 404 (model or URL), 429 whose body says the quota is used up — as opposed to
    a rate limit, which passes with time. The provider's own message is kept to show the user."""
    if status not in (401, 403, 404, 429):
        return None
    try:
        error = orjson.loads(raw).get("error") or {}
        if isinstance(error, list):  # Gemini's OpenAI endpoint wraps it in a list
            error = error[0].get("error", error[0]) if error else {}
        message = str(error.get("message") or "")
        code = str(error.get("code") or error.get("status") or error.get("type") or "")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        message, code = raw[:200].decode("utf-8", "replace"), ""
    if status == 429:
        said = f"{code} {error.get('type', '') if isinstance(error, dict) else ''} {message}".lower()
        if not any(word in said for word in QUOTA_WORDS):
            return None
    reason = {401: "invalid_key", 403: "forbidden", 404: "not_found", 429: "quota_exhausted"}[status]
    return AccountError(f"{reason}:http_{status}", message or f"HTTP {status}", status=status)


def transport_error(exc: BaseException) -> TransientError:
    """A request that got no complete answer: worth another attempt."""
    if isinstance(exc, asyncio.TimeoutError):
        return TransientError("timeout")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransientError("truncated_body")
    return TransientError(f"connection_error:{type(exc).__name__}")


FLEX_UNAVAILABLE_WORDS = (b"resource_unavailable", b"resource unavailable")


def error_for_status(status: int, headers: Any, raw: bytes, flex: bool = False) -> BackendError:
    """What a non-200 answer means for the run: an account refusal, a rate limit, a flex request
    the provider had no capacity for, worth another attempt (5xx, 408, 409), or a request that
    cannot succeed as sent."""
    account = account_refusal(status, raw)
    if account is not None:
        return account
    if status == 429 and flex and any(w in raw.lower() for w in FLEX_UNAVAILABLE_WORDS):
        return TierUnavailable("flex_unavailable", retry_after=parse_retry_after(headers), status=status)
    if status == 429:
        return RateLimited("http_429", retry_after=parse_retry_after(headers), status=status)
    if status >= 500 or status in (408, 409):
        return TransientError(f"http_{status}", retry_after=parse_retry_after(headers), status=status)
    return FatalBackendError(f"http_{status}: {raw[:200].decode('utf-8', 'replace')}", status=status)


def parse_retry_after(headers: Any) -> float | None:
    """`retry-after-ms` (OpenAI) wins over `Retry-After` seconds; HTTP dates are ignored."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    sec = headers.get("Retry-After")
    if sec:
        try:
            return max(0.0, float(sec))
        except ValueError:
            return None
    return None


async def api_request(session: aiohttp.ClientSession, method: str, url: str,
                      error_for: Callable[[int, Any, bytes], BackendError], *, data: Any = None, json: Any = None,
                      timeout_s: float, content_type: str | None = None) -> bytes:
    """One call beside the hot path (files, batches, their results) on a backend's session, with its
    key: the body of a 200, else the `BackendError` the provider's status means (`error_for`);
    transport failures are transient. The one such call of the HTTP backends."""
    try:
        headers = {"Content-Type": content_type} if content_type else None  # the session's is JSON
        async with session.request(method, url, data=data, json=json, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            raw = await resp.read()
            if resp.status != 200:
                raise error_for(resp.status, resp.headers, raw)
            return raw
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise transport_error(exc) from exc


async def probe_models(session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
    """GET `base_url/models`: any HTTP answer counts as reachable; no answer is `Unreachable` (bad
    input). The one reachability check of the HTTP backends (OpenAI-compatible and Anthropic)."""
    try:
        async with session.get(f"{base_url}/models", timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            await resp.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise Unreachable(f"cannot reach {base_url} ({type(exc).__name__}); is the server running "
                          "and does the URL end in /v1?") from exc


class OpenAIHTTPBackend:
    can_stream = True  # `stream`: server-sent events
    checks_reachable = True  # `check_reachable`: GET /models at a stage's start

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api: Literal["chat", "completions"] = "chat",
        timeout_s: float = 60.0,
        max_connections: int = 0,
        price: Price | None = None,
        name: str = "openai",
        service_tier: str = "standard",
        flex_timeout_s: float = 900.0,
        send_cache_key: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.price = price
        self.name = name
        self.service_tier = service_tier
        self.flex_timeout_s = flex_timeout_s  # flex answers slowly: OpenAI advises up to 15 minutes
        self.send_cache_key = send_cache_key
        self._api_key = api_key
        self.path = "/v1/chat/completions" if api == "chat" else "/v1/completions"  # as a batch line names it
        self._url = f"{self.base_url}/chat/completions" if api == "chat" else f"{self.base_url}/completions"
        self._session: aiohttp.ClientSession | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "openai", "base_url": self.base_url, "model": self.model, "api": self.api,
                               "auth": "env key" if self._api_key else "none"}
        if self.service_tier != "standard":
            out["service_tier"] = self.service_tier
        if self.price is not None:
            out["price"] = self.price.describe()
        return out

    async def start(self) -> None:
        if self._session is not None:
            return
        headers = dict(_JSON)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def call_api(self, method: str, path: str, *, data: Any = None, json: Any = None,
                       timeout_s: float | None = None, content_type: str | None = None) -> bytes:
        """Any other call on this server (`/files`, `/batches`), with the same key and session:
        the body of a 200, else the `BackendError` the status means; transport failures are transient."""
        await self.start()
        assert self._session is not None
        return await api_request(self._session, method, f"{self.base_url}{path}", error_for_status,
                                 data=data, json=json, timeout_s=timeout_s or self.timeout_s,
                                 content_type=content_type)

    async def check_reachable(self, timeout_s: float = 5.0) -> None:
        """Fail fast on a wrong base URL: any HTTP answer counts as reachable (`Unreachable`: bad input)."""
        await self.start()
        assert self._session is not None
        await probe_models(self._session, self.base_url, timeout_s)

    def tier_for(self, req: Request) -> str:
        return req.service_tier or self.service_tier

    def _body(self, req: Request, stream: bool = False) -> bytes:
        return orjson.dumps(self.body(req, stream))

    def body(self, req: Request, stream: bool = False) -> dict[str, Any]:
        """The JSON request body (also a batch file's line body)."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": req.max_tokens,
                                "temperature": req.temperature}
        if self.tier_for(req) == "flex":
            body["service_tier"] = "flex"
        if self.send_cache_key and req.cache_key:
            body["prompt_cache_key"] = req.cache_key
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if self.api == "chat":
            body["messages"] = req.messages
        else:
            body["prompt"] = req.prompt
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None:
            body["seed"] = req.seed
        if req.label_probs and req.choices:
            body.update(logprobs.request_fields(self.api))
        return body

    async def complete(self, req: Request) -> Completion:
        return await self._send(req, None)

    async def stream(self, req: Request, on_text: Callable[[str], None]) -> Completion:
        """The same completion, streamed: `on_text` gets the text so far as each chunk arrives.

        For a person watching a reply appear; the hot path of a run uses `complete`.
        """
        return await self._send(req, on_text)

    async def _send(self, req: Request, on_text: Callable[[str], None] | None) -> Completion:
        if self._session is None:
            await self.start()
        assert self._session is not None
        t0 = time.perf_counter()
        streamed: tuple[str, str | None, Any] | None = None
        flex = self.tier_for(req) == "flex"
        longer = {"timeout": aiohttp.ClientTimeout(total=self.flex_timeout_s)} if flex else {}
        try:
            async with self._session.post(self._url, data=self._body(req, on_text is not None),
                                          **longer) as resp:  # type: ignore[arg-type]
                status = resp.status
                headers = resp.headers
                if status == 200 and on_text is not None:
                    streamed = await self._read_events(resp, on_text)
                    raw = b""
                else:
                    raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(exc) from exc
        latency_ms = (time.perf_counter() - t0) * 1000.0
        if status != 200:
            raise error_for_status(status, headers, raw, flex)
        if streamed is not None:
            text, finish, raw_usage = streamed
            completion = self._completion(req, text, finish, raw_usage, None)
        else:
            try:
                completion = self.completion_from(orjson.loads(raw), req)
            except orjson.JSONDecodeError as exc:
                raise TransientError("malformed_body") from exc
        completion.latency_ms = latency_ms
        completion.rate = read_rate_headers(headers)
        return completion

    def completion_from(self, payload: Any, req: Request) -> Completion:
        """A response body (already JSON-decoded: from HTTP, or a line of a batch's output file)."""
        try:
            choice = payload["choices"][0]
            text = (choice.get("message") or {}).get("content") if self.api == "chat" else choice.get("text")
            finish = choice.get("finish_reason")
            raw_usage = payload.get("usage")
            if isinstance(raw_usage, dict) and isinstance(payload.get("timings"), dict):
                raw_usage = {**raw_usage, "_timings": payload["timings"]}  # llama.cpp's cache count
            completion = self._completion(req, text, finish, raw_usage, payload.get("service_tier"))
            if req.label_probs and req.choices:
                completion.label_probs = logprobs.label_probs(choice, req.choices, self.api)
            return completion
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise TransientError("malformed_body") from exc

    def _completion(self, req: Request, text: Any, finish: Any, raw_usage: Any, served_tier: Any) -> Completion:
        if not isinstance(text, str):
            text = ""
        usage, reported = _parse_usage(raw_usage)
        if not reported:
            usage = Usage(req.estimated_prompt_tokens(), (len(text) + 3) // 4)
        return Completion(text=text, finish_reason=finish if isinstance(finish, str) else None, usage=usage,
                          usage_reported=reported, tier=served(served_tier, self.tier_for(req)))

    async def _read_events(self, resp: aiohttp.ClientResponse, on_text: Callable[[str], None]
                           ) -> tuple[str, str | None, Any]:
        """Server-sent events: a JSON chunk per `data:` line until `data: [DONE]`; usage comes last."""
        parts: list[str] = []
        finish: str | None = None
        usage: Any = None
        async for line in resp.content:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return "".join(parts), finish, usage
            try:
                chunk = orjson.loads(data)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") if self.api == "chat" else choice.get("text")
                    finish = choice.get("finish_reason") or finish
                    if isinstance(piece, str) and piece:
                        parts.append(piece)
                        on_text("".join(parts))
            except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
                raise TransientError("malformed_body") from exc
        raise TransientError("truncated_body")  # the stream ended without [DONE]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def served(reported: Any, asked: str) -> str | None:
    """The tier that served a request, None for standard. OpenAI echoes `service_tier` ("flex",
    "default", "auto"); a provider that does not echo it served what was asked."""
    tier = reported if isinstance(reported, str) else asked
    return tier if tier in ("flex", "batch") else None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def cached_prompt_tokens(raw: dict[str, Any]) -> int:
    """The cached part of the prompt, however the server reports it: `prompt_tokens_details.
    cached_tokens` (OpenAI, Gemini's OpenAI endpoint, vLLM with prompt-tokens details, recent
    llama.cpp), Gemini's native `cachedContentTokenCount`, or llama.cpp's `timings.cache_n`."""
    details = raw.get("prompt_tokens_details")
    if isinstance(details, dict):  # the common case first: this runs for every turn
        value = details.get("cached_tokens")
        if isinstance(value, int) and _is_count(value):
            return value
    timings = raw.get("_timings")
    for value in (raw.get("cachedContentTokenCount"), raw.get("cached_content_token_count"),
                  timings.get("cache_n") if isinstance(timings, dict) else None):
        if isinstance(value, int) and _is_count(value):
            return value
    return 0


def _parse_usage(raw: Any) -> tuple[Usage, bool]:
    """A usage block that is missing, negative or not integers is not trusted; a cached count is
    never more than the prompt."""
    if not isinstance(raw, dict):
        return Usage(), False
    p, c = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if isinstance(p, int) and isinstance(c, int) and _is_count(p) and _is_count(c):
        return Usage(p, c, min(cached_prompt_tokens(raw), p)), True
    return Usage(), False
