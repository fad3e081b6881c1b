"""`culturepark eval compare-runs A B`: two runs side by side — a fork and its source, a direct-generation
run and a conversation run, two models: fidelity of each (its own delegate model unless `--model`),
phenomena of each (with `--judge`), and the diversity of each run's texts over the other's.

A direct run (`kind: direct`) is accepted on either side. It has no conversation — one request per
culture and item, no turns between two agents — so what needs one is not measured on it, and the
result says so (`kinds`, `not_measured`):
- fidelity: the re-ask tests whether a delegate still holds its stance after a conversation; a direct
  delegate is told its answer in the very request that generates its reasons, so re-asking it measures
  copying from the prompt, not holding a stance;
- phenomena: stance shift and the paper's extend rate / understanding ratio are judged over a
  conversation's turns; a direct run has none.
Diversity is measured on both sides, each run's texts in its own unit (`run_texts`): a conversation
run's delegate turns, a direct run's reasons one per line (the original's unit); each row names them.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from culturepark.benchmarks import fidelity, phenomena
from culturepark.benchmarks.diversity import gains_both_ways
from culturepark.benchmarks.eval_run import EvalSettings
from culturepark.benchmarks.results import CompareRunsResult, FidelitySide
from culturepark.benchmarks.run_texts import UNITS, write_run_texts

NOT_ON_DIRECT = [
    "fidelity: a direct delegate is told its answer in the request that generates its reasons; re-asking it "
    "would measure copying from the prompt, not holding a stance over a conversation",
    "phenomena: stance shift and extend rate are judged over a conversation's turns; a direct run has none",
]


async def compare_runs(a: Path, b: Path, out: Path, model: str | None = None, base_url: str | None = None,
                       judge: str | None = None, say: Callable[[str], None] | None = None) -> CompareRunsResult:
    from culturepark.scenarios.endpoints import make_embedder

    # each side's kind and texts first: a directory that is not a run is refused before any request
    texts = {name: write_run_texts(run, out / name) for name, run in (("A", a), ("B", b))}
    kinds = {name: kind for name, (kind, _) in texts.items()}
    result = CompareRunsResult(runs={"A": str(a), "B": str(b)}, fidelity={})
    if "direct" in kinds.values():
        result.kinds = dict(kinds)
        result.not_measured = {name: NOT_ON_DIRECT for name, kind in kinds.items() if kind == "direct"}
    for name, run in (("A", a), ("B", b)):
        if kinds[name] == "direct":
            continue
        f = await fidelity.evaluate(run, out / name / "fidelity", model, base_url, resume=(out / name / "fidelity"
                                                                                           / "log.jsonl").exists(),
                                    say=say)
        result.fidelity[name] = FidelitySide.new(overall=f.overall, by_culture=f.by_culture)
        if judge:
            settings = EvalSettings(model=judge, base_url=base_url,
                                    resume=(out / name / "phenomena" / "log.jsonl").exists())
            p = await phenomena.evaluate(run, out / name / "phenomena", settings, say)
            result.phenomena = {**(result.phenomena or {}), name: p.by_culture}
    result.diversity = await gains_both_ways(texts["A"][1], texts["B"][1], make_embedder("local"),
                                             (UNITS[kinds["A"]], UNITS[kinds["B"]]) if result.kinds else
                                             (None, None))
    result.write(out / "compare_runs.json")
    return result
