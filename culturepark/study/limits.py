"""Limits that keep one client from taking the study from everyone else.

Per client, without keeping addresses: a client is a keyed hash of its address (HMAC under a
key made at start and held only in memory), so a bucket table says nothing once the process is
gone, and nothing about a client is ever written. Each admission step has a per-client bucket,
checked *before* the study-wide cap, so one script is stopped at its own limit and cannot spend
the cap everybody shares (issue 35, finding 5).

Per connection: a client that opens sockets and sends nothing, or half a request, gets
`header_timeout_s` to finish its headers; at `max_connections` open connections the oldest one
still waiting for its headers is closed to make room (a real browser's request completes in
milliseconds, so it is never the oldest waiting); only when every connection is busy is a new one
refused. Refusals are counted per class, and logged on the 1st, 10th, 100th, … of each class,
never once per connection (finding 4).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from culturepark.engine.limiter import WindowCounter

log = logging.getLogger("culturepark.study")

# per client and minute: more than a person needs, far less than the study-wide caps
CLIENT_LIMITS = {"signup": 10, "recovery": 5, "invitation": 5, "admin_login": 5}  # a class behind one NAT: 10
MAX_CLIENTS = 100_000  # buckets kept; the least recently used go first


class ClientBuckets:
    """Per-client window counters, keyed by an in-memory HMAC of the client's address."""

    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self.limits = limits or CLIENT_LIMITS
        self._key = secrets.token_bytes(32)
        self._buckets: OrderedDict[tuple[str, str], WindowCounter] = OrderedDict()

    def client(self, address: str) -> str:
        """What the study knows of a client: a keyed hash that only this process can recompute."""
        return hmac.new(self._key, address.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:32]

    def admit(self, kind: str, address: str, now: float) -> bool:
        """Within this client's limit for `kind` (and counted), or False. A loopback client is this
        machine, or a reverse proxy not named with `--trusted-proxy`: one bucket would be everybody,
        so only the study-wide caps apply to it."""
        if _loopback(address):
            return True
        key = (kind, self.client(address))
        bucket = self._buckets.pop(key, None) or WindowCounter(self.limits[kind])
        self._buckets[key] = bucket  # most recently used last
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        admitted: bool = bucket.admit(now)
        return admitted

    def __len__(self) -> int:
        return len(self._buckets)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass
class ConnectionLimits:
    header_timeout_s: float = 10.0  # to send a request's headers (the first on a connection)
    body_timeout_s: float = 20.0  # to send a form's body once its headers are in
    keepalive_timeout_s: float = 10.0  # an idle kept-alive connection is closed after this
    max_connections: int = 256  # open at once (well below the usual 1024 file handles)


@dataclass
class RefusalLog:
    """Counted refusals of connections, a line on the 1st, 10th, 100th, … of each class."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str) -> None:
        self.counts[reason] += 1
        n = self.counts[reason]
        if str(n).rstrip("0") == "1":  # 1, 10, 100, …
            log.warning("study: %d connection(s) %s so far (client addresses not logged)", n, _WHY[reason])


_WHY = {"header_timeout": "closed for not sending their request headers in time",
        "evicted_idle": "closed while waiting for headers, to make room for new ones",
        "over_capacity": "refused because every connection was busy"}


class _Guarded(asyncio.Protocol):
    """A connection's protocol (aiohttp's request handler) behind the header timeout and the cap."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self.inner, self.guard = inner, guard
        self.transport: asyncio.Transport | None = None
        self.waiting = True  # for the end of its first request's headers
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        self.started = False  # the inner protocol saw `connection_made` (so it must see `connection_lost`)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.guard.admit(self):
            transport.close()
            return
        self._timer = asyncio.get_running_loop().call_later(self.guard.limits.header_timeout_s, self._too_slow)
        self.inner.connection_made(transport)
        self.started = True

    def _too_slow(self) -> None:
        if self.waiting and self.transport is not None:
            self.guard.refused.add("header_timeout")
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.waiting:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self.waiting = False
                if self._timer is not None:
                    self._timer.cancel()
            self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        keep_open: bool | None = self.inner.eof_received()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.guard.release(self)
        self.transport = None
        if self.started:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    """The open connections, oldest first: the cap, and who is evicted to stay under it."""

    def __init__(self, limits: ConnectionLimits, counts: Counter[str] | None = None) -> None:
        self.limits = limits
        self.open: OrderedDict[int, _Guarded] = OrderedDict()
        self.refused = RefusalLog(counts if counts is not None else Counter())

    def wrap(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(factory(), self)

    def admit(self, conn: _Guarded) -> bool:
        if len(self.open) >= self.limits.max_connections:
            idle = next((c for c in self.open.values() if c.waiting), None)
            if idle is None:
                self.refused.add("over_capacity")
                return False
            self.refused.add("evicted_idle")
            self.release(idle)
            idle.close()
        self.open[id(conn)] = conn
        return True

    def release(self, conn: _Guarded) -> None:
        self.open.pop(id(conn), None)


class GuardedSite(web.SockSite):
    """aiohttp's site on a bound socket, its connections behind a `ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, sock: Any, limits: ConnectionLimits | None = None,
                 counts: Counter[str] | None = None) -> None:
        """`counts`: where refusals are counted (the study's `rejected`, shown on the admin page)."""
        super().__init__(runner, sock)
        self.guard = ConnectionGuard(limits or ConnectionLimits(), counts)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.guard.wrap(server), sock=self._sock,
                                                backlog=self._backlog)


__all__ = ["CLIENT_LIMITS", "ClientBuckets", "ConnectionGuard", "ConnectionLimits", "GuardedSite", "RefusalLog"]
