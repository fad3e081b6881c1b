"""`culturepark eval wvs`: the WVS items asked as the paper asked them, scored against real respondents.

CultureLLM-style: in a culture's role, each item is asked as multiple choice (`paper_format`);
per item the model's answer code is compared with that culture's valid WVS respondents — the
share who gave the same answer, and whether it is their modal answer. Agreement (modal answers
matched) and mean share are given per seed, then mean ± std over seeds. An answer that cannot
be read after retries is counted as unparseable and as a miss, never guessed. Items named as
trained (`--trained-items`) are reported apart from the held-out ones, so a tuned model's
agreement on what it was taught is not mistaken for generalisation.

Each item × culture's answer *distribution* (benchmarks/distribution.py) comes from the model's answer
probabilities where the backend gives them, else from `--samples N` answers (`--method`):

- `probs`: one request per item × culture asks for each option code's probability at the answer position
  (the embedded model's label scores; `logprobs`/`top_logprobs` on an OpenAI-compatible server),
  renormalised over the options; the mass the model put elsewhere is reported as `outside_mass`. These are
  the model's own probabilities (temperature 1): set them beside samples drawn at `--temperature 1`.
- `samples`: the parsed answers of N asks at `--temperature` (the seeds' answers, then more seeds).
- `auto` (the default): probs, and samples for each item × culture the backend gave none for (a server
  that returns no logprobs; options whose codes begin with the same token, "1" and "10", on a model that
  splits digits), said in one line. Why the default: where they exist, probabilities are the distribution
  itself — no sampling noise, one request instead of N — and the fallback keeps every item scored
  wherever they do not. Every row records its `method`, every summary the items per method, so figures
  made different ways are never mixed unsaid.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

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

Method = Literal["auto", "probs", "samples"]
METHODS: tuple[str, ...] = ("auto", "probs", "samples")


def item_request(culture: Culture, item: WVSItem, rendering: str, temperature: float, seed: int,
                 style: PromptStyle, probs: bool = False) -> Request:
    """The item in the culture's role; `probs`: also ask for each option code's probability (its answer
    distribution in one request; greedy, since only the probabilities are read)."""
    system = (paper_format.chatbot_system(culture.name) if style == "paper" else
              f"You are {culture.person}. Answer as a typical person from {culture.country} would.")
    choices = tuple(str(c) for c in sorted(item.scale)) if probs else None
    return Request.instruction(system, paper_format.multiple_choice(item), "Answer:", rendering, 8,
                               0.0 if probs else temperature, stop=["\n"], seed=seed, choices=choices,
                               label_probs=probs)


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


def _item_row(item: WVSItem, answers: list[int], codes: list[int | None], seeds: int, samples: int,
              probs: tuple[dict[int, float], float] | None = None) -> WvsItemRow:
    """`codes`: the model's answers, one per ask; the first `seeds` are scored for agreement. The answer
    distribution set against the respondents' is `probs` (the model's probabilities over the options and the
    mass it put elsewhere) when given, else the first `samples` parsed answers (`samples` 0: none)."""
    counts = Counter(answers)
    top = max(counts.values()) if counts else 0
    modal = sorted(c for c, n in counts.items() if n == top)
    scored = codes[:seeds]
    if probs is not None:
        dist = {**distribution.item_figures(probs[0], answers, sorted(item.scale)), "outside_mass": round(probs[1], 4)}
    else:
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
    with_dist = [r for r in rows if r.w1 is not None]
    methods: Counter[str] = Counter(r.method or "samples" for r in with_dist)
    source = next(iter(methods)) if len(methods) == 1 else "mixed"
    outside = [r.outside_mass for r in with_dist if r.outside_mass is not None]
    fidelity = distribution.over_items(figures, source, methods=methods, outside_mass=outside) if figures else None
    return WvsSummary(
        items=len(rows), agreement=mean_std(sum(r.is_modal[s] for r in rows) / len(rows) for s in range(seeds)),
        mean_share=mean_std(sum(r.share[s] or 0.0 for r in rows) / len(rows) for s in range(seeds)),
        unparseable=sum(r.codes[s] is None for r in rows for s in range(seeds)),
        chance_agreement=round(sum(len(r.modal) / max(1, r.options) for r in rows) / len(rows), 4),
        **({"distribution": fidelity} if fidelity else {}))


async def evaluate(settings: EvalSettings, cultures: list[str], data_dir: Path, out: Path, seeds: int = 3,
                   items: list[str] | None = None, trained_items: list[str] | None = None,
                   temperature: float = 0.7, say: Callable[[str], None] | None = None,
                   samples: int | None = None, method: str = "auto") -> WvsResult:
    """`samples`: answers per item × culture for a distribution from samples (default: the seeds' answers;
    asking more than `seeds` asks the extra ones with the next seeds, so the first `seeds` are unchanged).
    `method`: where distributions come from (the module's docstring); with `auto` the samples beyond the
    seeds are asked only for what got no probabilities, in `out/samples/`, a second resumable eval."""
    if method not in METHODS:
        raise InputError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
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
    want_probs = method != "samples"
    data_hash = digest(file_digest(data.wvs_dir / "questions.jsonl"),
                       *[file_digest(data.wvs_dir / "countries" / f"{c.country_file}.csv") for c in chosen])
    header = {"task": "wvs", "cultures": [c.name for c in chosen], "items": [it.q_id for it in asked],
              "seeds": seeds, "temperature": temperature, "data_hash": data_hash, "prompt_style": style,
              **({"samples": samples} if samples is not None else {}),
              **({"method": method} if want_probs else {})}  # absent: as before --method, so old evals resume
    answered = [(c, it) for c in chosen for it in asked if data.answers(c.country_file, it.q_id)]
    first = max(seeds, drawn) if method == "samples" else seeds
    batch = [_ask(c, it, rendering, temperature, s, style) for c in chosen for s in range(first) for it in asked]
    batch += [BatchItem(f"{c.name}|probs|Q{it.q_id}", item_request(c, it, rendering, temperature, 0, style, True))
              for c, it in answered if want_probs and it.scale]
    results, info = await run_items(out, batch, settings, header, say)
    probs = {(c.name, it.q_id): p for c, it in answered
             if (p := _probabilities(results.get(f"{c.name}|probs|Q{it.q_id}"), it)) is not None}
    missing = [(c, it) for c, it in answered if (c.name, it.q_id) not in probs]
    if want_probs and missing and say:
        say(f"wvs: {settings.model} gave no answer probabilities for {len(missing)} of {len(answered)} item × "
            f"culture (no logprobs from the server, or option codes that begin with the same token); " +
            (f"their distributions come from {drawn} samples at temperature {temperature}" if method == "auto"
             else "they have no distribution (--method probs)"))
    if method == "auto" and drawn > seeds and missing:
        extra = [_ask(c, it, rendering, temperature, s, style) for c, it in missing for s in range(seeds, drawn)]
        more, _ = await run_items(out / "samples", extra, settings, {**header, "method": "samples-fallback"}, say)
        results = {**results, **more}
    by_culture = {}
    for c in chosen:
        rows = [_item_row(it, data.answers(c.country_file, it.q_id),
                          [_code(results.get(f"{c.name}|s{s}|Q{it.q_id}"), it) for s in range(max(seeds, drawn))],
                          seeds, 0 if method == "probs" else drawn, probs.get((c.name, it.q_id)))
                for it in asked if data.answers(c.country_file, it.q_id)]
        by_culture[c.name] = WvsCulture(
            country_file=c.country_file, all=_summary(rows, seeds),
            held_out=_summary([r for r in rows if r.item not in trained], seeds),
            trained=_summary([r for r in rows if r.item in trained], seeds),
            never_asked=[q for q in by_id if not data.answers(c.country_file, q)], per_item=rows)
    report = WvsResult(**info.model_dump(), data_hash=data_hash, seeds=seeds, temperature=temperature,
                       trained_items=sorted(trained), cultures=by_culture, samples=drawn, method=method)
    report.write(out / "wvs.json")
    return report


def _ask(culture: Culture, item: WVSItem, rendering: str, temperature: float, seed: int, style: PromptStyle
         ) -> BatchItem:
    def valid(text: str) -> str | None:
        return None if paper_format.parse_code(text, item) is not None else "invalid_answer"
    return BatchItem(f"{culture.name}|s{seed}|Q{item.q_id}",
                     item_request(culture, item, rendering, temperature, seed, style), valid)


def _probabilities(result: BatchResult | None, item: WVSItem) -> tuple[dict[int, float], float] | None:
    if result is None or result.label_probs is None:
        return None
    return distribution.from_probabilities(result.label_probs, sorted(item.scale))


def _code(result: BatchResult | None, item: WVSItem) -> int | None:
    return paper_format.parse_code(result.text, item) if result and result.text is not None else None
