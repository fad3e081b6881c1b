"""Entry point of the evaluation stage: one function per `culturepark eval` task, plus
`compare`, which runs the same tasks and seeds for several models side by side."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from culturepark.benchmarks import hofstede, moderation, wvs_items
from culturepark.benchmarks.eval_run import EvalSettings, slug
from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write_json as write_json


@dataclass(frozen=True)
class EvalTask:
    """One evaluation: `hofstede` or `wvs` over cultures, or `moderation` on one dataset."""

    kind: Literal["hofstede", "moderation", "wvs"]
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(self.args)}"


def parse_task(task: str) -> EvalTask:
    """`hofstede:Chinese,German`, `wvs:Chinese` or `moderation:english_offensive` (as `eval compare --tasks`
    takes them)."""
    kind, _, arg = task.partition(":")
    if kind not in ("hofstede", "moderation", "wvs") or not arg:
        raise InputError(f"task {task!r}: expected hofstede:CULTURE[,CULTURE...], wvs:CULTURE[,CULTURE...] "
                         "or moderation:DATASET")
    return EvalTask(kind, tuple(arg.split(",")))  # type: ignore[arg-type]


async def run_task(settings: EvalSettings, task: EvalTask, data_dir: Path, out: Path, seeds: int,
                   limit: int | None, samples: int, say: Callable[[str], None] | None = None,
                   constant: float = 0.0) -> dict[str, Any]:
    if task.kind == "hofstede":
        return await hofstede.evaluate(settings, list(task.args), data_dir, out, seeds=seeds, samples=samples,
                                       constant=constant, say=say)
    if task.kind == "wvs":
        return await wvs_items.evaluate(settings, list(task.args), data_dir, out, seeds=seeds, say=say)
    return await moderation.evaluate(settings, task.args[0], data_dir, out, seeds=seeds, limit=limit, say=say)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers a comparison table shows (mean ± std over seeds)."""
    if report["task"] == "wvs":
        return {c: {"agreement": v["all"]["agreement"], "mean_share": v["all"]["mean_share"],
                    "unparseable": v["all"]["unparseable"], "chance": v["all"]["chance_agreement"]}
                for c, v in report["cultures"].items()}
    if report["task"] == "hofstede":
        constant = report.get("constant", 0.0)  # absent before 0.4
        return {c: {"distance_c0": v["distance_c0"], "constant": constant,
                    "distance": v.get("distance", v["distance_c0"]), "centred_distance": v["centred_distance"],
                    "invalid": v["invalid_answers"]}
                for c, v in report["cultures"].items()}
    return {"macro_f1": report["macro_f1"], "macro_f1_scored": report.get("macro_f1_scored"),  # absent before 0.4
            "accuracy": report["accuracy"], "unparseable": report["unparseable"],
            "majority_macro_f1": report["majority_baseline"]["macro_f1"]}


async def compare(models: list[str], tasks: list[str], settings: EvalSettings, data_dir: Path, out: Path,
                  seeds: int, limit: int | None, samples: int,
                  say: Callable[[str], None] | None = None, constant: float = 0.0) -> dict[str, Any]:
    parsed = [parse_task(t) for t in tasks]
    rows = []
    for model in models:
        s = EvalSettings(**{**settings.__dict__, "model": model})
        for task in parsed:
            report = await run_task(s, task, data_dir, out / slug(model) / slug(str(task)), seeds, limit, samples, say,
                                    constant)
            rows.append({"model": model, "task": str(task), "result": headline(report), "seeds": report["seeds"],
                         "prompt_style": report.get("prompt_style"),
                         "items_hash": report["items_hash"], "prompts_hash": report["prompts_hash"],
                         "data_hash": report["data_hash"]})
    result = {"task": "compare", "models": models, "tasks": tasks, "seeds": seeds, "limit": limit, "rows": rows}
    write_json(out / "compare.json", result)
    return result


def table(result: dict[str, Any]) -> str:
    def fmt(ms: dict) -> str:
        return "n/a" if ms.get("mean") is None else f"{ms['mean']:.3f} ± {ms['std']:.3f}"
    lines = [f"{'model':32s} {'task':32s} result"]
    for r in result["rows"]:
        res = r["result"]
        if "macro_f1" in res:
            scored = res.get("macro_f1_scored") or {}
            text = (f"macro-F1 {fmt(res['macro_f1'])} (parseable only {fmt(scored)}, "
                    f"majority {res['majority_macro_f1']:.3f}, unparseable {res['unparseable']})")
        elif r["task"].startswith("wvs:"):
            text = "; ".join(f"{c}: agreement {fmt(v['agreement'])} (chance {v['chance']:.2f}), "
                             f"share {fmt(v['mean_share'])}, unparseable {v['unparseable']}" for c, v in res.items())
        else:
            text = "; ".join(f"{c}: d0 {fmt(v['distance_c0'])}"
                             + (f", d(C={v['constant']:g}) {fmt(v['distance'])}" if v.get("constant") else "")
                             + f", centred {fmt(v['centred_distance'])}" for c, v in res.items())
        lines.append(f"{r['model'][:32]:32s} {r['task'][:32]:32s} {text}")
    return "\n".join(lines)


__all__ = ["EvalTask", "compare", "headline", "parse_task", "run_task", "table", "write_json"]
