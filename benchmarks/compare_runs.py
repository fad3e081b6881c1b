"""`culturepark eval compare-runs A B`: two runs side by side — a fork and its source, a direct-generation
run and a conversation run, two models: fidelity of each (its own delegate model unless `--model`),
phenomena of each (with `--judge`), and the diversity of each run's delegate turns over the other's."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from culturepark.benchmarks import fidelity, phenomena
from culturepark.benchmarks.diversity import gains_both_ways
from culturepark.benchmarks.eval_run import EvalSettings
from culturepark.benchmarks.results import CompareRunsResult, FidelitySide
from culturepark.engine.files import atomic_write_jsonl


def _delegate_texts(run_dir: Path, out: Path) -> Path:
    """The delegates' turns of a run's finished conversations, as a `{"text"}` JSONL for diversity."""
    _, rows = fidelity.load_run(run_dir)
    path = out / "delegate_turns.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(path, ({"text": t["text"]} for r, meta in rows for t in r["turns"]
                              if t["speaker"] == meta.participants.delegate.name))
    return path


async def compare_runs(a: Path, b: Path, out: Path, model: str | None = None, base_url: str | None = None,
                       judge: str | None = None, say: Callable[[str], None] | None = None) -> CompareRunsResult:
    from culturepark.scenarios.endpoints import make_embedder

    result = CompareRunsResult(runs={"A": str(a), "B": str(b)}, fidelity={})
    for name, run in (("A", a), ("B", b)):
        f = await fidelity.evaluate(run, out / name / "fidelity", model, base_url, resume=(out / name / "fidelity"
                                                                                           / "log.jsonl").exists(),
                                    say=say)
        result.fidelity[name] = FidelitySide.new(overall=f.overall, by_culture=f.by_culture)
        if judge:
            settings = EvalSettings(model=judge, base_url=base_url,
                                    resume=(out / name / "phenomena" / "log.jsonl").exists())
            p = await phenomena.evaluate(run, out / name / "phenomena", settings, say)
            result.phenomena = {**(result.phenomena or {}), name: p.by_culture}
    texts = {name: _delegate_texts(run, out / name) for name, run in (("A", a), ("B", b))}
    result.diversity = await gains_both_ways(texts["A"], texts["B"], make_embedder("local"))
    result.write(out / "compare_runs.json")
    return result
