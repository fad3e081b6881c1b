"""The texts a run generated, as `eval diversity` and `eval compare-runs` measure them.

A conversation run (`kind: culturepark`) generates its delegates' turns: one text per delegate
turn (the main contact's turns are the interviewer's, not data about the delegate's culture). A
direct run (`kind: direct`) has no conversation — one request per culture and item, no turns
between two agents — and generates a list of reasons; its unit is **one text per reason**, as the
original's baseline kept one opinion per reason line (Scarelette/CulturePark `directly_generation.py`
split each answer on newlines and stripped the numbering). Units are named in every result that
uses them, because a turn and a reason differ in length and the diversity gain (distance to the
nearest reference text) depends on it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from culturepark.engine.files import atomic_write_jsonl

RunKind = Literal["culturepark", "direct"]
KINDS: tuple[RunKind, ...] = ("culturepark", "direct")
UNITS: dict[RunKind, str] = {
    "culturepark": "delegate turns of a conversation run (one text per turn)",
    "direct": "reasons of a direct run (one text per reason line, the original's unit)",
}
# a reason line's bullet or numbering: "- ", "* ", "• ", "3. ", "3) ", "Reason 3: "
_MARK = re.compile(r"^\s*(?:[-*•]+|\(?\d+[.):]|reason\s+\d+\s*[.:)-])\s*", re.I)


def reasons_in(text: str) -> list[str]:
    """A direct turn's reasons, one per line, bullets and numbering removed, empty lines dropped."""
    return [r for line in text.splitlines() if (r := _MARK.sub("", line, count=1).strip())]


def texts_of_row(row: dict[str, Any], delegate_only: str | None = None) -> list[str]:
    """An exported conversation row's texts: a direct row's reasons; otherwise its turns (only those
    spoken by `delegate_only` when given)."""
    turns = [t["text"] for t in row["turns"] if delegate_only is None or t["speaker"] == delegate_only]
    if (row.get("meta") or {}).get("version") == "direct":
        return [r for t in turns for r in reasons_in(t)]
    return turns


def run_texts(run_dir: Path, what: str = "diversity") -> tuple[RunKind, list[str]]:
    """A run directory's kind and generated texts (finished conversations only), in plan order."""
    from culturepark.benchmarks.fidelity import load_run

    scenario, rows = load_run(Path(run_dir), KINDS, what)
    kind: RunKind = "direct" if scenario.kind == "direct" else "culturepark"
    return kind, [t for r, meta in rows for t in texts_of_row(r, meta.participants.delegate.name)]


def write_run_texts(run_dir: Path, out: Path, what: str = "compare-runs") -> tuple[RunKind, Path]:
    """The run's texts as a `{"text"}` JSONL under `out` (delegate_turns.jsonl or reasons.jsonl)."""
    kind, texts = run_texts(run_dir, what)
    path = out / ("reasons.jsonl" if kind == "direct" else "delegate_turns.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(path, ({"text": t} for t in texts))
    return kind, path


__all__ = ["KINDS", "UNITS", "RunKind", "reasons_in", "run_texts", "texts_of_row", "write_run_texts"]
