"""An LLM judge that answers with one label from a fixed set: the one mechanism behind
`eval phenomena` and `eval content` (and anything else that asks a model to classify).

A reply is read as a label only when exactly one of the labels appears in it as a word; anything
else is retried by the engine, then counted as unparseable — never guessed.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

from culturepark.benchmarks.results import LabelCount, LabelShares
from culturepark.engine.backends.base import Request


def label_of(text: str, labels: Sequence[str]) -> str | None:
    found = {m.lower() for m in re.findall(r"\b(" + "|".join(map(re.escape, labels)) + r")\b", text, re.I)}
    return found.pop() if len(found) == 1 else None


def validator(labels: Sequence[str]) -> Callable[[str], str | None]:
    return lambda text: None if label_of(text, labels) is not None else "unparseable_label"


def ask(system: str, user: str, labels: Sequence[str], rendering: str) -> Request:
    """One judging request: temperature 0, a short answer that must be one of `labels`."""
    choice = ", ".join(labels[:-1]) + f" or {labels[-1]}"
    return Request.instruction(system, f"{user}\n\nAnswer with one word: {choice}.", "Answer:", rendering,
                               8, 0.0, stop=["\n"])


def shares(labels: list[str | None], names: Sequence[str]) -> LabelShares:
    """Counts and shares of each label over the judged records; unparseable ones are counted apart."""
    counts = Counter(labels)
    judged = sum(counts[n] for n in names)
    return LabelShares(records=len(labels), judged=judged, unparseable=counts[None],
                       labels={n: LabelCount(count=counts[n], share=round(counts[n] / judged, 4) if judged else None)
                               for n in names})
