"""`culturepark eval hofstede`: VSM13 in a culture's role → six indices → published scores.

The VSM13 manual leaves each index's additive constant C to the user, so the comparison is
given three ways: raw indices (C = 0) and their Euclidean distance to the published scores
(`distance_c0`); the distance with a chosen constant added to every index (`distance`,
`--constant`, default 0; the paper added 50, and with the paper-compat options below
`--constant 50` scores as its code did);
and a C-free centred distance (each dimension centred over the compared cultures; needs two
or more cultures). C changes the scoring only, never the requests, so re-scoring a finished
eval with another C costs nothing. Items answered invalidly after retries are counted, never
guessed.

Paper-compat scoring (`HofstedePaperCompat`, off by default, recorded in the result when on):
`--mas-weight 25` uses the original's second MAS weight and `--paper-arabic` compares Arabic
with Jordan on the two dimensions published for it, as Scarelette/CulturePark's
`hofstede_test.py` did. Like C they change the scoring only.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from culturepark.agents import paper_format
from culturepark.agents.answers import parse_scale_answer
from culturepark.agents.cultures import Culture, cultures_by_name
from culturepark.agents.paper_format import PromptStyle
from culturepark.agents.vsm13 import load_vsm13_items
from culturepark.benchmarks.eval_run import EvalSettings, digest, file_digest, run_items
from culturepark.benchmarks.results import HofstedeCulture, HofstedePaperCompat, HofstedeResult, HofstedeSeed
from culturepark.benchmarks.stats import mean_std
from culturepark.engine.backends.base import Request
from culturepark.engine.batch import BatchItem
from culturepark.engine.errors import InputError

DIMENSIONS = ("pdi", "idv", "mas", "uai", "lto", "ivr")
CSV_COLUMNS = {"pdi": "pdi", "idv": "idv", "mas": "mas", "uai": "uai", "lto": "ltowvs", "ivr": "ivr"}

MAS_WEIGHT = 35  # the VSM13 manual's second MAS weight; the original's code used 25 (HofstedePaperCompat)
PAPER_ARABIC_COUNTRY = "Jordan"  # the original's published row for Arabic (LTO and IVR only)


def indices(m: dict[int, float | None], mas_weight: int = MAS_WEIGHT) -> dict[str, float | None]:
    """The VSM13 formulas with C = 0 (m[i] is the mean answer to item i); `mas_weight` is MAS's
    second weight (the manual's 35; 25 reproduces the original's code)."""
    def f(*terms: tuple[float, int, int]) -> float | None:
        total = 0.0
        for w, a, b in terms:
            if m.get(a) is None or m.get(b) is None:
                return None
            total += w * (m[a] - m[b])  # type: ignore[operator]
        return round(total, 4)
    return {"pdi": f((35, 7, 2), (25, 20, 23)), "idv": f((35, 4, 1), (35, 9, 6)),
            "mas": f((35, 5, 3), (mas_weight, 8, 10)), "uai": f((40, 18, 15), (25, 21, 24)),
            "lto": f((40, 13, 14), (25, 19, 22)), "ivr": f((35, 12, 11), (40, 17, 16))}


def load_scores(data_dir: Path) -> dict[str, dict[str, float | None]]:
    path = data_dir / "hofstede" / "6-dimensions-for-website-2015-08-16.csv"
    out = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter=";"):
            out[row["country"]] = {d: (None if row[c] in ("#NULL!", "") else float(row[c]))
                                   for d, c in CSV_COLUMNS.items()}
    return out


def parse_answer(text: str) -> int | None:
    code: int | None = parse_scale_answer(text, 1, 5)
    return code


def _valid(text: str) -> str | None:
    return None if parse_answer(text) is not None else "invalid_answer"


def item_request(culture: Culture, item: dict[str, Any], rendering: str, temperature: float, seed: int,
                 style: PromptStyle = "persona") -> Request:
    """persona: a typical person of the country; paper: the original's culture chatbot, multiple choice."""
    if style == "paper":
        system = paper_format.chatbot_system(culture.name)
        user = paper_format.scale_question(item["question"], item["scale"], 1, 5)
    else:
        system = (f"You are {culture.person}. Answer each survey question as a typical person from "
                  f"{culture.country} would, thinking of {culture.culture_phrase}.")
        user = (f"{item['question']}\nOptions: {item['scale']}\n"
                "Answer with a single number from 1 to 5.")
    return Request.instruction(system, user, "Answer (1-5):", rendering, 8 if rendering == "chat" else 4,
                               temperature, stop=["\n"], seed=seed, choices=("1", "2", "3", "4", "5"))


def distance(a: dict[str, float | None], b: dict[str, float | None], dims: list[str]) -> float | None:
    if not dims or any(a.get(d) is None or b.get(d) is None for d in dims):
        return None
    # no value is None here (checked above); the walrus filter only tells the type checker so
    return round(math.sqrt(sum((x - y) ** 2 for d in dims if (x := a[d]) is not None and (y := b[d]) is not None)), 4)


def centred_distances(model: dict[str, dict[str, Any]], human: dict[str, dict[str, Any]],
                      dims: list[str] | None = None) -> dict[str, float | None]:
    """C-free: centre each dimension over the compared cultures, then take distances.

    `dims` fixes the dimensions (every one must be defined, else all distances are None), so
    that distances computed apart — before and after, arm against arm — compare like with like;
    by default, the dimensions every culture has.
    """
    names = list(model)
    if len(names) < 2:
        return dict.fromkeys(names)
    defined = [d for d in DIMENSIONS if all(model[n].get(d) is not None and human[n].get(d) is not None
                                            for n in names)]
    if dims is None:
        dims = defined
    if not dims or not set(dims) <= set(defined):
        return dict.fromkeys(names)
    mc = {d: sum(model[n][d] for n in names) / len(names) for d in dims}
    hc = {d: sum(human[n][d] for n in names) / len(names) for d in dims}
    return {n: round(math.sqrt(sum(((model[n][d] - mc[d]) - (human[n][d] - hc[d])) ** 2 for d in dims)), 4)
            for n in names}


def _per_seed_means(results: dict[str, Any], chosen: list[Culture], items: list[dict[str, Any]], seeds: int,
                    samples: int, mas_weight: int = MAS_WEIGHT
                    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, int]]]:
    """Per culture and seed: each item's mean over its parseable samples, the indices, invalid counts."""
    per_seed: dict[str, list[dict[str, Any]]] = {c.name: [] for c in chosen}
    invalid: dict[str, dict[str, int]] = {}
    for c in chosen:
        inv: dict[str, int] = {}
        for s in range(seeds):
            means: dict[int, float | None] = {}
            for it in items:
                answers = []
                for n in range(samples):
                    r = results.get(f"{c.name}|s{s}|n{n}|q{it['item']}")
                    a = parse_answer(r.text) if r and r.text is not None else None
                    if a is None:
                        inv[str(it["item"])] = inv.get(str(it["item"]), 0) + 1
                    else:
                        answers.append(a)
                means[it["item"]] = round(sum(answers) / len(answers), 4) if answers else None
            per_seed[c.name].append({"seed": s, "item_means": {str(k): v for k, v in means.items()},
                                      "indices": indices(means, mas_weight)})
        invalid[c.name] = inv
    return per_seed, invalid


def with_constant(idx: dict[str, float | None], constant: float) -> dict[str, float | None]:
    return {d: None if v is None else round(v + constant, 4) for d, v in idx.items()}


def _add_distances(per_seed: dict[str, list[dict[str, Any]]], published: dict[str, dict[str, Any]],
                   seeds: int, constant: float) -> None:
    """Per seed: distances with C = 0 and with `constant`, per-dimension differences (with
    `constant`), and the centred (C-free) distance."""
    for s in range(seeds):
        centred = centred_distances({c: runs[s]["indices"] for c, runs in per_seed.items()}, published)
        for c, runs in per_seed.items():
            rec = runs[s]
            dims = [d for d in DIMENSIONS if published[c].get(d) is not None]
            rec["distance_c0"] = distance(rec["indices"], published[c], dims)
            idx = with_constant(rec["indices"], constant)
            rec["distance"] = distance(idx, published[c], dims)
            rec["diffs"] = {d: (None if idx[d] is None else round(idx[d] - published[c][d], 4)) for d in dims}
            rec["centred_distance"] = centred[c]


def published_country(culture: Culture, compat: HofstedePaperCompat | None) -> str:
    """The published row a culture is compared with: the table's, or Jordan for Arabic in the
    original's comparison."""
    if compat is not None and compat.arabic_vs_jordan and culture.name == "Arabic":
        return PAPER_ARABIC_COUNTRY
    return culture.hofstede or ""


async def evaluate(settings: EvalSettings, cultures: list[str], data_dir: Path, out: Path, seeds: int = 3,
                   samples: int = 1, temperature: float = 0.7, constant: float = 0.0,
                   say: Callable[[str], None] | None = None,
                   compat: HofstedePaperCompat | None = None) -> HofstedeResult:
    """`compat`: the original's scoring options (None or all off: the manual's scoring)."""
    rendering = settings.backend().rendering  # a bad model spec fails before any data is read
    style = settings.style()
    chosen = cultures_by_name(cultures, "hofstede")
    compat = None if compat is None or compat.is_default else compat
    if compat is not None and compat.arabic_vs_jordan and not any(c.name == "Arabic" for c in chosen):
        raise InputError("hofstede: --paper-arabic changes Arabic's comparison, and Arabic is not among the cultures")
    items = load_vsm13_items(data_dir)
    scores = load_scores(data_dir)
    batch = []
    for c in chosen:
        for s in range(seeds):
            for n in range(samples):
                for it in items:
                    batch.append(BatchItem(f"{c.name}|s{s}|n{n}|q{it['item']}",
                                           item_request(c, it, rendering, temperature, seed=s * 1000 + n, style=style),
                                           _valid))
    data_hash = digest(file_digest(data_dir / "hofstede" / "vsm13_items.jsonl"),
                       file_digest(data_dir / "hofstede" / "6-dimensions-for-website-2015-08-16.csv"))
    header = {"task": "hofstede", "cultures": [c.name for c in chosen], "seeds": seeds, "samples": samples,
              "temperature": temperature, "data_hash": data_hash, "prompt_style": style}
    results, info = await run_items(out, batch, settings, header, say)

    country = {c.name: published_country(c, compat) for c in chosen}
    published = {c.name: scores.get(country[c.name], {}) for c in chosen}
    per_seed, invalid = _per_seed_means(results, chosen, items, seeds, samples,
                                        compat.mas_weight if compat else MAS_WEIGHT)
    _add_distances(per_seed, published, seeds, constant)
    report = HofstedeResult(**info.model_dump(), data_hash=data_hash, seeds=seeds, samples=samples,
                            temperature=temperature, constant=constant,
                            **({"paper_compat": compat} if compat else {}),
                            cultures={c.name: _culture(country[c.name], per_seed[c.name], published[c.name],
                                                       invalid[c.name], seeds * samples * len(items))
                                      for c in chosen})
    report.write(out / "hofstede.json")
    return report


def _culture(country: str, runs: list[dict[str, Any]], published: dict[str, float | None],
             invalid: dict[str, int], answers: int) -> HofstedeCulture:
    """One culture's figures, mean ± std over its seeds."""
    dims = [d for d in DIMENSIONS if published.get(d) is not None]
    return HofstedeCulture(
        hofstede_country=country or None, published=published, dimensions_compared=dims,
        indices={d: mean_std(r["indices"][d] for r in runs) for d in DIMENSIONS},
        distance_c0=mean_std(r["distance_c0"] for r in runs),
        distance=mean_std(r["distance"] for r in runs),  # with the constant
        centred_distance=mean_std(r["centred_distance"] for r in runs),
        diffs={d: mean_std(r["diffs"].get(d) for r in runs) for d in dims},
        invalid_answers=sum(invalid.values()), invalid_by_item=invalid, answers=answers,
        per_seed=[HofstedeSeed.model_validate(r) for r in runs])
