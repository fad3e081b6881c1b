"""Entry point of the evaluation stage: one function per `culturepark eval` task, plus
`compare`, which runs the same tasks and seeds for several models side by side."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from culturepark.benchmarks import hofstede, moderation, wvs_items
from culturepark.benchmarks.eval_run import EvalSettings, slug
from culturepark.benchmarks.evaluation import headline
from culturepark.benchmarks.results import (
    CompareResult,
    CompareRow,
    DistributionFidelity,
    Estimate,
    Headline,
    HofstedeHeadline,
    HofstedePaperCompat,
    HofstedeResult,
    MeanStd,
    ModerationHeadline,
    ModerationResult,
    Parse,
    WvsHeadline,
    WvsResult,
)
from culturepark.engine.errors import InputError


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
                   constant: float = 0.0, parse: Parse = "strict", hofstede_compat: HofstedePaperCompat | None = None
                   ) -> HofstedeResult | ModerationResult | WvsResult:
    if task.kind == "hofstede":
        return await hofstede.evaluate(settings, list(task.args), data_dir, out, seeds=seeds, samples=samples,
                                       constant=constant, say=say, compat=hofstede_compat)
    if task.kind == "wvs":
        return await wvs_items.evaluate(settings, list(task.args), data_dir, out, seeds=seeds, say=say)
    return await moderation.evaluate(settings, task.args[0], data_dir, out, seeds=seeds, limit=limit, say=say,
                                     parse=parse)


async def compare(models: list[str], tasks: list[str], settings: EvalSettings, data_dir: Path, out: Path,
                  seeds: int, limit: int | None, samples: int,
                  say: Callable[[str], None] | None = None, constant: float = 0.0,
                  parse: Parse = "strict", hofstede_compat: HofstedePaperCompat | None = None) -> CompareResult:
    parsed = [parse_task(t) for t in tasks]
    rows = []
    for model in models:
        s = replace(settings, model=model)
        for task in parsed:
            report = await run_task(s, task, data_dir, out / slug(model) / slug(str(task)), seeds, limit, samples, say,
                                    constant, parse, hofstede_compat)
            rows.append(row_for(model, task, report))
    result = CompareResult(models=models, tasks=tasks, seeds=seeds, limit=limit, rows=rows)
    result.write(out / "compare.json")
    return result


def row_for(model: str, task: EvalTask, report: HofstedeResult | ModerationResult | WvsResult) -> CompareRow:
    """A result's row of a comparison: its headline and the hashes that show what was compared."""
    return CompareRow(model=model, task=str(task), result=headline(report), seeds=report.seeds,
                      prompt_style=report.prompt_style, items_hash=report.items_hash,
                      prompts_hash=report.prompts_hash, data_hash=report.data_hash)


def _fmt(ms: MeanStd | None) -> str:
    return "n/a" if ms is None or ms.mean is None or ms.std is None else f"{ms.mean:.3f} ± {ms.std:.3f}"


def distribution_text(d: DistributionFidelity) -> str:
    """The distribution figures with their 95 % intervals (benchmarks/distribution.py names their sources)."""
    def est(e: Estimate) -> str:
        return f"{e.value:.3f} [{e.interval[0]:.3f}, {e.interval[1]:.3f}]"
    return (f", W1 {est(d.w1)}, W1<0.2 {est(d.share_w1_below_0_2)}, representativeness {est(d.representativeness)}, "
            f"1-JSD {est(d.js_similarity)} ({d.items} items, {distribution_source(d)})")


def distribution_source(d: DistributionFidelity) -> str:
    """Where the distributions came from; with answer probabilities, the mass put outside the options."""
    text = d.source
    if d.source == "mixed" and d.methods:
        text += " " + ", ".join(f"{m} {n}" for m, n in sorted(d.methods.items()))
    if d.outside_mass is not None:
        text += f", mass outside the options {d.outside_mass:.3f}"
    return text


def row_text(task: str, res: Headline) -> str:
    """One comparison cell: a task's headline for one model."""
    if isinstance(res, ModerationHeadline):
        if res.parse == "paper":  # the paper's reading and the strict one of the same answers, side by side
            return (f"parse paper: macro-F1 {_fmt(res.macro_f1)} lenient | {_fmt(res.macro_f1_strict)} strict "
                    f"(majority {res.majority_macro_f1:.3f}, unparseable {res.unparseable})")
        return (f"macro-F1 {_fmt(res.macro_f1)} (parseable only {_fmt(res.macro_f1_scored)}, "
                f"majority {res.majority_macro_f1:.3f}, unparseable {res.unparseable})")
    parts = []
    compat = next((v.paper_compat for v in res.values() if isinstance(v, HofstedeHeadline) and v.paper_compat), None)
    if compat is not None:  # the original's scoring, never silently mixed with the manual's
        parts.append("paper-compat: " + ", ".join(compat.labels()))
    for c, v in res.items():
        if isinstance(v, WvsHeadline):
            chance = "n/a" if v.chance is None else f"{v.chance:.2f}"
            parts.append(f"{c}: agreement {_fmt(v.agreement)} (chance {chance}), share {_fmt(v.mean_share)}, "
                         f"unparseable {v.unparseable}" + (distribution_text(v.distribution) if v.distribution else ""))
        else:
            parts.append(f"{c}: d0 {_fmt(v.distance_c0)}"
                         + (f", d(C={v.constant:g}) {_fmt(v.distance)}" if v.constant else "")
                         + f", centred {_fmt(v.centred_distance)}")
    return "; ".join(parts)


def table(result: CompareResult) -> str:
    lines = [f"{'model':32s} {'task':32s} result"]
    lines += [f"{r.model[:32]:32s} {r.task[:32]:32s} {row_text(r.task, r.result)}" for r in result.rows]
    return "\n".join(lines)


__all__ = ["EvalTask", "compare", "headline", "parse_task", "row_for", "row_text", "run_task", "table"]
