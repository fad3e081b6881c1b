"""Behind a TLS-terminating reverse proxy: scheme, host and client from its headers, and only its.

The proxy speaks HTTPS to the participant and HTTP to the study, so without this the study sees
`http://127.0.0.1:8800` while the browser's `Origin` says `https://study.example.org`, and every
form is refused as cross-site (issue 35, finding 3); every client also looks like the proxy, so
per-client limits would be one bucket for everybody.

`--trusted-proxy ADDRESS` (an IP or a network, repeatable) names the proxies whose
`X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-For` are believed. From any other peer
these headers are ignored, so a client cannot claim another address or scheme. The client is the
rightmost `X-Forwarded-For` address that is not itself a trusted proxy (the leftmost entries are
whatever the client sent).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from culturepark.engine.errors import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(values: Sequence[str]) -> list[Network]:
    """`--trusted-proxy` values as networks, or a one-line `InputError`."""
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise InputError(f"--trusted-proxy {value!r}: not an IP address or network ({exc})") from exc
    return out


def _trusted(address: str | None, proxies: Sequence[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def _last(value: str) -> str:
    """The value the nearest proxy appended (a header may have been sent by the client too)."""
    return value.rsplit(",", 1)[-1].strip()


def forwarded_client(chain: str, peer: str, proxies: Sequence[Network]) -> str:
    """The client of an `X-Forwarded-For` chain: the rightmost address not a trusted proxy."""
    for hop in reversed([h.strip() for h in chain.split(",") if h.strip()]):
        if not _trusted(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage where an address should be: the proxy itself is the client we know
    return peer


def proxy_middleware(proxies: Sequence[Network]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A request from a trusted proxy continues as the browser sent it: its scheme, host and client."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if proxies and _trusted(request.remote, proxies):
            changes: dict[str, str] = {}
            proto = _last(request.headers.get("X-Forwarded-Proto", "")).lower()
            if proto in ("http", "https"):
                changes["scheme"] = proto
            host = _last(request.headers.get("X-Forwarded-Host", ""))
            if host and all(ch.isalnum() or ch in ".-:[]" for ch in host):
                changes["host"] = host
            chain = request.headers.get("X-Forwarded-For", "")
            if chain:
                changes["remote"] = forwarded_client(chain, request.remote or "", proxies)
            if changes:
                request = request.clone(**changes)  # type: ignore[arg-type]
        return await handler(request)
    return middleware


__all__ = ["forwarded_client", "parse_proxies", "proxy_middleware"]
