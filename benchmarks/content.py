"""`culturepark eval content REFINE_DIR --model JUDGE`: the paper's content analysis — each kept
opinion classified as a belief, a norm or a custom; shares per culture, with counts."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from culturepark.benchmarks import judge
from culturepark.benchmarks.eval_run import EvalSettings, digest, run_items
from culturepark.benchmarks.results import ContentResult
from culturepark.engine.batch import BatchItem
from culturepark.engine.errors import InputError

KINDS = ("belief", "norm", "custom")
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


async def evaluate(refine_dir: Path, out: Path, settings: EvalSettings,
                   say: Callable[[str], None] | None = None) -> ContentResult:
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
    for o in opinions:
        res = results.get(o["opinion_id"])
        label = judge.label_of(res.text, KINDS) if res and res.text is not None else None
        labels[o["culture"]].append(label)
        labels["all"].append(label)
    report = ContentResult(**info.model_dump(), source=str(refine_dir),
                           by_culture={c: judge.shares(v, KINDS) for c, v in sorted(labels.items())})
    report.write(out / "content.json")
    return report
