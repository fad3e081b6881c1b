"""An OpenAI-compatible simulator: a real aiohttp server with limits, latency and faults (and
Anthropic's Messages API at /v1/messages: testing/messages.py).

Tests, benches and dry runs point the real HTTP backend at it instead of a mock:
replies are deterministic from (seed, model, messages); `usage` is counted with
the same rule as the client's estimate; RPM/TPM are enforced over short windows
(`window_s`, default 1 s) as providers do, charging at admission (prompt +
max_tokens, no refund) or by usage; a `--script` of regex → reply rules gives
pipeline stages meaningful answers; `faults` inject the failures real APIs have.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from culturepark.engine.tokens import approx_tokens, prompt_tokens
from culturepark.testing.batches import BatchSim
from culturepark.testing.cache_rules import PromptCacheSim
from culturepark.testing.jobs import FineTuneSim
from culturepark.testing.message_batches import MessageBatchSim
from culturepark.testing.messages import MessagesSim, anthropic_error
from culturepark.testing.responses import error_response as _error
from culturepark.testing.sim_config import Fault, ScriptRule, SimConfig

_VOCAB = ("the people in my culture often value family and respect tradition while also "
          "thinking about work community change freedom duty honesty religion science "
          "government neighbours children parents friends history future education money "
          "health safety trust fairness opinion believe agree reason because however "
          "indeed perhaps usually important different similar experience village city").split()

# Account-level refusals as OpenAI words them (status, type, code, message): no request can
# succeed until the user fixes the key, the model name or the billing.
ACCOUNT_FAULTS: dict[str, tuple[int, str, str, str]] = {
    "revoked_key": (401, "invalid_request_error", "invalid_api_key",
                    "Incorrect API key provided: sk-sim***revoked. You can find your API key at your account page."),
    "unknown_model": (404, "invalid_request_error", "model_not_found",
                      "The model `{model}` does not exist or you do not have access to it."),
    "quota_exhausted": (429, "insufficient_quota", "insufficient_quota",
                        "You exceeded your current quota, please check your plan and billing details."),
}


def load_script(path: Path) -> list[ScriptRule]:
    """A YAML/JSON list of {pattern, reply} (or a mapping pattern → reply)."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict) and "rules" in data:
        data = data["rules"]
    if isinstance(data, dict):
        data = [{"pattern": k, "reply": v} for k, v in data.items()]
    return [ScriptRule.model_validate(r) for r in data or []]


@dataclass(slots=True)
class _Bucket:
    rate: float
    capacity: float
    level: float
    last: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
        self.last = now


@dataclass
class SimStats:
    started_at: float = field(default_factory=time.time)
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    failed: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    charged_tokens: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    streamed: int = 0
    embedded_texts: int = 0
    flex_unavailable: int = 0
    # what the simulator would bill: tokens per tier (standard, flex, batch) of every answered request
    usage_by_tier: dict[str, dict[str, int]] = field(default_factory=dict)
    cache_overflow: int = 0
    batches_created: int = 0
    batch_lines: int = 0
    batch_lines_repeated: int = 0  # a request already answered in an earlier batch: paid twice
    batch_lines_billed: int = 0  # batch lines answered (and so billed)
    # what /v1/messages requests cost in dollars at Anthropic's rates (testing/messages.py)
    bill_usd: float = 0.0

    def bill(self, tier: str, prompt: int, cached: int, completion: int, written: int = 0) -> None:
        t = self.usage_by_tier.setdefault(tier, {"requests": 0, "prompt_tokens": 0, "cached_tokens": 0,
                                                 "completion_tokens": 0, "cache_write_tokens": 0})
        t["requests"] += 1
        t["prompt_tokens"] += prompt
        t["cached_tokens"] += cached
        t["completion_tokens"] += completion
        t["cache_write_tokens"] += written


class SimServer:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats()
        self._rng = random.Random(config.seed)
        self._script = [(re.compile(r.pattern, re.S | re.I), r.reply, re.compile(r.model) if r.model else None,
                         r.distribution) for r in config.script]
        self._fault_fired = [0] * len(config.faults)
        now = time.monotonic()
        self._req_bucket = self._bucket(config.rpm, now)
        self._tok_bucket = self._bucket(config.tpm, now)
        self.prompt_cache = (PromptCacheSim(min_tokens=config.prompt_cache_min_tokens,
                                            key_rpm=config.prompt_cache_key_rpm) if config.prompt_cache else None)

    def _bucket(self, per_minute: float | None, now: float) -> _Bucket | None:
        if not per_minute:
            return None
        rate = per_minute / 60.0
        cap = max(1.0, rate * self.config.window_s)
        return _Bucket(rate, cap, 0.0 if self.config.start_empty else cap, now)

    # -- limits -------------------------------------------------------------
    def _admit(self, tokens: int) -> float | None:
        """Charge the request; return None if admitted, else seconds until it would be."""
        now = time.monotonic()
        wait = 0.0
        for b, need in ((self._req_bucket, 1), (self._tok_bucket, tokens)):
            if b is None:
                continue
            b.refill(now)
            want = min(need, b.capacity)
            if b.level < want:
                wait = max(wait, (want - b.level) / b.rate)
        if wait > 0:
            return wait
        if self._req_bucket is not None:
            self._req_bucket.level -= 1
        if self._tok_bucket is not None:
            self._tok_bucket.level -= tokens
        return None

    def _limit_headers(self) -> dict[str, str]:
        """OpenAI's limit headers: the limit per minute, what is left in the window, and how long
        until the window is full again in OpenAI's duration format ("1s", "20ms", "6m0s")."""
        if not self.config.rate_limit_headers:
            return {}
        h: dict[str, str] = {}
        for name, bucket, limit in (("requests", self._req_bucket, self.config.rpm),
                                    ("tokens", self._tok_bucket, self.config.tpm)):
            if bucket is not None:
                h[f"x-ratelimit-limit-{name}"] = str(int(limit or 0))
                h[f"x-ratelimit-remaining-{name}"] = str(max(0, int(bucket.level)))
                h[f"x-ratelimit-reset-{name}"] = openai_duration((bucket.capacity - bucket.level) / bucket.rate)
        return h

    def set_limits(self, rpm: float | None, tpm: float | None) -> None:
        """Change the limits while serving (a provider halving its capacity mid-run); each window
        keeps what is left of its credit, capped at its new size."""
        self.config = self.config.model_copy(update={"rpm": rpm, "tpm": tpm})
        now = time.monotonic()
        for old, per_minute, attr in ((self._req_bucket, rpm, "_req_bucket"), (self._tok_bucket, tpm, "_tok_bucket")):
            new = self._bucket(per_minute, now)
            if old is not None and new is not None:
                old.refill(now)
                new.level = min(new.capacity, old.level)
            setattr(self, attr, new)

    # -- replies ------------------------------------------------------------
    def _rule(self, model: str, messages: list[dict[str, Any]] | None, prompt: str | None
              ) -> tuple[re.Match[str], str | None, dict[str, float] | None] | None:
        """The first script rule that answers this request: its match, reply and answer distribution."""
        last = prompt if prompt is not None else _last_user(messages)
        for pattern, reply, only, dist in self._script:
            m = pattern.search(last)
            if m and (only is None or only.search(model)):
                return m, reply, dist
        return None

    def reply(self, model: str, messages: list[dict[str, Any]] | None, prompt: str | None,
              max_tokens: int, body: dict[str, Any] | None = None) -> tuple[str, str]:
        hit = self._rule(model, messages, prompt)
        if hit is not None:
            m, reply, dist = hit
            text = _draw(dist, [self.config.seed, model, messages, prompt, (body or {}).get("seed"),
                                (body or {}).get("temperature")], _temperature(body)) if dist else m.expand(reply or "")
            return _cap(text, max_tokens)
        key = orjson.dumps([self.config.seed, model, messages, prompt])
        rng = random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))
        n = rng.randint(self.config.min_reply_tokens, self.config.max_reply_tokens)
        words = rng.choices(_VOCAB, k=max(1, n * 4 // 6))
        words[0] = words[0].capitalize()
        return _cap(" ".join(words) + ".", max_tokens)

    def _pick_fault(self) -> Fault | None:
        for i, fault in enumerate(self.config.faults):
            if fault.times is not None and self._fault_fired[i] >= fault.times:
                continue
            if self.stats.requests <= fault.after:
                continue
            if fault.rate >= 1.0 or self._rng.random() < fault.rate:
                self._fault_fired[i] += 1
                self.stats.faults[fault.kind] = self.stats.faults.get(fault.kind, 0) + 1
                return fault
        if self.config.fail_rate and self._rng.random() < self.config.fail_rate:
            self.stats.faults["fail_rate"] = self.stats.faults.get("fail_rate", 0) + 1
            return Fault(kind="status", status=500)
        return None

    # -- handlers -----------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "culturepark-sim"} for m in self.config.models]
        return web.json_response({"object": "list", "data": data})

    async def limits_handler(self, request: web.Request) -> web.Response:
        """`POST /limits {"rpm": .., "tpm": ..}`: new limits from now on (absent: no limit)."""
        try:
            body = orjson.loads(await request.read())
            rpm, tpm = body.get("rpm"), body.get("tpm")
            self.set_limits(float(rpm) if rpm else None, float(tpm) if tpm else None)
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            return _error(400, "expected {\"rpm\": number|null, \"tpm\": number|null}")
        return web.json_response({"rpm": self.config.rpm, "tpm": self.config.tpm})

    async def stats_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats.__dict__), content_type="application/json")

    async def _gate(self, request: web.Request, charge: int, slower: float = 1.0,
                    anthropic: MessagesSim | None = None, model: str = "sim-model"
                    ) -> tuple[web.StreamResponse | None, Fault | None]:
        """What every model request passes: the RPM/TPM windows (429 with Retry-After), latency,
        then an injected fault. Returns a response to send instead, and the fault drawn. With
        `anthropic` (its /v1/messages), refusals take Anthropic's shapes and headers."""
        st = self.stats
        wait = self._admit(charge)
        if wait is not None:
            st.rate_limited += 1
            secs = max(1, math.ceil(wait))
            if anthropic is not None:
                return anthropic_error(429, "Number of request tokens has exceeded your per-minute rate limit",
                                       {"retry-after": str(secs), **anthropic.limit_headers()}), None
            return _error(429, "Rate limit reached", {"Retry-After": str(secs),
                                                      "retry-after-ms": str(int(wait * 1000) + 1)}), None
        st.charged_tokens += charge
        fault = self._pick_fault()
        delay = slower * (self.config.latency_ms + (self._rng.uniform(0, self.config.jitter_ms)
                                                    if self.config.jitter_ms else 0.0))
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if fault is not None:
            response = (anthropic.fault_response(fault, model) if anthropic is not None and fault.kind not in
                        ("slow", "reset", "truncated", "malformed") else await self._fault_response(request, fault))
            if response is not None:
                st.failed += 1
                return response, fault
        return None, fault

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """`/v1/embeddings`, under the same limits and faults as completions (content faults aside)."""
        st = self.stats
        st.requests += 1
        st.by_path["embeddings"] = st.by_path.get("embeddings", 0) + 1
        try:
            body = orjson.loads(await request.read())
            inputs = body.get("input", [])
            inputs = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
            dims = int(body.get("dimensions") or 64)
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            st.failed += 1
            return _error(400, "invalid request body")
        n = sum(approx_tokens(t) for t in inputs)
        refused, _ = await self._gate(request, n)
        if refused is not None:
            return refused
        st.ok += 1
        st.embedded_texts += len(inputs)
        data = [{"object": "embedding", "index": i, "embedding": _embedding(t, dims)} for i, t in enumerate(inputs)]
        return web.Response(body=orjson.dumps({"object": "list", "data": data, "model": body.get("model"),
                                               "usage": {"prompt_tokens": n, "total_tokens": n}}),
                            content_type="application/json", headers=self._limit_headers())

    async def generate(self, request: web.Request) -> web.StreamResponse:
        chat = request.path.endswith("/chat/completions")
        path = "chat" if chat else "completions"
        st = self.stats
        st.requests += 1
        st.by_path[path] = st.by_path.get(path, 0) + 1
        try:
            asked = parse_request(orjson.loads(await request.read()), chat)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            st.failed += 1
            return _error(400, "invalid request body")
        body, model, max_tokens, p_tokens = asked.body, asked.model, asked.max_tokens, asked.prompt_tokens
        flex = body.get("service_tier") == "flex"
        if flex and self.config.flex_unavailable_rate and self._rng.random() < self.config.flex_unavailable_rate:
            st.flex_unavailable += 1
            return web.json_response({"error": {"message": "Resource unavailable: flex processing has no "
                                                "capacity right now, please retry later.",
                                                "type": "resource_unavailable", "code": "resource_unavailable"}},
                                     status=429)
        refused, fault = await self._gate(request, p_tokens + max_tokens if self.config.charge == "admission"
                                          else p_tokens, self.config.flex_latency_factor if flex else 1.0)
        if refused is not None:
            return refused
        text, finish, usage = self.answer(asked, chat, "flex" if flex else "standard")
        c_tokens = usage["completion_tokens"]
        if fault is not None:  # content faults: a 200 that must not become a turn
            if fault.kind in ("empty", "length_empty"):
                text, finish = "", ("length" if fault.kind == "length_empty" else "stop")
            elif fault.kind == "bad_usage":
                usage = {"prompt_tokens": -1, "completion_tokens": "many"}
        if self.config.charge == "usage" and self._tok_bucket is not None:
            self._tok_bucket.level -= c_tokens
            st.charged_tokens += c_tokens
        st.ok += 1
        if body.get("stream"):
            st.streamed += 1
            include_usage = (body.get("stream_options") or {}).get("include_usage")
            return await self._stream(request, chat, model, int(time.time()), text, finish,
                                      usage if include_usage else None)
        return web.Response(body=orjson.dumps(self.completion_body(chat, model, text, finish, usage,
                                                                   "flex" if flex else "default",
                                                                   self.logprobs(asked, chat, text))),
                            content_type="application/json", headers=self._limit_headers())

    def answer(self, asked: Asked, chat: bool, tier: str) -> tuple[str, str, dict[str, Any]]:
        """The reply to an admitted request, its usage (with cached tokens when the prompt cache is
        on) and the bill for it: the one path of synchronous and batched requests."""
        body, messages, prompt = asked.body, asked.messages, asked.prompt
        text, finish = self.reply(asked.model, messages, prompt, asked.max_tokens, body)
        if not chat and body.get("stop"):
            stops = body["stop"] if isinstance(body["stop"], list) else [body["stop"]]
            text, finish = _apply_stop(text, finish, stops)
        p_tokens, c_tokens = asked.prompt_tokens, approx_tokens(text)
        usage: dict[str, Any] = {"prompt_tokens": p_tokens, "completion_tokens": c_tokens,
                                 "total_tokens": p_tokens + c_tokens}
        cached = 0
        if self.prompt_cache is not None:
            key = body.get("prompt_cache_key")
            cached = self.prompt_cache.cached_tokens(messages, prompt, key if isinstance(key, str) else None,
                                                     p_tokens)
            self.stats.cache_overflow = self.prompt_cache.overflow
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        self.stats.prompt_tokens += p_tokens
        self.stats.completion_tokens += c_tokens
        self.stats.bill(tier, p_tokens, cached, c_tokens)
        return text, finish, usage

    def logprobs(self, asked: Asked, chat: bool, text: str) -> dict[str, Any] | None:
        """OpenAI's `logprobs` block for the reply's first token, when the request asked and the server gives
        them: a scripted answer distribution's answers as the alternatives (the top K, most probable first),
        else the reply's first token (its number, word or sign) alone at probability 1. Only the first
        position: what a caller reads."""
        body = asked.body
        if not self.config.logprobs or not body.get("logprobs"):
            return None
        k = int(body.get("top_logprobs") or 0) if chat else int(body.get("logprobs") or 0)
        hit = self._rule(asked.model, asked.messages, asked.prompt)
        dist = hit[2] if hit is not None else None
        first = m.group(0) if (m := re.match(r"\d+|\w+|\S", text.lstrip())) else ""  # "1. I agree" → "1"
        alts = ({a: math.log(p) for a, p in sorted(dist.items(), key=lambda kv: -kv[1]) if p > 0} if dist
                else {first: 0.0})
        top = dict(list(alts.items())[:k])
        token, logprob = (text, alts.get(text, -100.0)) if dist else (first, 0.0)
        if not chat:
            return {"tokens": [token], "token_logprobs": [logprob], "top_logprobs": [top], "text_offset": [0]}
        return {"content": [{"token": token, "logprob": logprob, "bytes": list(token.encode()),
                             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                              for t, lp in top.items()]}]}

    def completion_body(self, chat: bool, model: str, text: str, finish: str,
                        usage: dict[str, Any], tier: str = "default",
                        logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        """The OpenAI response object for /chat/completions or /completions."""
        choice: dict[str, Any]
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return {"id": f"sim-{self.stats.requests}", "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": model, "choices": [choice], "usage": usage,
                "service_tier": tier}

    async def _stream(self, request: web.Request, chat: bool, model: str, created: int, text: str,
                      finish: str, usage: dict[str, Any] | None) -> web.StreamResponse:
        """The reply as OpenAI streams it: word chunks, then the finish reason, usage if asked, [DONE]."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **self._limit_headers()})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        pieces = re.findall(r"\S+\s*|\s+", text)
        for i, piece in enumerate([*pieces, ""]):
            last = i == len(pieces)
            if chat:
                choice = {"index": 0, "delta": {"content": piece} if not last else {},
                          "finish_reason": finish if last else None}
            else:
                choice = {"index": 0, "text": piece, "finish_reason": finish if last else None}
            chunk = {"id": f"sim-{self.stats.requests}", "object": obj, "created": created, "model": model,
                     "choices": [choice]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if self.config.stream_chunk_ms and not last:
                await asyncio.sleep(self.config.stream_chunk_ms / 1000.0)
        if usage is not None:
            await resp.write(b"data: " + orjson.dumps({"id": f"sim-{self.stats.requests}", "object": obj,
                                                        "created": created, "model": model, "choices": [],
                                                        "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _fault_response(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        if fault.kind in ACCOUNT_FAULTS:
            status, kind, code, message = ACCOUNT_FAULTS[fault.kind]
            body = {"error": {"message": message.format(model=request.match_info.get("model", "sim-model")),
                              "type": kind, "param": None, "code": code}}
            return web.json_response(body, status=status)
        if fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.status == 429:
                self.stats.rate_limited += 1
            return _error(fault.status, f"injected {fault.status}", headers)
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
            return None
        if fault.kind in ("reset", "truncated"):
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = 4096
            await resp.prepare(request)
            await resp.write(b'{"id": "sim", "choices": [{"message": {"content": "cut')
            if request.transport is not None:
                request.transport.close()
            return resp
        if fault.kind == "malformed":
            return web.Response(body=b'{"choices": [{"message": {"content": "x"', status=200,
                                content_type="application/json")
        return None  # content faults are applied to the normal body


@dataclass(slots=True)
class Asked:
    """A completion request as the simulator reads it, once (a synchronous one or a batch line)."""

    body: dict[str, Any]
    model: str
    max_tokens: int
    messages: list[Any] | None
    prompt: str | None
    prompt_tokens: int


def parse_request(body: Any, chat: bool) -> Asked:
    """The fields of a /chat/completions or /completions body; ValueError if malformed."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    messages = body.get("messages") if chat else None
    if chat and not isinstance(messages, list):
        raise ValueError("messages must be a list")
    prompt = None if chat else str(body.get("prompt", ""))
    return Asked(body, str(body.get("model", "sim-model")), int(body.get("max_tokens") or 256), messages, prompt,
                 prompt_tokens(messages, prompt))


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms" under a second, else "1s", "6m0s", "1h2m3.5s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):g}s"
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def _last_user(messages: list[dict[str, Any]] | None) -> str:
    for m in reversed(messages or []):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    return str((messages or [{}])[-1].get("content") or "") if messages else ""


def _temperature(body: dict[str, Any] | None) -> float:
    value = (body or {}).get("temperature")
    return float(value) if isinstance(value, (int, float)) else 1.0  # OpenAI's default


def _draw(dist: dict[str, float], key: list[Any], temperature: float) -> str:
    """One answer from a scripted distribution at a temperature (p^(1/T), renormalised; the most probable
    at T = 0), deterministic from `key` (the request, its seed included), as a seeded model samples."""
    answers = [a for a, p in dist.items() if p > 0]
    if temperature <= 0:
        return max(answers, key=lambda a: dist[a])
    rng = random.Random(int.from_bytes(hashlib.blake2b(orjson.dumps(key), digest_size=8).digest(), "big"))
    return rng.choices(answers, weights=[dist[a] ** (1.0 / temperature) for a in answers])[0]


def _cap(text: str, max_tokens: int) -> tuple[str, str]:
    if approx_tokens(text) <= max_tokens:
        return text, "stop"
    return text[: max_tokens * 4].rstrip(), "length"


def _apply_stop(text: str, finish: str, stops: list[str]) -> tuple[str, str]:
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], "stop") if cut >= 0 else (text, finish)


def _embedding(text: str, dims: int) -> list[float]:
    rng = random.Random(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big"))
    vec = [rng.gauss(0, 1) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


SIM_KEY: web.AppKey[SimServer] = web.AppKey("sim", SimServer)


def create_app(config: SimConfig | None = None) -> web.Application:
    sim = SimServer(config or SimConfig())
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[SIM_KEY] = sim

    app.router.add_get("/v1/models", sim.models)
    app.router.add_post("/v1/chat/completions", sim.generate)
    app.router.add_post("/v1/completions", sim.generate)
    app.router.add_post("/v1/embeddings", sim.embeddings)
    app.router.add_get("/stats", sim.stats_handler)
    app.router.add_post("/limits", sim.limits_handler)
    files = FineTuneSim(sim.config, sim.stats)
    files.routes(app)
    BatchSim(sim, files).routes(app)
    messages = MessagesSim(sim)
    messages.routes(app)
    MessageBatchSim(messages).routes(app)
    return app


async def start_server(config: SimConfig, host: str = "127.0.0.1", port: int = 0
                       ) -> tuple[web.AppRunner, str]:
    """Start on `port` (0 = a free one); return the runner and the base URL ending in /v1."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    bound_port = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound_port}/v1"


def serve_forever(config: SimConfig, host: str, port: int) -> None:
    async def main() -> None:
        runner, url = await start_server(config, host, port)
        print(f"listening on {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
