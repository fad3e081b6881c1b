"""Every error culturepark raises on purpose, in one tree with one root.

    CultureparkError
    ├── InputError               bad input: a file, flag, spec or directory the user must fix.
    │   │                        The CLI prints one line and exits 2; nothing was written.
    │   ├── ScenarioError        (scenarios.loader) a config file: file, line or field, what was expected
    │   ├── PlanError            (agents.protocol) a scenario that does not fit the data
    │   ├── WVSError             (agents.wvs) the WVS files
    │   ├── CultureError         (agents.cultures) the culture table
    │   ├── LocalModelUnavailable (engine.backends.local.model) an extra or model directory missing
    │   └── LogError             a run directory or log that cannot be used as asked
    │       └── CorruptLogError  a log line that is not a record (never guessed around)
    ├── LogWriteError            appending failed (disk full): the run stops, exit 1, resumable
    ├── BackendError             one attempt did not give a usable completion (retry decides)
    │   ├── RateLimited          429: the whole endpoint pauses
    │   ├── TransientError       5xx, timeouts, resets, truncated bodies
    │   │   └── TierUnavailable  a flex request refused for lack of capacity (429 "resource
    │   │                        unavailable"): retried, without pausing the endpoint, and
    │   │                        after `flex_fallback_after` such refusals sent at the standard tier
    │   ├── InvalidReply         a 200 that cannot be a turn (empty, echo, ...)
    │   ├── FatalBackendError    4xx that another attempt cannot fix
    │   └── AccountError         401/403, 404, an exhausted quota: no request can succeed, so the
    │                            whole run stops at once (exit 1, the provider's words quoted);
    │                            no conversation is marked failed, --resume continues once fixed
    └── RequestFailed            every attempt failed: the conversation ends `failed`

Anything else (a bug, or an unexpected error inside a backend) is a crash: it keeps its
traceback and exits 1, and the run directory stays resumable. Exit codes are mapped in one
place, `culturepark.exit_codes.exit_code`. Wrapping keeps the cause: `raise X(...) from exc`.
"""
from __future__ import annotations

from typing import Any


class CultureparkError(Exception):
    """Root of every error culturepark raises on purpose."""


class InputError(CultureparkError, ValueError):
    """Something the user fixes by changing input (exit 2, one clear line, nothing written)."""


class LogError(InputError):
    """A run directory or log that cannot be used as asked."""


class CorruptLogError(LogError):
    pass


class LogWriteError(CultureparkError):
    """Appending failed (disk full, I/O error): the run stops; what is written stays valid."""


class BackendError(CultureparkError):
    """A request that did not produce a usable completion."""

    retryable = True

    def __init__(self, reason: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


class RateLimited(BackendError):
    """HTTP 429: the endpoint (not just this request) must pause for `retry_after`."""


class TransientError(BackendError):
    """5xx, timeouts, resets, truncated or malformed bodies: worth another attempt."""


class TierUnavailable(TransientError):
    """A discounted tier (flex) had no capacity for this request: not our rate limit, so the
    endpoint does not pause; the request waits and tries again, or falls back to standard."""


class InvalidReply(BackendError):
    """A 200 whose content cannot be a turn (empty, echo of the prompt, ...)."""


class FatalBackendError(BackendError):
    """4xx other than 408/409/429: retrying the same request cannot help."""

    retryable = False


class AccountError(BackendError):
    """The provider refuses the account or the target, not this request: a revoked or wrong key
    (401/403), an unknown model or wrong URL (404), a quota used up (429 `insufficient_quota`)."""

    retryable = False

    def __init__(self, reason: str, message: str, *, status: int | None = None):
        super().__init__(reason, status=status)
        self.message = message

    def __str__(self) -> str:
        return f"the provider refused the account ({self.reason}): {self.message}"


class RequestFailed(CultureparkError):
    """Every attempt failed; `reason` is the last attempt's."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(f"{reason} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.reason = reason
        self.attempts = attempts
        # the usage (an `engine.records.Usage`) of replies rejected on the way: billed, though not kept
        self.rejected: Any = None


__all__ = ["AccountError", "BackendError", "CorruptLogError", "CultureparkError", "FatalBackendError", "InputError",
           "InvalidReply", "LogError", "LogWriteError", "RateLimited", "RequestFailed",
           "TierUnavailable", "TransientError"]
