"""Posted forms: the consent and recovery forms' one-use tokens, and reading any form strictly.

Before a session exists, a form is checked against a cookie set with it. If that cookie kept
its value, a browser on a shared computer would replay the last person's consent (and, while the
server remembered it, get their session back). So a token here is signed by this process,
expires, and is spent by the post that uses it: a second post of the same form is refused and
the browser gets a new token; a token from before a restart no longer verifies.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
import urllib.parse

FORM_TTL_S = 6 * 3600  # a consent page left open this long is sent again with a new token


class FormTokens:
    """Signed, expiring, one-use form tokens; the spent ones are remembered until they expire (their
    number is bounded by the admission limits, since only a valid token is ever spent)."""

    def __init__(self, ttl_s: float = FORM_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._key = secrets.token_bytes(32)  # this process only: a restart voids the tokens it gave
        self._spent: dict[str, float] = {}  # token -> when spent (insertion order = time order)

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:24]

    def issue(self, now: float) -> str:
        body = f"{int(now)}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._mac(body)}"

    def valid(self, token: str, now: float) -> bool:
        """Signed by this process and not expired (spent or not)."""
        issued, _, rest = token.partition(".")
        nonce, _, mac = rest.partition(".")
        if not (issued.isascii() and issued.isdigit() and nonce and mac):
            return False
        return (hmac.compare_digest(mac.encode("utf-8", "replace"), self._mac(f"{issued}.{nonce}").encode())
                and 0 <= now - int(issued) <= self.ttl_s)

    def spent(self, token: str) -> bool:
        return token in self._spent

    def spend(self, token: str, now: float) -> bool:
        """True the first time a valid token is spent; False for a replay."""
        while self._spent:
            oldest, when = next(iter(self._spent.items()))
            if now - when <= self.ttl_s:
                break
            del self._spent[oldest]
        if token in self._spent:
            return False
        self._spent[token] = now
        return True




# -- reading a posted form strictly ----------------------------------------------------------

FORM_TYPE = "application/x-www-form-urlencoded"  # every form of the study; multipart is never expected
TEXT_CHARSETS = {"utf-8", "utf8"}
MAX_FIELDS = 200
INVISIBLE_LETTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}  # fillers and the blank Braille cell


class ClientGone(Exception):
    """The client hung up while sending its form: nothing to answer, nothing written, counted once."""


class FormRefused(Exception):
    """A body that is not one of the study's forms: `reason` is counted, `status` answered, nothing written."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def parse_form(content_type: str, charset: str | None, body: bytes) -> dict[str, str]:
    """The fields of a form post, decoded strictly, or `FormRefused`.

    Only `application/x-www-form-urlencoded` (what the pages' forms and their script send), in
    UTF-8 or without a charset; the body itself must be ASCII (browsers percent-encode), every
    percent-escape valid UTF-8 (a lone surrogate is not), no field twice. A multipart body is
    refused, so no file part or Python object's text can become a participant's answer.
    """
    if not body:
        return {}
    if content_type != FORM_TYPE:
        raise FormRefused("form_type", 415)
    if charset is not None and charset.strip().lower() not in TEXT_CHARSETS:
        raise FormRefused("form_charset", 400)
    try:
        pairs = urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True,
                                       encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormRefused("form_encoding", 400) from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise FormRefused("form_encoding", 400)
        form[name] = clean_text(value)
    return form


def clean_text(text: str) -> str:
    """A typed text as it is kept: NFC (one form for one look), line breaks as \\n, and no control
    characters but line breaks and tabs (a NUL or an escape code is nobody's answer)."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def visible(text: str) -> bool:
    """Whether anything in `text` can be seen: not only spaces, zero-width or format characters,
    combining marks alone, or blank letters."""
    return any(not ch.isspace() and ch not in INVISIBLE_LETTERS
               and unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Co", "Cn", "Cs")
               for ch in text)


__all__ = ["FORM_TTL_S", "ClientGone", "FormRefused", "FormTokens", "clean_text", "parse_form", "visible"]
