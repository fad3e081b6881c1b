"""`prompt_cache_key`s that stay under the provider's per-key rate.

Why: OpenAI routes a request to a cache machine by a hash of its prefix combined with its
`prompt_cache_key`; past about 15 requests a minute for one prefix and key, requests spill
to machines that have not seen the prefix and miss the cache. A key per group of requests
that share a prefix (for CulturePark: culture, item and role) keeps them together; sharding
the group's key (`group#0`, `group#1`, …) keeps each key under that rate.

A conversation keeps the shard it was given for its whole life: its own history is the
longest prefix it shares with anything, and that history is cached on its shard's machine.
A new conversation takes the lowest shard that was sent fewer than `rpm` requests in the
last minute. So the rate is a bound on where *new* conversations go; a shard's live
conversations may still together exceed it for a while (named in the README).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from culturepark.engine.limiter import WindowCounter

WINDOW_S = 60.0


@dataclass
class CacheKeyShards:
    rpm: float = 15.0
    clock: Callable[[], float] = time.monotonic
    _sent: dict[str, WindowCounter] = field(default_factory=dict)  # sharded key → its requests in the window
    _shards: dict[str, dict[str, int]] = field(default_factory=dict)  # conversation → group → shard

    def key(self, group: str, conversation_id: str) -> str:
        """The key for this conversation's next request in `group`; counts the request."""
        now = self.clock()
        mine = self._shards.setdefault(conversation_id, {})
        shard = mine.get(group)
        if shard is None:
            shard = 0
            while self._recent(f"{group}#{shard}", now) >= self.rpm:
                shard += 1
            mine[group] = shard
        key = f"{group}#{shard}"
        self._sent.setdefault(key, WindowCounter(self.rpm, WINDOW_S)).add(now)
        return key

    def release(self, conversation_id: str) -> None:
        """The conversation is over: forget its shards (memory follows live conversations)."""
        self._shards.pop(conversation_id, None)

    def _recent(self, key: str, now: float) -> int:
        sent = self._sent.get(key)
        n = sent.count(now) if sent is not None else 0
        if sent is not None and n == 0:
            del self._sent[key]  # memory follows the keys in use
        return n


__all__ = ["CacheKeyShards"]
