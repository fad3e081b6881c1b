"""`culturepark eval moderation`: yes/no content moderation in a culture's frame, macro-F1.

A dataset is a small YAML spec (bundled for the nine shared sets; users write their own).
Rows whose label is in neither list are reported and skipped, not guessed. Answers that
cannot be read as yes/no after retries are counted as `unparseable`, and scored two ways:
`macro_f1` / `accuracy` count them as wrong (the paper's way, the primary figure: a model
that answers 60 % of the rows perfectly scores 0.75, not 1.00), `macro_f1_scored` /
`accuracy_scored` leave them out; `coverage` says how many could be read. The same rows
(a seeded sample when `--limit` is given) are used for every model and seed.

`--parse paper` asks as the original (CultureLLM's test_offensEval.py) did, for comparison with the
paper's figures: the spec's per-task question and label words (`paper_prompt`, `paper_labels`),
once, read leniently (an answer containing "not" is negative when the negative word has "not" in it,
else the first label word found in it wins). The same answers are also read strictly (the answer is
one label word and nothing else: `macro_f1_strict`), so both F1s sit side by side. The file records
which mode made it (`parse`); the strict mode is the default and its hashes are unchanged.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from culturepark.agents import paper_format
from culturepark.agents.cultures import load_table
from culturepark.agents.paper_format import PromptStyle
from culturepark.benchmarks.eval_run import EvalSettings, digest, file_digest, run_items
from culturepark.benchmarks.results import (
    DatasetSpec,
    MajorityBaseline,
    ModerationResult,
    ModerationSeed,
    PaperLabels,
    Parse,
)
from culturepark.benchmarks.stats import mean_std
from culturepark.engine.backends.base import Request
from culturepark.engine.batch import BatchItem, BatchResult
from culturepark.engine.errors import InputError
from culturepark.scenarios.loader import load_config

_YES = re.compile(r"\b(yes|no)\b", re.I)


def bundled_specs() -> dict[str, Path]:
    root = Path(str(resources.files("culturepark.benchmarks") / "specs"))
    return {p.stem: p for p in sorted(root.glob("*.yaml"))}


def load_spec(name_or_path: str) -> DatasetSpec:
    specs = bundled_specs()
    path = specs.get(name_or_path) or Path(name_or_path)
    if not path.exists():
        raise InputError(f"moderation: {name_or_path!r} is not a spec file or bundled set ({', '.join(specs)})")
    return load_config(DatasetSpec, path)


def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSONL data file; a corrupt line is bad input named `file:line`."""
    out = []
    for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"moderation: {path}:{lineno}: not a JSON line ({exc})") from exc
        if not isinstance(rec, dict):
            raise InputError(f"moderation: {path}:{lineno}: expected a JSON object, found {type(rec).__name__}")
        out.append((lineno, rec))
    return out


def _check_fields(spec: DatasetSpec, path: Path, records: list[tuple[int, dict[str, Any]]]) -> None:
    """Before any request: the spec's fields exist in the data and some labels are the spec's."""
    for field in (spec.text_field, spec.label_field):
        missing = next((n for n, rec in records if field not in rec), None)
        if missing is not None:
            keys = ", ".join(sorted(records[0][1])) if records else "none"
            raise InputError(f"moderation {spec.name}: {path}:{missing}: no field {field!r} "
                             f"(the spec's {'text_field' if field == spec.text_field else 'label_field'}; "
                             f"fields there: {keys})")
    labels = {str(rec[spec.label_field]) for _, rec in records}
    if records and not labels & set(spec.positive_labels + spec.negative_labels):
        raise InputError(f"moderation {spec.name}: no row of {path} has a label of the spec (labels there: "
                         f"{', '.join(sorted(labels)[:10])}; spec: {spec.positive_labels + spec.negative_labels})")


def load_rows(spec: DatasetSpec, data_dir: Path,
              limit: int | None) -> tuple[list[dict[str, Any]], dict[str, int], Path]:
    path = Path(spec.path) if Path(spec.path).is_absolute() else data_dir / spec.path
    if not path.exists():
        raise InputError(f"moderation {spec.name}: {path} not found (set --data-dir)")
    records = _records(path)
    _check_fields(spec, path, records)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for lineno, rec in records:
        i = lineno - 1
        label = str(rec.get(spec.label_field))
        if label in spec.positive_labels or label in spec.negative_labels:
            rows.append({"row": i, "text": str(rec.get(spec.text_field, "")),
                         "label": int(label in spec.positive_labels)})
        else:
            skipped[label] = skipped.get(label, 0) + 1
    if limit is not None and limit < len(rows):
        rows = sorted(random.Random(0).sample(rows, limit), key=lambda r: r["row"])
    return rows, skipped, path


def parse_yes_no(text: str) -> int | None:
    """yes → 1, no → 0; an answer with both ("Yes or no") repeats the question, not an answer."""
    found = {m.lower() for m in _YES.findall(text)}
    return int(found == {"yes"}) if len(found) == 1 else None


def parse_paper(text: str, labels: PaperLabels) -> int | None:
    """The original's lenient reading of a label-word answer: when the negative word contains "not"
    (NOT_OFF, NOT_HS) any "not" in the answer makes it negative ("Not offensive", "I would not say
    OFF"); otherwise the positive word, then the negative word, found anywhere (case-insensitive)
    decides ("1" before "0"). None: neither found (the original kept the raw text, wrong for both)."""
    low = text.lower()
    if "not" in labels.negative.lower() and "not" in low:
        return 0
    for cls, word in ((1, labels.positive), (0, labels.negative)):
        if word.lower() in low:
            return cls
    return None


def parse_label_strict(text: str, labels: PaperLabels) -> int | None:
    """A label-word answer read strictly: the whole answer is one of the two words (case, quotes,
    surrounding punctuation and spaces aside); anything more is unreadable."""
    word = text.strip().strip("\"'`.,!:;()[]* \n").lower()
    return {labels.positive.lower(): 1, labels.negative.lower(): 0}.get(word)


def _valid(text: str) -> str | None:
    return None if parse_yes_no(text) is not None else "unparseable_answer"


def moderator_persona(spec: DatasetSpec, style: PromptStyle = "persona") -> str:
    """The system prompt: who judges (from the culture table, read once per eval); in the paper
    style, the original's culture chatbot."""
    culture = load_table().get((spec.culture or "").lower())
    if style == "paper":
        system: str = paper_format.chatbot_system(culture.name if culture else spec.language)
        return system
    who = f"{culture.person} who moderates {spec.language} social media" if culture else \
        f"a moderator of {spec.language} social media"
    return f"You are {who}. You judge posts the way people of that culture would."


def moderation_request(spec: DatasetSpec, system: str, text: str, rendering: str, temperature: float,
                       seed: int) -> Request:
    user = f"Does the following post contain {spec.task}?\n\nPost: {text}\n\nAnswer yes or no."
    return Request.instruction(system, user, "Answer (yes or no):", rendering, 4 if rendering == "chat" else 3,
                               temperature, stop=["\n"], seed=seed, choices=("yes", "no"))


def paper_request(spec: DatasetSpec, system: str, text: str, rendering: str, temperature: float,
                  seed: int) -> Request:
    """The original's question: its instruction with the post after it, in one user message."""
    assert spec.paper_prompt is not None
    return Request.instruction(system, f"{spec.paper_prompt} {text}", "Answer:", rendering, 8, temperature,
                               stop=["\n"], seed=seed)


def paper_spec(spec: DatasetSpec) -> PaperLabels:
    """The spec's paper label words; a spec without them cannot be asked the paper's way (bad input)."""
    if spec.paper_labels is None:
        raise InputError(f"moderation {spec.name}: --parse paper needs paper_prompt and paper_labels in the spec "
                         f"(the original's question and label words, e.g. OFF / NOT_OFF)")
    return spec.paper_labels


UNPARSEABLE = -1  # a prediction of neither class: a false negative for the row's own class


def f1_scores(gold: list[int], pred: list[int]) -> dict[str, float]:
    """Per-class F1, macro-F1 and accuracy; an UNPARSEABLE prediction counts as wrong."""
    out = {}
    for cls in (1, 0):
        tp = sum(g == cls and p == cls for g, p in zip(gold, pred))
        fp = sum(g != cls and p == cls for g, p in zip(gold, pred))
        fn = sum(g == cls and p != cls for g, p in zip(gold, pred))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        out["f1_positive" if cls else "f1_negative"] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    out["macro_f1"] = (out["f1_positive"] + out["f1_negative"]) / 2
    out["accuracy"] = sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0
    return {k: round(v, 4) for k, v in out.items()}


Reader = Callable[[str], int | None]


def _predictions(seed: int, rows: list[dict[str, Any]], results: dict[str, BatchResult], read: Reader) -> list[int]:
    pred = []
    for r in rows:
        res = results.get(f"s{seed}|r{r['row']}")
        p = read(res.text) if res and res.text is not None else None
        pred.append(UNPARSEABLE if p is None else p)
    return pred


def _seed_scores(seed: int, rows: list[dict[str, Any]], results: dict[str, BatchResult], reader: Reader,
                 strict: Reader | None = None) -> ModerationSeed:
    """One seed's scores both ways: over every row (unparseable = wrong) and over parseable rows;
    with `strict` (the paper parse), also the macro-F1 of the same answers read strictly."""
    gold = [r["label"] for r in rows]
    pred = _predictions(seed, rows, results, reader)
    read = [(g, p) for g, p in zip(gold, pred) if p != UNPARSEABLE]
    scored = f1_scores([g for g, _ in read], [p for _, p in read])
    extra = {} if strict is None else \
        {"macro_f1_strict": f1_scores(gold, _predictions(seed, rows, results, strict))["macro_f1"]}
    return ModerationSeed(seed=seed, **f1_scores(gold, pred), **extra, macro_f1_scored=scored["macro_f1"],
                          accuracy_scored=scored["accuracy"], unparseable=len(rows) - len(read),
                          coverage=round(len(read) / len(rows), 4),
                          predicted_positive_rate=round(sum(p for _, p in read) / len(read), 4) if read else None)


async def evaluate(settings: EvalSettings, dataset: str, data_dir: Path, out: Path, seeds: int = 3,
                   limit: int | None = None, temperature: float = 0.7,
                   say: Callable[[str], None] | None = None, parse: Parse = "strict") -> ModerationResult:
    rendering = settings.backend().rendering  # a bad model spec fails before any data is read
    spec = load_spec(dataset)
    labels = paper_spec(spec) if parse == "paper" else None  # before any data is read or request sent
    rows, skipped, path = load_rows(spec, data_dir, limit)
    if not rows:
        raise InputError(f"moderation {spec.name}: no rows with a known label")
    style = settings.style()
    system = moderator_persona(spec, style)
    if labels is None:
        batch = [BatchItem(f"s{s}|r{r['row']}", moderation_request(spec, system, r["text"], rendering, temperature,
                                                                   seed=s), _valid) for s in range(seeds) for r in rows]
    else:  # one attempt each: no validator, so nothing is re-asked
        batch = [BatchItem(f"s{s}|r{r['row']}", paper_request(spec, system, r["text"], rendering, temperature, seed=s))
                 for s in range(seeds) for r in rows]
    data_hash = digest(file_digest(path), spec.model_dump(mode="json") if labels else spec.strict_view())
    header = {"task": "moderation", "dataset": spec.name, "seeds": seeds, "limit": limit,
              "temperature": temperature, "data_hash": data_hash, "prompt_style": style, "parse": parse}
    results, info = await run_items(out, batch, settings, header, say)
    gold_all = [r["label"] for r in rows]
    majority = int(sum(gold_all) * 2 > len(gold_all))
    if labels is None:
        per_seed = [_seed_scores(s, rows, results, parse_yes_no) for s in range(seeds)]
    else:
        lab = labels
        per_seed = [_seed_scores(s, rows, results, lambda t: parse_paper(t, lab),
                                 lambda t: parse_label_strict(t, lab)) for s in range(seeds)]
    keys = ["macro_f1", "f1_positive", "f1_negative", "accuracy", "macro_f1_scored", "accuracy_scored", "coverage"]
    mean = {k: mean_std(getattr(p, k) for p in per_seed) for k in keys + (["macro_f1_strict"] if labels else [])}
    scoring = "macro_f1/accuracy count unparseable answers as wrong (the paper's); *_scored leave them out"
    if labels:
        scoring += ("; parse paper: the original's question, one attempt, lenient reading; macro_f1_strict reads "
                    "the same answers strictly (the answer is one label word)")
    report = ModerationResult(
        **info.model_dump(), parse=parse, dataset=spec.name, spec=spec, data_hash=data_hash, seeds=seeds,
        rows=len(rows), positives=sum(gold_all), skipped_unknown_labels=skipped, temperature=temperature,
        scoring=scoring, **mean, unparseable=sum(p.unparseable for p in per_seed),
        majority_baseline=MajorityBaseline(predicts="positive" if majority else "negative",
                                           **f1_scores(gold_all, [majority] * len(gold_all))),
        per_seed=per_seed)
    report.write(out / "moderation.json")
    return report
