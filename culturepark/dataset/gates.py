"""Quality gates: which conversations and SFT examples a dataset keeps, every drop counted once,
by the first reason that applies, in the order `CONVERSATION_REASONS` lists.

The fidelity gates read `eval fidelity` results (found under `--evals` and inside each run
directory, through the evaluation registry) and score each conversation's delegate by how far
its answer lay from its assigned stance: 1 - |code - stance| / (options - 1), so 1.0 is the
stance itself and 0.0 the far end of the scale. The self-report re-asks the delegate with its
prompt in place (no evidence of adherence); the blind judge reads only the turns.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from culturepark.agents.paper_format import code_range, item_from_meta
from culturepark.agents.protocol import repeats_itself
from culturepark.benchmarks.evaluation import EVALUATIONS
from culturepark.benchmarks.results import DiversityResult, DiversityRow, FidelityResult
from culturepark.dataset.models import Gates
from culturepark.dataset.sources import Conversation, Source
from culturepark.engine.errors import InputError
from culturepark.trainers.refine.pipeline import Example
from culturepark.trainers.refine.postprocess import word_count

CONVERSATION_REASONS = ("failed", "looping", "too_few_words", "too_many_words", "self_report_missing",
                        "self_report_unparseable", "self_report_below", "judge_missing", "judge_unclear",
                        "judge_below")
EXAMPLE_REASONS = ("answer_too_short", "answer_too_long")


@dataclass
class Evidence:
    """The evaluation results a build read: per source, its fidelity result; diversity rows."""

    fidelity: dict[str, tuple[Path, FidelityResult]] = field(default_factory=dict)
    diversity: list[tuple[Path, DiversityRow]] = field(default_factory=list)

    def files(self) -> dict[str, list[str]]:
        found = {"fidelity": sorted({str(p) for p, _ in self.fidelity.values()}),
                 "diversity": sorted({str(p) for p, _ in self.diversity})}
        return {k: v for k, v in found.items() if v}


def _inside(path: str, roots: list[Path]) -> bool:
    p = Path(path).resolve()
    return any(p == r or r in p.parents for r in roots)


def find_evidence(sources: list[Source], roots: list[Path]) -> Evidence:
    """Fidelity results of each run (matched by the run directory they name) and diversity rows
    whose new file lies in a run or refine directory, from `roots` and the runs' own folders."""
    evidence = Evidence()
    fidelity, diversity = EVALUATIONS["fidelity"], EVALUATIONS["diversity"]
    places = sorted({r.resolve() for r in roots} | {s.run_dir.resolve() for s in sources})
    for root in places:
        if not root.is_dir():
            raise InputError(f"dataset build: --evals {root}: no such directory")
        for folder, result in fidelity.find(root):
            assert isinstance(result, FidelityResult)
            for s in sources:
                if _names(result, s):
                    old = evidence.fidelity.get(s.entry.name)
                    if old is None or (old[1].judge is None and result.judge is not None):
                        evidence.fidelity[s.entry.name] = (folder / fidelity.file_name, result)
        for folder, found in diversity.find(root):
            assert isinstance(found, DiversityResult)
            for row in found.rows:
                dirs = [d.resolve() for s in sources for d in (s.run_dir, s.refine_dir) if d is not None]
                if _inside(row.new_file, dirs):
                    evidence.diversity.append((folder / diversity.file_name, row))
    return evidence


def _names(result: FidelityResult, source: Source) -> bool:
    """Whether a fidelity result is of this run: it names the run's directory, or (written from another
    working directory, so its relative path no longer resolves) a directory of the same name and only
    conversations this run has."""
    named = Path(result.source)
    if named.resolve() == source.run_dir.resolve():
        return True
    ids = {c.id for c in source.conversations}
    return (not named.is_absolute() and named.name == source.run_dir.resolve().name
            and all(r.id in ids for r in result.per_conversation))


def _score(code: int | None, conv: Conversation) -> float | None:
    if code is None or conv.meta is None:
        return None
    lo, hi = code_range(item_from_meta(conv.meta))
    return 1.0 - abs(code - conv.meta.stance_code) / max(1, hi - lo)


@dataclass
class Verdicts:
    """One source's per-conversation fidelity codes (None: unparseable; "unclear": the judge's)."""

    self_report: dict[str, int | None] | None
    judge: Mapping[str, int | str | None] | None


def verdicts(result: FidelityResult | None) -> Verdicts:
    if result is None:
        return Verdicts(None, None)
    judge = ({r.id: r.verdict for r in result.judge.per_conversation} if result.judge is not None else None)
    return Verdicts({r.id: r.after for r in result.per_conversation}, judge)


def conversation_reason(conv: Conversation, gates: Gates, seen: Verdicts) -> str | None:
    """Why a conversation is dropped (None: kept)."""
    if conv.status != "done" or conv.meta is None:
        return "failed"
    if not gates.keep_looping and repeats_itself([t for _, t in conv.turns]):
        return "looping"
    words = sum(word_count(t) for _, t in conv.turns)
    if gates.min_words is not None and words < gates.min_words:
        return "too_few_words"
    if gates.max_words is not None and words > gates.max_words:
        return "too_many_words"
    if gates.min_self_report is not None:
        if seen.self_report is None or conv.id not in seen.self_report:
            return "self_report_missing"
        score = _score(seen.self_report[conv.id], conv)
        if score is None:
            return "self_report_unparseable"
        if score < gates.min_self_report:
            return "self_report_below"
    if gates.judge_fidelity is not None:
        if seen.judge is None or conv.id not in seen.judge:
            return "judge_missing"
        verdict = seen.judge[conv.id]
        if not isinstance(verdict, int):
            return "judge_unclear"
        if (_score(verdict, conv) or 0.0) < gates.judge_fidelity:
            return "judge_below"
    return None


def example_reason(example: Example, gates: Gates) -> str | None:
    answer = word_count(example.messages[-1]["content"])
    if gates.min_answer_words is not None and answer < gates.min_answer_words:
        return "answer_too_short"
    if gates.max_answer_words is not None and answer > gates.max_answer_words:
        return "answer_too_long"
    return None


def check_gates(gates: Gates, sources: list[Source], evidence: Evidence) -> None:
    """A fidelity gate with no fidelity result for a run is bad input, refused before any work."""
    for s in sources:
        found = evidence.fidelity.get(s.entry.name)
        if gates.min_self_report is not None and found is None:
            raise InputError(f"dataset build: --min-self-report: no eval fidelity result for {s.run_dir} "
                             "(run `culturepark eval fidelity RUN_DIR`, and give its folder with --evals)")
        if gates.judge_fidelity is not None and (found is None or found[1].judge is None):
            raise InputError(f"dataset build: --judge-fidelity: no eval fidelity --judge result for {s.run_dir} "
                             "(give its folder with --evals)")


def tally(reasons: list[str | None], order: tuple[str, ...]) -> dict[str, int]:
    """Drops by reason, every reason listed (0 included), in a fixed order."""
    counts = Counter(r for r in reasons if r)
    return {r: counts.get(r, 0) for r in order}
