"""The simulator's prompt cache, with OpenAI's published rules.

- A prompt is cacheable from `min_tokens` (1,024) on, in steps of `step_tokens` (128): the
  cached part of a request is the longest such prefix an earlier request (with the same
  `prompt_cache_key`) already sent, within `ttl_s` of its last use.
- Requests are routed by their first `route_tokens` (256) tokens and their key; past
  `key_rpm` (~15) requests a minute to one route, requests spill to a machine that has not
  seen the prefix: they miss, and are counted as `overflow`.

Tokens here are the simulator's own: 4 characters of the request's canonical text (roles and
contents, in order), the rule `engine.tokens` counts prompts by; a prefix of the text is a
prefix of the request, so an append-only conversation hits and an edited one does not.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from culturepark.engine.limiter import WindowCounter

CHARS_PER_TOKEN = 4


def canonical_text(messages: list[dict[str, Any]] | None, prompt: str | None) -> bytes:
    if messages is None:
        return (prompt or "").encode()
    return b"".join(f"{m.get('role')}\x00{m.get('content') or ''}\x01".encode() for m in messages)


@dataclass
class PromptCacheSim:
    min_tokens: int = 1024
    step_tokens: int = 128
    route_tokens: int = 256
    key_rpm: float = 15.0
    ttl_s: float = 600.0
    max_entries: int = 2_000_000
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[bytes, float] = field(default_factory=OrderedDict)  # prefix digest → last use
    _routes: dict[bytes, WindowCounter] = field(default_factory=dict)
    lookups: int = 0
    hits: int = 0
    overflow: int = 0

    def cached_tokens(self, messages: list[dict[str, Any]] | None, prompt: str | None, key: str | None,
                      prompt_tokens: int) -> int:
        """How many of this request's prompt tokens the cache serves; remembers its prefixes."""
        text = canonical_text(messages, prompt)
        n_tokens = len(text) // CHARS_PER_TOKEN
        if n_tokens < self.min_tokens:
            return 0
        now = self.clock()
        self.lookups += 1
        namespace = hashlib.blake2b((key or "").encode(), digest_size=8).digest()
        if self._route_full(namespace + text[: self.route_tokens * CHARS_PER_TOKEN], now):
            self.overflow += 1
            return 0
        digests = self._prefix_digests(namespace, text, n_tokens)
        cached = 0
        for tokens, digest in reversed(digests):
            last = self._entries.get(digest)
            if last is not None and now - last <= self.ttl_s:
                cached = tokens
                break
        for _, digest in digests:
            self._entries[digest] = now
            self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self.hits += cached > 0
        return min(cached, prompt_tokens)

    def _prefix_digests(self, namespace: bytes, text: bytes, n_tokens: int) -> list[tuple[int, bytes]]:
        hasher = hashlib.blake2b(namespace, digest_size=16)
        out, done = [], 0
        for tokens in range(self.min_tokens, n_tokens + 1, self.step_tokens):
            end = tokens * CHARS_PER_TOKEN
            hasher.update(text[done:end])
            done = end
            out.append((tokens, hasher.copy().digest()))
        return out

    def _route_full(self, route: bytes, now: float) -> bool:
        digest = hashlib.blake2b(route, digest_size=16).digest()
        return not self._routes.setdefault(digest, WindowCounter(self.key_rpm)).admit(now)





@dataclass
class BreakpointCacheSim:
    """Anthropic's prompt cache, by its published rules: nothing is cached unless the request marks
    it. A request's blocks (the system prompt's, then each message's, in order) are a prefix chain;
    a block carrying `cache_control` is a breakpoint. The provider reads the longest prefix that an
    earlier request wrote, looking back from each breakpoint up to `lookback` blocks, and writes
    the prefix up to the last breakpoint when it has `min_tokens` (1,024) or more. The read part is
    `cache_read_input_tokens`, the rest up to the last breakpoint `cache_creation_input_tokens`;
    an entry lives `ttl_s` (5 minutes) from its last use. Tokens are 4 characters of the prefix's
    canonical text, as everywhere in the simulator."""

    min_tokens: int = 1024
    lookback: int = 20
    ttl_s: float = 300.0
    max_entries: int = 2_000_000
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[bytes, float] = field(default_factory=OrderedDict)
    reads: int = 0
    writes: int = 0

    def read_and_write(self, namespace: str, blocks: list[tuple[bytes, bool]]) -> tuple[int, int]:
        """(tokens read, tokens written) for a request whose blocks are (canonical text, breakpoint)."""
        hasher = hashlib.blake2b(namespace.encode(), digest_size=16)
        ends: list[tuple[int, bytes]] = []  # (tokens up to this block's end, prefix digest)
        length = 0
        for text, _ in blocks:
            hasher.update(text)
            length += len(text)
            ends.append((length // CHARS_PER_TOKEN, hasher.copy().digest()))
        marks = [i for i, (_, mark) in enumerate(blocks) if mark]
        if not marks:
            return 0, 0
        now = self.clock()
        read = 0
        for i in marks:
            for j in range(i, max(-1, i - self.lookback), -1):
                tokens, digest = ends[j]
                last = self._entries.get(digest)
                if tokens >= self.min_tokens and last is not None and now - last <= self.ttl_s:
                    if tokens > read:
                        read = tokens
                        self._entries[digest] = now
                        self._entries.move_to_end(digest)
                    break
        written = 0
        last_tokens = ends[marks[-1]][0]
        if last_tokens >= self.min_tokens and last_tokens > read:
            written = last_tokens - read
            for i in marks:
                tokens, digest = ends[i]
                if tokens >= self.min_tokens:
                    self._entries[digest] = now
                    self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        self.reads += read > 0
        self.writes += written > 0
        return read, written
__all__ = ["BreakpointCacheSim", "PromptCacheSim", "canonical_text"]
