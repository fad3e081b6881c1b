"""`culturepark eval content REFINE_DIR --model JUDGE`: the paper's content analysis — each kept
opinion classified as a belief, a norm or a custom; shares per culture, with counts. With
`--second-level`, each classified opinion is asked again for the original's sub-category of its
kind (its dataset_analysis.py prompts: religious / political / … beliefs, descriptive / injunctive
/ … norms, social / religious / … customs), in a second pass of its own (OUT/second_level). The
original asked custom opinions the norm question (a slip: no custom word could match); we ask the
custom one."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from culturepark.benchmarks import judge
from culturepark.benchmarks.eval_run import EvalSettings, digest, run_items
from culturepark.benchmarks.results import ContentResult, LabelShares
from culturepark.engine.backends.base import Request
from culturepark.engine.batch import BatchItem
from culturepark.engine.errors import InputError

KINDS = ("belief", "norm", "custom")
# The original's second-level prompts and the words its counts were keyed by (dataset_analysis.py).
SUBKINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "belief": ("Please classify the paragraph. Just answer with Religious Beliefs, Political Beliefs, Social Beliefs, "
               "Economic Beliefs, Moral and Ethical Beliefs, or Scientific Beliefs",
               ("religious", "political", "social", "economic", "ethical", "scientific")),
    "norm": ("Please classify the paragraph. Just answer with Descriptive Norms, Injunctive Norms, Prescriptive Norms, "
             "Proscriptive Norms, Legal Norms, or Traditional Norms",
             ("descriptive", "injunctive", "prescriptive", "proscriptive", "legal", "traditional")),
    "custom": ("Please classify the paragraph. Just answer with Social Customs, Religious Customs, Cultural Customs, "
               "Family Customs, Community Customs, or Economic Customs",
               ("social", "religious", "cultural", "family", "community", "economic")),
}
SYSTEM = "You classify statements about culture."
DEFINITIONS = ("A belief is a view of what is true or good; a norm is a rule of how people should behave; "
               "a custom is a practice or tradition people follow.")


def kept_opinions(refine_dir: Path) -> list[dict[str, Any]]:
    path = Path(refine_dir) / "opinions.jsonl"
    if not path.exists():
        raise InputError(f"content: no opinions.jsonl in {refine_dir} (give a refine output directory)")
    rows = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"content: {path}:{n}: not a JSON line") from exc
        if rec.get("kept"):
            rows.append(rec)
    return rows


def _second_level_request(kind: str, text: str, rendering: str) -> BatchItem:
    prompt, words = SUBKINDS[kind]
    req = Request.instruction(SYSTEM, f"{prompt}\nParagraph: {text}", "Answer:", rendering, 12, 0.0, stop=["\n"])
    return BatchItem("", req, judge.validator(words))


async def _second_level(opinions: list[dict[str, Any]], kinds: dict[str, str | None], out: Path,
                        settings: EvalSettings, rendering: str, say: Callable[[str], None] | None
                        ) -> dict[str, dict[str, LabelShares]]:
    """Per culture and kind, the shares of the original's sub-categories over the opinions of that kind."""
    asked = [o for o in opinions if kinds[o["opinion_id"]] is not None]
    items = []
    for o in asked:
        item = _second_level_request(str(kinds[o["opinion_id"]]), o["text"], rendering)
        items.append(BatchItem(o["opinion_id"], item.request, item.validate))
    header = {"task": "content-second-level", "source_hash": digest([(o["opinion_id"], kinds[o["opinion_id"]])
                                                                     for o in asked])}
    results, _info = await run_items(out / "second_level", items, settings, header, say)
    labels: dict[str, dict[str, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    for o in asked:
        kind = str(kinds[o["opinion_id"]])
        res = results.get(o["opinion_id"])
        label = judge.label_of(res.text, SUBKINDS[kind][1]) if res and res.text is not None else None
        for key in (o["culture"], "all"):
            labels[key][kind].append(label)
    return {c: {k: judge.shares(v, SUBKINDS[k][1]) for k, v in sorted(ks.items())} for c, ks in sorted(labels.items())}


async def evaluate(refine_dir: Path, out: Path, settings: EvalSettings,
                   say: Callable[[str], None] | None = None, second_level: bool = False) -> ContentResult:
    rendering = settings.backend().rendering  # a bad spec fails before any data is read
    opinions = kept_opinions(refine_dir)
    if not opinions:
        raise InputError(f"content: {refine_dir} has no kept opinion")
    items = [BatchItem(o["opinion_id"], judge.ask(SYSTEM, f"{DEFINITIONS}\n\nStatement: {o['text']}\n\n"
                                                          "Is this statement a belief, a norm or a custom?",
                                                  KINDS, rendering), judge.validator(KINDS)) for o in opinions]
    header = {"task": "content", "source": str(refine_dir), "source_hash": digest([o["opinion_id"] for o in opinions])}
    results, info = await run_items(out, items, settings, header, say)
    labels: dict[str, list[str | None]] = defaultdict(list)
    kinds: dict[str, str | None] = {}
    for o in opinions:
        res = results.get(o["opinion_id"])
        label = judge.label_of(res.text, KINDS) if res and res.text is not None else None
        kinds[o["opinion_id"]] = label
        labels[o["culture"]].append(label)
        labels["all"].append(label)
    extra = {"second_level": await _second_level(opinions, kinds, out, settings, rendering, say)} if second_level \
        else {}
    report = ContentResult(**info.model_dump(), source=str(refine_dir),
                           by_culture={c: judge.shares(v, KINDS) for c, v in sorted(labels.items())},
                           level="second" if second_level else "top", **extra)
    report.write(out / "content.json")
    return report
