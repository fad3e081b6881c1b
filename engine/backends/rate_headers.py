"""What a provider says about its limits, read from its response headers.

OpenAI and the servers that copy it send `x-ratelimit-limit-requests`/`-tokens` (per minute),
`-remaining-*` (left in the current window) and `-reset-*` (until the window is full again) in
its duration format ("6m0s", "1s", "20ms", "1h2m3.5s"). Anthropic sends
`anthropic-ratelimit-requests-limit`/`-remaining`/`-reset` and the same for `tokens` (or, per
direction, `input-tokens` and `output-tokens`), with the reset as an RFC 3339 time. Either way the
endpoint sizes unstated limits from them (`RateLimiter.learn`) and lowers its credit to what the
provider says is left (`RateLimiter.observe_headers`).
"""
from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from culturepark.engine.backends.base import RateHeaders

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Seconds in OpenAI's format ("6m0s", "1s", "20ms", "1h2m3.5s"); a bare number is seconds;
    None for anything else."""
    if not text:
        return None
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _number(headers: Any, name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 else None


def _until(stamp: str | None, now: float) -> float | None:
    """Seconds from `now` (epoch) until an RFC 3339 time (Anthropic's resets); None if unreadable."""
    if not stamp:
        return None
    try:
        return max(0.0, datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - now)
    except ValueError:
        return None


def read_rate_headers(headers: Any, now: float | None = None) -> RateHeaders | None:
    """The limits a response's headers state (OpenAI's or Anthropic's names), or None if none."""
    if "x-ratelimit-limit-requests" in headers or "x-ratelimit-remaining-requests" in headers \
            or "x-ratelimit-limit-tokens" in headers or "x-ratelimit-remaining-tokens" in headers:
        return RateHeaders(
            _number(headers, "x-ratelimit-remaining-requests"), _number(headers, "x-ratelimit-remaining-tokens"),
            _number(headers, "x-ratelimit-limit-requests"), _number(headers, "x-ratelimit-limit-tokens"),
            parse_duration(headers.get("x-ratelimit-reset-requests")),
            parse_duration(headers.get("x-ratelimit-reset-tokens")))
    prefix = "anthropic-ratelimit-"
    if prefix + "requests-limit" not in headers and prefix + "tokens-limit" not in headers \
            and prefix + "input-tokens-limit" not in headers:
        return None
    now = time.time() if now is None else now
    # `tokens-*` is the most restrictive of the input and output limits; older answers send only input
    tokens = "tokens" if prefix + "tokens-limit" in headers else "input-tokens"
    return RateHeaders(
        _number(headers, prefix + "requests-remaining"), _number(headers, f"{prefix}{tokens}-remaining"),
        _number(headers, prefix + "requests-limit"), _number(headers, f"{prefix}{tokens}-limit"),
        _until(headers.get(prefix + "requests-reset"), now), _until(headers.get(f"{prefix}{tokens}-reset"), now))


__all__ = ["parse_duration", "read_rate_headers"]
