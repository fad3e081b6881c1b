"""`culturepark eval wvs`: the WVS items asked as the paper asked them, scored against real respondents.

CultureLLM-style: in a culture's role, each item is asked as multiple choice (`paper_format`);
per item the model's answer code is compared with that culture's valid WVS respondents — the
share who gave the same answer, and whether it is their modal answer. Agreement (modal answers
matched) and mean share are given per seed, then mean ± std over seeds. An answer that cannot
be read after retries is counted as unparseable and as a miss, never guessed. Items named as
trained (`--trained-items`) are reported apart from the held-out ones, so a tuned model's
agreement on what it was taught is not mistaken for generalisation.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from culturepark.agents import paper_format
from culturepark.agents.cultures import Culture, cultures_by_name
from culturepark.agents.paper_format import PromptStyle
from culturepark.agents.wvs import WVSData, WVSItem
from culturepark.benchmarks import distribution
from culturepark.benchmarks.eval_run import EvalSettings, digest, file_digest, run_items
from culturepark.benchmarks.results import WvsCulture, WvsItemRow, WvsResult, WvsSummary
from culturepark.benchmarks.stats import mean_std
from culturepark.engine.backends.base import Request
from culturepark.engine.batch import BatchItem, BatchResult
from culturepark.engine.errors import InputError


def item_request(culture: Culture, item: WVSItem, rendering: str, temperature: float, seed: int,
                 style: PromptStyle) -> Request:
    system = (paper_format.chatbot_system(culture.name) if style == "paper" else
              f"You are {culture.person}. Answer as a typical person from {culture.country} would.")
    return Request.instruction(system, paper_format.multiple_choice(item), "Answer:", rendering, 8, temperature,
                               stop=["\n"], seed=seed)


def _cultures(names: list[str], data: WVSData) -> list[Culture]:
    chosen, available = cultures_by_name(names, "wvs"), set(data.countries())
    for c in chosen:
        if c.country_file not in available:
            raise InputError(f"wvs: culture {c.name!r}: no WVS file {c.country_file}.csv in "
                             f"{data.wvs_dir / 'countries'}")
    cultures: list[Culture] = chosen
    return cultures


def _items(data: WVSData, ids: list[str] | None) -> list[WVSItem]:
    return [data.item(q.removeprefix("Q")) for q in ids] if ids else data.items()


def _item_row(item: WVSItem, answers: list[int], codes: list[int | None], seeds: int, samples: int) -> WvsItemRow:
    """`codes`: the model's answers, one per ask; the first `seeds` are scored for agreement, the first
    `samples` (parsed ones) make the answer distribution set against the respondents' (`samples` 0: none)."""
    counts = Counter(answers)
    top = max(counts.values()) if counts else 0
    modal = sorted(c for c, n in counts.items() if n == top)
    scored = codes[:seeds]
    dist = distribution.item_figures([c for c in codes[:samples] if c is not None], answers, sorted(item.scale))
    return WvsItemRow(item=item.q_id, options=len(item.scale), respondents=len(answers), modal=modal,
                      distribution={str(c): round(n / len(answers), 4) for c, n in sorted(counts.items())},
                      codes=scored,  # per seed; None: unparseable
                      share=[None if c is None else round(counts.get(c, 0) / len(answers), 4) for c in scored],
                      is_modal=[c is not None and c in modal for c in scored], **dist)


def _summary(rows: list[WvsItemRow], seeds: int) -> WvsSummary:
    if not rows:
        return WvsSummary(items=0)
    figures = [(r.w1, r.representativeness, r.js_similarity) for r in rows
               if r.w1 is not None and r.representativeness is not None and r.js_similarity is not None]
    return WvsSummary(
        items=len(rows), agreement=mean_std(sum(r.is_modal[s] for r in rows) / len(rows) for s in range(seeds)),
        mean_share=mean_std(sum(r.share[s] or 0.0 for r in rows) / len(rows) for s in range(seeds)),
        unparseable=sum(r.codes[s] is None for r in rows for s in range(seeds)),
        chance_agreement=round(sum(len(r.modal) / max(1, r.options) for r in rows) / len(rows), 4),
        **({"distribution": distribution.over_items(figures, "samples")} if figures else {}))


async def evaluate(settings: EvalSettings, cultures: list[str], data_dir: Path, out: Path, seeds: int = 3,
                   items: list[str] | None = None, trained_items: list[str] | None = None,
                   temperature: float = 0.7, say: Callable[[str], None] | None = None,
                   samples: int | None = None) -> WvsResult:
    """`samples`: answers per item × culture for the answer distribution (default: the seeds' answers;
    asking more than `seeds` asks the extra ones with the next seeds, so the first `seeds` are unchanged)."""
    rendering = settings.backend().rendering  # a bad model spec fails before any data is read
    style = settings.style()
    data = WVSData(Path(data_dir))
    chosen = _cultures(cultures, data)
    asked = _items(data, items)
    for line in (w for c in chosen for w in data.unlisted(c.country_file, asked)):
        if say:
            say(line)
    trained = {q.removeprefix("Q") for q in trained_items or []}
    by_id = {it.q_id: it for it in asked}
    drawn = samples if samples is not None else seeds
    asks = max(seeds, drawn)

    def valid(item: WVSItem) -> Callable[[str], str | None]:
        return lambda text: None if paper_format.parse_code(text, item) is not None else "invalid_answer"
    batch = [BatchItem(f"{c.name}|s{s}|Q{it.q_id}", item_request(c, it, rendering, temperature, s, style), valid(it))
             for c in chosen for s in range(asks) for it in asked]
    data_hash = digest(file_digest(data.wvs_dir / "questions.jsonl"),
                       *[file_digest(data.wvs_dir / "countries" / f"{c.country_file}.csv") for c in chosen])
    header = {"task": "wvs", "cultures": [c.name for c in chosen], "items": [it.q_id for it in asked],
              "seeds": seeds, "temperature": temperature, "data_hash": data_hash, "prompt_style": style,
              **({"samples": samples} if samples is not None else {})}
    results, info = await run_items(out, batch, settings, header, say)
    by_culture = {}
    for c in chosen:
        rows = [_item_row(it, data.answers(c.country_file, it.q_id),
                          [_code(results.get(f"{c.name}|s{s}|Q{it.q_id}"), it) for s in range(asks)], seeds, drawn)
                for it in asked if data.answers(c.country_file, it.q_id)]
        by_culture[c.name] = WvsCulture(
            country_file=c.country_file, all=_summary(rows, seeds),
            held_out=_summary([r for r in rows if r.item not in trained], seeds),
            trained=_summary([r for r in rows if r.item in trained], seeds),
            never_asked=[q for q in by_id if not data.answers(c.country_file, q)], per_item=rows)
    report = WvsResult(**info.model_dump(), data_hash=data_hash, seeds=seeds, temperature=temperature,
                       trained_items=sorted(trained), cultures=by_culture, samples=drawn)
    report.write(out / "wvs.json")
    return report


def _code(result: BatchResult | None, item: WVSItem) -> int | None:
    return paper_format.parse_code(result.text, item) if result and result.text is not None else None
