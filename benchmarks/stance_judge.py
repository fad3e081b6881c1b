"""The blind stance judge of `eval fidelity --judge SPEC`: which answer do the delegate's turns express?

Why a judge, and why blind: the re-ask (`self_report`) asks the delegate its seed item with its
persona still in place — the prompt that states the answer it was given — so a model that copies
from its prompt reports its stance whatever its turns said. The judge reads only what was said:
the speaker names and turns, with the item and its options. It never sees the persona, the
assigned stance or any system prompt, and names the option code the delegate's turns express, or
"unclear". Its verdict is parsed like every other answer: a code, "unclear", or unparseable
(retried, then counted — never guessed).

A judge agrees with an assigned stance partly for free: a culture's common answer is guessable
from the conversation's topic and culture alone. `--control RUN` judges a run made with the
`control` stance policy (the delegate told no respondent's answer; a respondent is still drawn and
recorded on the same plan) and reports the lift of this run over it.

`--per-turn` gives the drift curve: the judge on the conversation up to the delegate's k-th turn,
for each k; a stance held from the first turn to the last stays flat.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from culturepark.agents import paper_format
from culturepark.agents.meta import ConversationMeta
from culturepark.agents.wvs import WVSItem
from culturepark.benchmarks.eval_run import EvalSettings, digest, run_items
from culturepark.benchmarks.results import DriftPoint, JudgeRates, JudgeRecord, StanceJudge
from culturepark.engine.backends.base import Request
from culturepark.engine.batch import BatchItem, BatchResult

if TYPE_CHECKING:
    from culturepark.benchmarks.fidelity import Finished

UNCLEAR = "unclear"
_UNCLEAR = re.compile(r"^\W*unclear\b", re.IGNORECASE)
JUDGE_SYSTEM = "You annotate survey stances in conversations. You answer only from what the speakers say."


def judge_prompt(meta: ConversationMeta, turns: list[dict[str, Any]]) -> str:
    """The judge's one prompt: the item, its options, the turns with their speakers' names — nothing else
    (no persona, no assigned stance, no system prompt of the conversation)."""
    item = paper_format.item_from_meta(meta)
    name = meta.participants.delegate.name
    lo, hi = paper_format.code_range(item)
    transcript = "\n".join(f"{t['speaker']}: {t['text']}" for t in turns)
    return (f"Conversation:\n{transcript}\n\n"
            f"Survey question: {meta.question}\nOptions: {item.option_text.strip()}\n"
            f"Which option do {name}'s own statements in this conversation express? Answer with the option's "
            f"number only ({lo} to {hi}), or \"{UNCLEAR}\" if {name}'s statements do not show one.")


def parse_verdict(text: str, item: WVSItem) -> int | str | None:
    """A code, "unclear", or None (unparseable)."""
    if _UNCLEAR.match(text.strip()):
        return UNCLEAR
    code: int | None = paper_format.parse_code(text, item)
    return code


def delegate_prefixes(meta: ConversationMeta, turns: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The conversation up to and including the delegate's k-th turn, for k = 1 … the delegate's turns."""
    name = meta.participants.delegate.name
    return [turns[:i + 1] for i, t in enumerate(turns) if t["speaker"] == name]


def _request(prompt: str, rendering: str, temperature: float) -> Request:
    return Request.instruction(JUDGE_SYSTEM, prompt, "Answer:", rendering, 16, temperature, stop=["\n"], seed=0)


def rates(recs: Iterable[tuple[int, int | str | None]]) -> JudgeRates:
    """(assigned code, verdict) pairs → exact and within-one agreement over all judged conversations
    (unclear and unparseable count as disagreement), and the unclear rate."""
    pairs = list(recs)
    n = len(pairs)
    codes = [(s, v) for s, v in pairs if isinstance(v, int)]
    unclear = sum(v == UNCLEAR for _, v in pairs)

    def share(k: int) -> float | None:
        return round(k / n, 4) if n else None
    return JudgeRates(conversations=n, unclear=unclear, unparseable=sum(v is None for _, v in pairs),
                      exact=share(sum(s == v for s, v in codes)),
                      within_one=share(sum(abs(s - v) <= 1 for s, v in codes)), unclear_rate=share(unclear))


async def judge(rows: list[Finished], source: str, out: Path, settings: EvalSettings, per_turn: bool = False,
                temperature: float = 0.0, say: Callable[[str], None] | None = None) -> StanceJudge:
    """The blind judge on every finished conversation of a run (and, with `per_turn`, on each prefix)."""
    rendering = settings.backend().rendering
    batch: list[BatchItem] = []
    for run in rows:
        item = paper_format.item_from_meta(run.meta)

        def valid(text: str, item: WVSItem = item) -> str | None:
            return None if parse_verdict(text, item) is not None else "invalid_verdict"
        views = [("all", run.row["turns"])]
        if per_turn:
            views += [(f"k{k}", p) for k, p in enumerate(delegate_prefixes(run.meta, run.row["turns"]), 1)]
        batch += [BatchItem(f"{run.row['id']}|{w}", _request(judge_prompt(run.meta, turns), rendering, temperature),
                            valid) for w, turns in views]
    header = {"task": "stance-judge", "source": source, "conversations": len(rows), "per_turn": per_turn,
              "temperature": temperature, "source_hash": digest([r.row["id"] for r in rows])}
    results, info = await run_items(out, batch, settings, header, say)

    def verdict(run: Finished, w: str) -> int | str | None:
        res: BatchResult | None = results.get(f"{run.row['id']}|{w}")
        return parse_verdict(res.text, paper_format.item_from_meta(run.meta)) if res and res.text is not None else None
    recs = [JudgeRecord(id=r.row["id"], culture=r.meta.culture, item=str(r.meta.item_id),
                        stance=int(r.meta.stance_code), verdict=verdict(r, "all")) for r in rows]
    by: dict[str, dict[str, list[JudgeRecord]]] = {"culture": defaultdict(list), "item": defaultdict(list)}
    for x in recs:
        by["culture"][x.culture].append(x)
        by["item"][x.item].append(x)
    drift = None
    if per_turn:
        most = max((len(delegate_prefixes(r.meta, r.row["turns"])) for r in rows), default=0)
        drift = []
        for k in range(1, most + 1):
            have = [r for r in rows if len(delegate_prefixes(r.meta, r.row["turns"])) >= k]
            got = rates((int(r.meta.stance_code), verdict(r, f"k{k}")) for r in have)
            drift.append(DriftPoint(k=k, **got.model_dump()))
    return StanceJudge(
        model_spec=info.model_spec, source=source, requests=info.requests,
        overall=rates((x.stance, x.verdict) for x in recs),
        by_culture={k: rates((x.stance, x.verdict) for x in v) for k, v in sorted(by["culture"].items())},
        by_item={k: rates((x.stance, x.verdict) for x in v) for k, v in sorted(by["item"].items())},
        drift=drift, per_conversation=recs)
