"""The three model prompts of refinement and the parsers of their answers.

Each prompt exists in two renderings: chat messages for chat models, and a completion
prompt ending in a cue for base models (the embedded Gemma 270M), like the conversations.
Parsers are strict about meaning and lenient about form: case, punctuation, bullets,
numbering and extra words are tolerated; an answer with no recognisable content is
rejected (the engine retries it, then records the failure).
"""
from __future__ import annotations

import re
from typing import Literal

from culturepark.agents.meta import ConversationMeta
from culturepark.engine.backends.base import Request

Rendering = Literal["chat", "transcript"]
Verdict = Literal["entail", "contradict", "irrelevant"]


def stance_sentence(meta: ConversationMeta) -> str:
    name = meta.participants.delegate.name
    opts = f" (options: {meta.item_options})" if meta.item_options else ""
    return f'When asked "{meta.item_text}"{opts}, {name} answered "{meta.stance_text}".'


def extract_request(meta: ConversationMeta, transcript: str, rendering: Rendering, max_tokens: int,
                    role: str = "delegate", utterance: bool = False) -> Request:
    """The opinions of one speaker (`role`): the delegate, or in an in-cultural run also the compatriot;
    `utterance`: `transcript` is one thing they said (the original extracted per utterance)."""
    d, other = meta.participant(role), meta.other(role)
    if utterance:
        user = (f"Below is what {d.name} ({d.person}) said in a conversation with {other.name}.\n\n{transcript}\n\n"
                f"List every distinct opinion that {d.name} expresses here, one per line, ")
    else:
        user = (f"Below is a conversation between {d.name} ({d.person}) and "
                f"{other.name}.\n\n{transcript}\n\n"
                f"List every distinct opinion that {d.name} expresses in this conversation, one per line, ")
    user += ("each line starting with '- ' and written as a complete sentence. "
             f"If {d.name} expresses no opinion, answer NONE.")
    return Request.instruction("You extract opinions from conversations.", user, f"Opinions of {d.name}:\n-",
                    rendering, max_tokens, 0.0, stop=["\n\n"])


def verify_request(meta: ConversationMeta, opinion: str, rendering: Rendering, max_tokens: int) -> Request:
    user = (f"Stance: {stance_sentence(meta)}\nOpinion: {opinion}\n\n"
            "Is the opinion consistent with the stance (Entail), against it (Contradict), "
            "or unrelated to it (Irrelevant)? Answer with one word: Entail, Contradict or Irrelevant.")
    return Request.instruction("You judge whether an opinion agrees with a stance.", user, "Answer:", rendering,
                    max_tokens, 0.0, stop=["\n"])


def rewrite_request(meta: ConversationMeta, opinion: str, rendering: Rendering, max_tokens: int,
                    temperature: float, seed: int) -> Request:
    user = (f"Stance: {stance_sentence(meta)}\nOpinion: {opinion}\n\n"
            "The opinion contradicts the stance. Rewrite it so that it agrees with the stance, "
            "keeping its topic and reasons where possible, as one or two first-person sentences. "
            "Answer with the rewritten opinion only.")
    return Request.instruction("You rewrite opinions to agree with a given stance.", user, "Rewritten opinion:",
                    rendering, max_tokens, temperature, stop=["\n"], seed=seed)


_BULLET = re.compile(r"^\s*(?:[-*•–]|\d+[.)]|\(\d+\))\s*")
_VERDICTS = re.compile(r"\b(entail\w*|contradict\w*|contradiction|irrelevant|unrelated|neutral)\b", re.I)


def strip_speaker(text: str, names: list[str]) -> str:
    """Drop a leading `Name:` speaker prefix (whole names only; `Weight: ...` survives `Wei`)."""
    if not names:
        return text.strip()
    pattern = r"^\s*(?:" + "|".join(re.escape(n) for n in names) + r")\s*:\s*"
    return re.sub(pattern, "", text).strip()


def parse_opinions(text: str, rendering: Rendering, names: list[str]) -> list[str] | None:
    """One opinion a line; None when the answer has no list at all (retry), [] for NONE."""
    if rendering == "transcript":
        text = "-" + text  # the cue ended with the first bullet
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1 and lines[0].strip(" -*.").upper() in ("NONE", "NO OPINION", "NO OPINIONS"):
        return []
    out = []
    for ln in lines:
        if not _BULLET.match(ln):
            continue
        body = strip_speaker(_BULLET.sub("", ln, count=1), names).strip()
        if len(body) >= 2 and body[0] == body[-1] and body[0] in "\"'“”":
            body = body[1:-1].strip()
        if body and body.upper() != "NONE":
            out.append(body)
    return out or None


def parse_verdict(text: str) -> Verdict | None:
    m = _VERDICTS.search(text)
    if not m:
        return None
    word = m.group(1).lower()
    if word.startswith("entail"):
        return "entail"
    if word.startswith("contradict"):
        return "contradict"
    return "irrelevant"


def parse_rewrite(text: str, names: list[str]) -> str | None:
    first = text.strip().splitlines()[0] if text.strip() else ""
    body = _BULLET.sub("", first.strip('"“” '), count=1)
    body = strip_speaker(body, names).strip('"“” ')
    return body or None
