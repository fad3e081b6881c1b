"""Rule-based post-processing: first person, word counts. (Rules, not an LLM: free,
deterministic and auditable; they cover the common `Name believes that ...` forms only.)"""
from __future__ import annotations

import re

_VERBS = {"believes": "believe", "thinks": "think", "feels": "feel", "says": "say", "argues": "argue",
          "agrees": "agree", "disagrees": "disagree", "emphasizes": "emphasize", "emphasises": "emphasise",
          "values": "value", "considers": "consider", "prefers": "prefer", "suggests": "suggest",
          "mentions": "mention", "states": "state", "explains": "explain", "finds": "find",
          "expresses": "express", "hopes": "hope", "wants": "want", "sees": "see", "is": "am",
          "has": "have", "does": "do", "was": "was", "supports": "support", "opposes": "oppose"}


def first_person(text: str, names: list[str]) -> str:
    """`Wei believes that X` → `I believe that X`; `Wei's family` → `my family`; `He thinks` → `I think`."""
    subjects = [re.escape(n) for n in names] + ["He", "She", "They"]
    subj = "(?:" + "|".join(subjects) + ")"
    verb = "(" + "|".join(_VERBS) + ")"
    m = re.match(rf"^\s*{subj}\s+(?:also\s+|strongly\s+|really\s+)?{verb}\b", text)
    if m:
        middle = text[m.start(0):m.end(0)]
        adverb = re.search(r"\s(also|strongly|really)\s", middle)
        base = _VERBS[m.group(1)]
        text = "I " + (adverb.group(1) + " " if adverb else "") + base + text[m.end(0):]
    for n in names:
        text = re.sub(rf"\b{re.escape(n)}'s\b", "my", text)
    return text[0].upper() + text[1:] if text else text


def word_count(text: str) -> int:
    return len(re.findall(r"\w+", text))
