"""What every evaluation declares once: its name, its result model, its file, how its result is
summarised on the terminal and, for those `eval compare` runs, the headline a comparison row shows.

The CLI, `eval compare`, `paper` and `report` go through `EVALUATIONS`, so an evaluation added
here is written, read back, printed and found by the report in the typed shape.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from culturepark.benchmarks.results import (
    CompareResult,
    CompareRunsResult,
    ContentResult,
    DiversityResult,
    EducationResult,
    FidelityResult,
    Headline,
    HofstedeHeadline,
    HofstedeResult,
    LabelShares,
    ModerationHeadline,
    ModerationResult,
    PhenomenaResult,
    ResultModel,
    StanceJudge,
    WvsHeadline,
    WvsResult,
    read_result,
)

R = TypeVar("R", bound=ResultModel)


@dataclass(frozen=True)
class Evaluation(Generic[R]):
    """One evaluation: the file it writes under its output directory and the model that file holds."""

    name: str
    file_name: str
    result: type[R]
    summary: Callable[[R], list[str]]  # the lines `culturepark eval NAME` prints without --json

    def read(self, path: Path) -> R:
        result: R = read_result(path, self.result)
        return result

    def find(self, root: Path) -> list[tuple[Path, R]]:
        """Every result of this evaluation under `root`: (its directory, its result)."""
        return [(p.parent, self.read(p)) for p in sorted(Path(root).rglob(self.file_name))]


def hofstede_headline(r: HofstedeResult) -> dict[str, HofstedeHeadline]:
    compat = {"paper_compat": r.paper_compat} if r.paper_compat else {}
    return {c: HofstedeHeadline(distance_c0=v.distance_c0, constant=r.constant, distance=v.distance_with_constant,
                                centred_distance=v.centred_distance, invalid=v.invalid_answers, **compat)
            for c, v in r.cultures.items()}


def wvs_headline(r: WvsResult) -> dict[str, WvsHeadline]:
    return {c: WvsHeadline(agreement=v.all.agreement, mean_share=v.all.mean_share, unparseable=v.all.unparseable,
                           chance=v.all.chance_agreement,
                           **({"distribution": v.all.distribution} if v.all.distribution else {}))
            for c, v in r.cultures.items()}


def moderation_headline(r: ModerationResult) -> ModerationHeadline:
    paper = {"parse": r.parse, "macro_f1_strict": r.macro_f1_strict} if r.parse == "paper" else {}
    return ModerationHeadline(macro_f1=r.macro_f1, macro_f1_scored=r.macro_f1_scored, accuracy=r.accuracy,
                              unparseable=r.unparseable, majority_macro_f1=r.majority_baseline.macro_f1, **paper)


def headline(r: HofstedeResult | ModerationResult | WvsResult) -> Headline:
    """The numbers a comparison table shows (mean ± std over seeds)."""
    if isinstance(r, HofstedeResult):
        return hofstede_headline(r)
    if isinstance(r, WvsResult):
        return wvs_headline(r)
    return moderation_headline(r)


def _fidelity_lines(r: FidelityResult) -> list[str]:
    o = r.overall
    lines = []
    if r.judge:
        lines += _judge_lines("blind judge", r.judge)
        if r.control:
            lines += _judge_lines("control run, same judge (the culture prior)", r.control)
        if r.lift:
            lines.append(f"lift over the control: exact {r.lift.exact}, within one {r.lift.within_one}")
    lines += [f"self_report (the delegate re-asked with its prompt in place: not evidence of adherence): "
              f"exact {o.exact}, within one step {o.within_one}, unparseable {o.unparseable} "
              f"of {o.conversations} conversations"]
    lines += [f"  {culture}: exact {c.exact}, within one {c.within_one} ({c.conversations})"
              for culture, c in r.by_culture.items()]
    if r.population:
        from culturepark.benchmarks.compare import distribution_text
        lines.append("assigned stances vs the respondents (is the sampling faithful?):")
        lines += [f"  {culture}{distribution_text(d)[1:]}" for culture, d in r.population.by_culture.items()]
    return lines


def _judge_lines(what: str, j: StanceJudge) -> list[str]:
    o = j.overall
    lines = [f"{what} {j.model_spec}: exact {o.exact}, within one {o.within_one}, unclear {o.unclear_rate}, "
             f"unparseable {o.unparseable} of {o.conversations} conversations"]
    lines += [f"  {culture}: exact {c.exact}, within one {c.within_one}, unclear {c.unclear_rate} "
              f"({c.conversations})" for culture, c in j.by_culture.items()]
    if j.drift:
        lines.append("  drift (judge on the delegate's turns up to k): " +
                     ", ".join(f"k={p.k} exact {p.exact}" for p in j.drift))
    return lines


def _judged_line(question: str, shares: LabelShares) -> str:
    return (f"{question}: " + ", ".join(f"{k} {v.share}" for k, v in shares.labels.items())
            + f" ({shares.judged} judged, {shares.unparseable} unparseable)")


def _phenomena_lines(r: PhenomenaResult) -> list[str]:
    head = (["construct paper (the original's): extend rate and understanding ratio per delegate turn"]
            if r.mode == "paper" else [])
    return head + [f"{culture}: " + "; ".join(_judged_line(q, s) for q, s in qs.items())
                   for culture, qs in r.by_culture.items()]


def _content_lines(r: ContentResult) -> list[str]:
    lines = [f"{culture}: {_judged_line('kind', s)}" for culture, s in r.by_culture.items()]
    for culture, kinds in (r.second_level or {}).items():
        lines += [f"{culture} {kind}: {_judged_line('sub-category', s)}" for kind, s in kinds.items()]
    return lines


def _diversity_lines(r: DiversityResult) -> list[str]:
    return [f"{x.new_file}: diversity gain {x.diversity_gain:.4f} ± {x.std:.4f} Euclidean, "
            f"{x.diversity_gain_cosine or float('nan'):.4f} ± {x.std_cosine or float('nan'):.4f} cosine "
            f"({x.new} new vs {x.reference} reference texts, {x.embeddings})"
            + (f"; new texts: {x.new_texts}" if x.new_texts else "")
            + (f"; reference texts: {x.reference_texts}" if x.reference_texts else "") for x in r.rows]


def _compare_runs_lines(r: CompareRunsResult) -> list[str]:
    lines = []
    for name in ("A", "B"):
        if name not in r.fidelity:  # a direct run: no conversation, so no fidelity or phenomena side
            lines.append(f"{name} {r.runs[name]} (direct run): not measured: "
                         + "; ".join((r.not_measured or {}).get(name, [])))
            continue
        f = r.fidelity[name].overall
        shift = (r.phenomena or {}).get(name, {}).get("all", {}).get("stance_shift")
        lines.append(f"{name} {r.runs[name]}: self_report exact {f.exact}, within one {f.within_one}, "
                     f"unparseable {f.unparseable}" + (f"; stance shifted {shift.share('yes')}" if shift else ""))
    if r.diversity is not None:
        lines.append(f"diversity: B over A {r.diversity.B_over_A.diversity_gain}, "
                     f"A over B {r.diversity.A_over_B.diversity_gain}")
        d = r.diversity.A_over_B
        if d.new_texts and d.reference_texts:
            lines.append(f"  texts: A = {d.new_texts} ({d.new}); B = {d.reference_texts} ({d.reference})")
    return lines


def _table_lines(r: HofstedeResult | ModerationResult | WvsResult) -> list[str]:
    from culturepark.benchmarks.compare import row_text

    return [row_text(r.task, headline(r))]


def _compare_lines(r: CompareResult) -> list[str]:
    from culturepark.benchmarks.compare import table

    lines: list[str] = table(r).splitlines()
    return lines


def _education_lines(r: EducationResult) -> list[str]:
    from culturepark.benchmarks.education import table

    lines: list[str] = table(r).splitlines()
    return lines


HOFSTEDE = Evaluation("hofstede", "hofstede.json", HofstedeResult, _table_lines)
MODERATION = Evaluation("moderation", "moderation.json", ModerationResult, _table_lines)
WVS = Evaluation("wvs", "wvs.json", WvsResult, _table_lines)
FIDELITY = Evaluation("fidelity", "fidelity.json", FidelityResult, _fidelity_lines)
PHENOMENA = Evaluation("phenomena", "phenomena.json", PhenomenaResult, _phenomena_lines)
CONTENT = Evaluation("content", "content.json", ContentResult, _content_lines)
DIVERSITY = Evaluation("diversity", "diversity.json", DiversityResult, _diversity_lines)
EDUCATION = Evaluation("education", "education.json", EducationResult, _education_lines)
COMPARE = Evaluation("compare", "compare.json", CompareResult, _compare_lines)
COMPARE_RUNS = Evaluation("compare-runs", "compare_runs.json", CompareRunsResult, _compare_runs_lines)

EVALUATIONS: dict[str, Evaluation[Any]] = {e.name: e for e in (
    HOFSTEDE, MODERATION, WVS, FIDELITY, PHENOMENA, CONTENT, DIVERSITY, EDUCATION, COMPARE, COMPARE_RUNS)}
