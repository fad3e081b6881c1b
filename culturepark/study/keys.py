"""What the study keeps of its secrets: salted scrypt for session keys and recovery codes, a keyed
hash for invitation codes, and the normalisation both sides of a code comparison go through.

Why not plain sha256 (what logs before this version hold, still accepted when read back): a
recovery code has ~40 bits, so an unsalted sha256 of it is reversed offline in minutes, and the
same code hashes alike in every run. scrypt (standard library, `hashlib.scrypt`) with a random
salt per secret makes each guess cost memory and time, per record.

Invitation codes are known to the researcher, who knows who received which: any hash of a code
that anyone holding the log can recompute links answers to people. So the log keeps an HMAC under
a key kept beside it (`study.key`, mode 0600, never in the log): while the study runs, a restarted
server recognises used codes; once the key file is deleted, the hashes in the log link nobody.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from culturepark.scenarios.schema import normal_code

KEY_FILE = "study.key"
# scrypt costs. A recovery code (~40 bits, typed by a person) gets the costly setting: 16 MiB and
# ~0.1-0.2 s per guess. A session key has 192 random bits, so no offline guessing can reach it:
# its KDF is there so that the log holds no fast-checkable value and no value shared between runs,
# and it is cheap enough to run at consent without delaying the page.
RECOVERY_COST = 2 ** 14
SESSION_COST = 2 ** 11
_R, _P, _DKLEN = 8, 1, 32
_MAXMEM = 64 * 2 ** 20


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(secret: str, salt: bytes, n: int) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8", "replace"), salt=salt, n=n, r=_R, p=_P, maxmem=_MAXMEM,
                          dklen=_DKLEN)


def kdf_hash(secret: str, cost: int) -> str:
    """`scrypt$N$salt$hash`: what the log keeps of a session key or a recovery code."""
    salt = secrets.token_bytes(16)
    return f"scrypt${cost}${_b64(salt)}${_b64(_scrypt(secret, salt, cost))}"


def kdf_check(secret: str, stored: str) -> bool:
    """Whether `secret` is what `stored` was made from (constant time); a log written before the
    KDF holds a plain sha256, still accepted so that old studies continue."""
    if not stored:
        return False
    if not stored.startswith("scrypt$"):
        return hmac.compare_digest(hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest(), stored)
    try:
        _, cost, salt, want = stored.split("$")
        n = int(cost)
        if n < 2 or n > 2 ** 20 or n & (n - 1):
            return False
        got = _scrypt(secret, _unb64(salt), n)
        return hmac.compare_digest(got, _unb64(want))
    except ValueError:
        return False


def load_key(run_dir: Path) -> bytes:
    """The run's invitation key, made on the first start (0600, never logged), read on a restart."""
    path = Path(run_dir) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _unb64(path.read_text().strip())
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as f:
        f.write(_b64(key) + "\n")
    return key


def keyed(key: bytes, code: str) -> str:
    """What the log keeps of an invitation code: an HMAC of its normal form under the run's key."""
    return "hmac:" + hmac.new(key, normal_code(code).encode(), hashlib.sha256).hexdigest()


def legacy_digest(secret: str) -> str:
    """The plain sha256 earlier versions logged (read back only)."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


__all__ = ["KEY_FILE", "RECOVERY_COST", "SESSION_COST", "kdf_check", "kdf_hash", "keyed", "legacy_digest",
           "load_key", "normal_code"]
