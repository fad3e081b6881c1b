"""`culturepark eval education RUN_DIR`: learning gain and experience per culture and arm.

For each learner who finished, the pre- and post-test answers give VSM13 item means, the
six indices (same formulas as `eval hofstede`) and their C-free distance to the published
country scores: each dimension is centred over the cultures of the study (the learners of
one arm and phase give each culture's mean), so the unknown constant C cancels; this needs
two or more cultures. Gain = pre distance − post distance (positive: the learner's picture
moved towards the published one). WVS test items are scored as |answer − mean of the
country's valid respondents| / scale width. An answer that was still unparseable after the
re-asks is counted invalid and leaves the indices it feeds undefined — never guessed.

Arms are compared by the difference of mean gain (and of mean experience) with a bootstrap
95 % interval over learners. Human and simulated runs are scored alike; the output says which.

A learner's own indices need all four items of a dimension answered validly, which a small
model rarely manages for all 24. `pooled` therefore also scores each culture × arm group the
way the VSM13 manual (and `eval hofstede`) does: item means over the group's valid answers,
then the indices and the C-free distance; the arm difference of pooled gain gets a bootstrap
interval that resamples learners within each group.
"""
from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from culturepark.agents.learners import parse_item_answer, walk
from culturepark.agents.meta import LearnerMeta, read_meta
from culturepark.agents.wvs import WVSData
from culturepark.benchmarks.hofstede import DIMENSIONS, centred_distances, indices, load_scores
from culturepark.benchmarks.results import (
    ArmDifference,
    BootstrapDiff,
    EducationGroup,
    EducationResult,
    InvalidAnswers,
    LearnerRecord,
    MeanStd,
    PhaseMeans,
    PooledArm,
    PooledGroup,
    PooledScores,
    ValidAnswers,
)
from culturepark.benchmarks.stats import mean_std
from culturepark.engine.errors import InputError
from culturepark.engine.export import assemble
from culturepark.engine.log import LOG_NAME, read_header
from culturepark.engine.records import RunHeader
from culturepark.scenarios.data_dir import resolve_data_dir
from culturepark.scenarios.loader import scenario_of
from culturepark.scenarios.schema import EducationScenario

RESULT_NAME = "education.json"
SIMULATED_NOTE = "simulated learners, not a human study"


@dataclass
class Learner:
    id: str
    culture: str
    hofstede: str
    country_file: str
    arm: str
    kind: str
    answers: dict[str, dict[str, int | None]] = field(default_factory=dict)  # phase -> item key -> value
    invalid: Counter[str] = field(default_factory=Counter)  # phase -> unparseable answers
    free_text: str | None = None
    indices: dict[str, dict[str, float | None]] = field(default_factory=dict)  # phase -> dimension -> index
    distance: dict[str, float | None] = field(default_factory=dict)  # phase -> C-free distance

    @property
    def gain(self) -> float | None:
        pre, post = self.distance.get("pre"), self.distance.get("post")
        return None if pre is None or post is None else round(pre - post, 4)

    @property
    def experience(self) -> float | None:
        vals = [v for v in self.answers.get("exp", {}).values() if v is not None]
        return statistics.fmean(vals) if vals else None


def read_learners(run_dir: Path, answer_tries: int) -> tuple[list[Learner], int]:
    """The learners who finished, and how many participants withdrew (left out, never scored)."""
    learners, withdrawn = [], 0
    for conv_id, conv in assemble(run_dir).conversations:
        withdrawn += conv.withdrawn
        end = conv.end
        meta = read_meta(end.meta, conv_id) if conv.status == "done" and end else None
        if not isinstance(meta, LearnerMeta):
            continue
        texts = [t.text for t in conv.ordered_turns()]
        aligned, _ = walk(meta, texts, answer_tries)
        learner = Learner(conv_id, meta.culture, meta.hofstede, meta.country_file, meta.arm, meta.learners)
        for step, text in zip(aligned, texts):
            if step.phase == "free":
                learner.free_text = text
            elif step.needs_number and step.item is not None:
                # the last attempt for an item is its answer; earlier attempts were re-asked
                learner.answers.setdefault(step.phase, {})[step.item.key] = parse_item_answer(step.item, text)
        for phase, answers in learner.answers.items():
            learner.invalid[phase] = sum(v is None for v in answers.values())
            if phase in ("pre", "post"):
                vsm = {int(k.split(":")[1]): (float(v) if v is not None else None)
                       for k, v in answers.items() if k.startswith("vsm13:")}
                if vsm:
                    learner.indices[phase] = indices(vsm)
        learners.append(learner)
    return learners, withdrawn


def _culture_means(learners: list[Learner]) -> dict[str, dict[str, dict[str, float]]]:
    """phase -> culture -> dimension -> mean of the learners' defined indices (one arm's learners)."""
    cultures = sorted({l.hofstede for l in learners})
    means: dict[str, dict[str, dict[str, float]]] = {}
    for phase in ("pre", "post"):
        means[phase] = {}
        for c in cultures:
            group = [l.indices[phase] for l in learners if l.hofstede == c and phase in l.indices]
            means[phase][c] = {d: statistics.fmean(vals) for d in DIMENSIONS
                               if (vals := [v for i in group if (v := i.get(d)) is not None])}
    return means


def complete_arms(by_arm: dict[str, list[Learner]], cultures: list[str]) -> list[str]:
    """Arms with learners of every culture: only there can a distance be centred over the cultures."""
    return [arm for arm, group in by_arm.items() if len(cultures) >= 2 and {l.hofstede for l in group} >= set(cultures)]


def learner_dimensions(by_arm: dict[str, list[Learner]], cultures: list[str],
                       published: dict[str, dict[str, float | None]]) -> list[str]:
    """The dimensions every culture has in both phases, in every complete arm (and in the published scores).

    One set for the whole study, so a learner's pre and post distances, and the gains of
    different arms, compare like with like. An arm still without learners of some culture (a
    human study in progress) does not hold the others back; it gets no distances.
    """
    means = [_culture_means(by_arm[arm]) for arm in complete_arms(by_arm, cultures)]
    if not means:
        return []
    return [d for d in DIMENSIONS
            if all(d in m[p].get(c, {}) for m in means for p in ("pre", "post") for c in cultures)
            and all(published.get(c, {}).get(d) is not None for c in cultures)]


def centred_learner_distances(learners: list[Learner], published: dict[str, dict[str, float | None]],
                              dims: list[str]) -> None:
    """Fill each learner's pre and post `distance` over `dims`, centring over this arm's cultures."""
    cultures = sorted({l.hofstede for l in learners})
    if len(cultures) < 2 or not dims:
        return
    means = _culture_means(learners)
    human_centre = {d: statistics.fmean(published[c][d] for c in cultures) for d in dims}  # type: ignore[misc]
    for phase in ("pre", "post"):
        model_centre = {d: statistics.fmean(means[phase][c][d] for c in cultures) for d in dims}
        for l in learners:
            idx = l.indices.get(phase)
            if idx is None or any(idx.get(d) is None for d in dims):
                continue
            l.distance[phase] = round(math.sqrt(sum(
                # neither is None: `idx` was checked above, `published` when `dims` was chosen
                ((cast(float, idx[d]) - model_centre[d])
                 - (cast(float, published[l.hofstede][d]) - human_centre[d])) ** 2
                for d in dims)), 4)

VSM13_ITEMS = 24


@dataclass
class _Group:
    """One culture × arm: each phase's VSM13 answers as (learners × 24) values and a valid mask."""

    hofstede: str
    answers: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, hofstede: str, learners: list[Learner]) -> _Group:
        answers = {}
        for phase in ("pre", "post"):
            vals = np.zeros((len(learners), VSM13_ITEMS))
            valid = np.zeros((len(learners), VSM13_ITEMS), dtype=bool)
            for row, l in enumerate(learners):
                for key, v in l.answers.get(phase, {}).items():
                    if key.startswith("vsm13:") and v is not None:
                        col = int(key.split(":")[1]) - 1
                        vals[row, col], valid[row, col] = v, True
            answers[phase] = (vals, valid)
        return cls(hofstede, answers)

    def indices(self, phase: str, rows: np.ndarray | None = None) -> dict[str, float | None]:
        vals, valid = self.answers[phase]
        if rows is not None:
            vals, valid = vals[rows], valid[rows]
        n, total = valid.sum(axis=0), vals.sum(axis=0)
        out: dict[str, float | None] = indices({i + 1: (float(total[i] / n[i]) if n[i] else None)
                                                for i in range(VSM13_ITEMS)})
        return out

    def valid_answers(self, phase: str) -> int:
        return int(self.answers[phase][1].sum())


def _pooled_gains(groups: dict[str, _Group], published: dict[str, dict[str, float | None]], dims: list[str],
                  rows: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float | None]]:
    """Per culture: pooled pre and post C-free distance (centred over the arm's cultures) and gain."""
    dist = {phase: centred_distances({c: g.indices(phase, rows[c] if rows else None) for c, g in groups.items()},
                                     {c: published.get(g.hofstede, {}) for c, g in groups.items()}, dims)
            for phase in ("pre", "post")}
    out: dict[str, dict[str, float | None]] = {}
    for c in groups:
        pre, post = dist["pre"][c], dist["post"][c]
        out[c] = {"pre_distance": pre, "post_distance": post,
                  "gain": None if pre is None or post is None else round(pre - post, 4)}
    return out


def _mean_gain(per_culture: dict[str, dict[str, float | None]]) -> float | None:
    gains = [v["gain"] for v in per_culture.values()]
    if not gains or any(g is None for g in gains):
        return None
    return statistics.fmean(gains)  # type: ignore[arg-type]


def pooled_scores(learners: list[Learner], published: dict[str, dict[str, float | None]], cultures: list[str],
                  arms: list[str], reps: int, seed: int) -> PooledScores:
    """Group-level scores from item means (see the module docstring), with bootstrapped arm differences."""
    members = {(c, arm): [l for l in learners if l.culture == c and l.arm == arm] for c in cultures for arm in arms}
    groups = {arm: {c: _Group.of(members[c, arm][0].hofstede, members[c, arm])
                    for c in cultures if members[c, arm]} for arm in arms}
    complete = [arm for arm in arms if len(groups[arm]) == len(cultures) >= 2]
    # one set of dimensions for every arm and phase, so all pooled distances compare like with like
    dims = [d for d in DIMENSIONS if complete and all(
        g.indices(phase).get(d) is not None and published.get(g.hofstede, {}).get(d) is not None
        for arm in complete for g in groups[arm].values() for phase in ("pre", "post"))]
    scores = {arm: _pooled_gains(groups[arm], published, dims) if arm in complete else {} for arm in arms}
    empty = {"pre_distance": None, "post_distance": None, "gain": None}

    def valid(c: str, arm: str, phase: str) -> int:
        return groups[arm][c].valid_answers(phase) if c in groups[arm] else 0
    out = PooledScores(
        method="VSM13 item means over each culture x arm group's valid answers, then the C-free distance",
        dimensions=dims,
        by_culture={c: {arm: PooledGroup(**scores[arm].get(c, empty), learners=len(members[c, arm]),
                                         valid_answers=ValidAnswers(pre=valid(c, arm, "pre"),
                                                                    post=valid(c, arm, "post")))
                        for arm in arms} for c in cultures},
        by_arm={arm: PooledArm(gain=None if (g := _mean_gain(scores[arm])) is None else round(g, 4)) for arm in arms},
        arm_differences={})
    rng = np.random.default_rng(seed)
    for arm in arms[1:]:
        ref = arms[0]
        a, b = _mean_gain(scores[ref]), _mean_gain(scores[arm])
        diff = BootstrapDiff(diff=None if a is None or b is None else round(b - a, 4), ci95=None, resamples=reps,
                             undefined_resamples=None,
                             n=[sum(len(members[c, x]) for c in cultures) for x in (ref, arm)])
        if diff.diff is not None:
            diffs, undefined = [], 0
            for _ in range(reps):  # learners resampled within each culture x arm group
                pair = [_mean_gain(_pooled_gains(groups[x], published, dims, {
                    c: rng.integers(0, len(members[c, x]), len(members[c, x])) for c in cultures}))
                    for x in (ref, arm)]
                if pair[0] is None or pair[1] is None:
                    undefined += 1
                else:
                    diffs.append(pair[1] - pair[0])
            diffs.sort()
            if diffs:
                k = len(diffs) - 1
                diff.ci95 = [round(diffs[int(0.025 * k)], 4), round(diffs[int(0.975 * k)], 4)]
            diff.undefined_resamples = undefined
        out.arm_differences[f"{arm} - {ref}"] = ArmDifference(gain=diff)
    return out


def bootstrap_diff(a: list[float], b: list[float], reps: int, rng: random.Random) -> BootstrapDiff:
    """mean(b) − mean(a) with a percentile bootstrap 95 % interval (learners resampled per arm)."""
    if not a or not b:
        return BootstrapDiff(diff=None, ci95=None, n=[len(a), len(b)])
    diffs = sorted(statistics.fmean(rng.choices(b, k=len(b))) - statistics.fmean(rng.choices(a, k=len(a)))
                   for _ in range(reps))
    lo, hi = diffs[int(0.025 * (reps - 1))], diffs[int(0.975 * (reps - 1))]
    return BootstrapDiff(diff=round(statistics.fmean(b) - statistics.fmean(a), 4), ci95=[round(lo, 4), round(hi, 4)],
                         n=[len(a), len(b)])


def _group_summary(group: list[Learner], wvs_means: dict[tuple[str, str], tuple[float, int, int]],
                   likert: list[str]) -> EducationGroup:
    def invalid(phase: str) -> int:
        return sum(l.invalid.get(phase, 0) for l in group)
    out = EducationGroup(
        learners=len(group),
        pre_distance=mean_std(l.distance.get("pre") for l in group),
        post_distance=mean_std(l.distance.get("post") for l in group),
        gain=mean_std(l.gain for l in group),
        invalid_answers=InvalidAnswers(pre=invalid("pre"), post=invalid("post"), exp=invalid("exp")),
        experience=mean_std(l.experience for l in group),
        experience_items={q: mean_std(l.answers.get("exp", {}).get(f"likert:{i}") for l in group)
                          for i, q in enumerate(likert)},
        free_text_answers=sum(bool(l.free_text) for l in group))
    wvs_keys = sorted({k for l in group for k in l.answers.get("pre", {}) if k.startswith("wvs:")})
    if wvs_keys:
        out.wvs_distance = {}
        for key in wvs_keys:
            per: dict[str, MeanStd] = {}
            for phase in ("pre", "post"):
                vals = []
                for l in group:
                    v = l.answers.get(phase, {}).get(key)
                    ref = wvs_means.get((l.country_file, key))
                    if v is not None and ref is not None:
                        mean, lo, hi = ref
                        vals.append(abs(v - mean) / (hi - lo))
                per[phase] = mean_std(vals)
            out.wvs_distance[key] = PhaseMeans(pre=per["pre"], post=per["post"])
    return out


def _wvs_means(learners: list[Learner], wvs_items: list[str],
               data_dir: Path) -> dict[tuple[str, str], tuple[float, int, int]]:
    """Per (country, WVS test item): the mean of the country's valid answers and the scale's ends."""
    means: dict[tuple[str, str], tuple[float, int, int]] = {}
    if not wvs_items:
        return means
    data = WVSData(data_dir)
    for l in learners:
        for q in wvs_items:
            key = (l.country_file, f"wvs:{q}")
            if key not in means:
                valid = data.answers(l.country_file, q)  # negative codes are missing, never answers
                item = data.item(q)
                if valid:
                    means[key] = (statistics.fmean(valid), min(item.scale), max(item.scale))
    return means


def _arm_differences(learners: list[Learner], arms: list[str], bootstrap: int,
                     rng: random.Random) -> dict[str, ArmDifference]:
    """Each arm against the first: gain and experience differences with bootstrap intervals."""
    def vals(name: str, attr: str) -> list[float]:
        return [v for l in learners if l.arm == name if (v := getattr(l, attr)) is not None]
    ref = arms[0]
    return {f"{arm} - {ref}": ArmDifference(
        gain=bootstrap_diff(vals(ref, "gain"), vals(arm, "gain"), bootstrap, rng),
        experience=bootstrap_diff(vals(ref, "experience"), vals(arm, "experience"), bootstrap, rng),
    ) for arm in arms[1:]}


def score(run_dir: Path, data_dir: Path | None = None, bootstrap: int = 2000, seed: int = 0) -> EducationResult:
    run_dir = Path(run_dir)
    header = read_header(run_dir) or RunHeader()
    scenario = scenario_of(header, str(run_dir / LOG_NAME))
    if not isinstance(scenario, EducationScenario):
        found = scenario.kind if scenario else "culturepark"
        raise InputError(f"{run_dir}: not an education study (its scenario kind is {found!r})")
    data_dir = resolve_data_dir(data_dir, header.data_dir, None)
    learners, withdrawn = read_learners(run_dir, scenario.answer_tries)
    published = load_scores(data_dir)
    likert = scenario.questionnaire.likert
    arms = [arm.name for arm in scenario.arms]
    by_arm = {arm: [l for l in learners if l.arm == arm] for arm in arms}
    hofstede_names = sorted({l.hofstede for l in learners})
    dims = learner_dimensions(by_arm, hofstede_names, published)
    for arm in complete_arms(by_arm, hofstede_names):
        centred_learner_distances(by_arm[arm], published, dims)
    dimensions = dict.fromkeys(arms, dims)
    wvs_means = _wvs_means(learners, [str(q) for q in scenario.test.wvs_items], data_dir)
    kinds = sorted({l.kind for l in learners}) or ["simulated"]
    kind = kinds[0] if len(kinds) == 1 else "mixed"
    cultures = sorted({l.culture for l in learners})
    result = EducationResult(
        run_dir=str(run_dir), run_name=header.run_name, scenario_hash=header.scenario_hash, learners=kind,
        note=SIMULATED_NOTE if kind != "human" else "human participants",
        cultures=cultures, arms=arms, learners_scored=len(learners), withdrawn_excluded=withdrawn,
        learners_planned=header.planned_conversations,
        distance="C-free (each dimension centred over the study's cultures, per arm and phase)",
        dimensions=dimensions,
        by_culture={c: {arm: _group_summary([l for l in learners if l.culture == c and l.arm == arm],
                                            wvs_means, likert) for arm in arms} for c in cultures},
        by_arm={arm: _group_summary([l for l in learners if l.arm == arm], wvs_means, likert) for arm in arms})
    if len(cultures) < 2:
        result.warning = "one culture only: the C-free distance needs two or more, so distances are null"
    if len(arms) >= 2:
        result.arm_differences = _arm_differences(learners, arms, bootstrap, random.Random(seed))
    result.pooled = pooled_scores(learners, published, cultures, arms, bootstrap, seed)
    result.per_learner = [LearnerRecord(id=l.id, culture=l.culture, arm=l.arm, learners=l.kind,
                                        pre_distance=l.distance.get("pre"), post_distance=l.distance.get("post"),
                                        gain=l.gain, experience=l.experience, invalid=dict(l.invalid))
                          for l in learners]
    result.write(run_dir / RESULT_NAME)
    return result


def _ms(ms: MeanStd) -> str:
    return "n/a" if ms.mean is None else f"{ms.mean:.1f} ± {ms.std or 0:.1f}"


def _ci(d: BootstrapDiff) -> str:
    return "n/a" if d.ci95 is None else f"[{d.ci95[0]:.3f}, {d.ci95[1]:.3f}]"


def table(result: EducationResult) -> str:
    """The per-culture-and-arm table a reader checks first, labelled with who the learners were."""
    lines = [f"education study ({result.note})",
             f"{'culture':<12} {'arm':<14} {'n':>3} {'pre dist':>14} {'post dist':>14} {'gain':>14} "
             f"{'experience':>12} {'invalid pre/post':>17}"]
    for c, arms in result.by_culture.items():
        for arm, s in arms.items():
            inv = s.invalid_answers
            exp = "n/a" if s.experience.mean is None else f"{s.experience.mean:.2f}"
            lines.append(f"{c:<12} {arm:<14} {s.learners:>3} {_ms(s.pre_distance):>14} "
                         f"{_ms(s.post_distance):>14} {_ms(s.gain):>14} {exp:>12} "
                         f"{inv.pre:>8}/{inv.post:<8}")
    for name, d in (result.arm_differences or {}).items():
        for what, g in (("gain", d.gain), ("experience", d.experience)):
            if g is None or g.diff is None:
                lines.append(f"{what} {name}: n/a (no learner with a value in one of the arms)")
            else:
                lines.append(f"{what} {name}: {g.diff:.3f} (bootstrap 95% CI {_ci(g)}, "
                             f"learners {g.n[0]} vs {g.n[1]})")
    pooled = result.pooled
    if pooled:
        def v(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.1f}"
        lines.append("pooled per group (VSM13 item means over valid answers), dimensions: "
                     f"{', '.join(pooled.dimensions) or 'none defined'}")
        lines.append(f"{'culture':<12} {'arm':<14} {'pre dist':>9} {'post dist':>9} {'gain':>7} {'valid pre/post':>15}")
        for c, by_arm in pooled.by_culture.items():
            for arm, p in by_arm.items():
                va = p.valid_answers
                lines.append(f"{c:<12} {arm:<14} {v(p.pre_distance):>9} {v(p.post_distance):>9} "
                             f"{v(p.gain):>7} {va.pre:>7}/{va.post:<7}")
        for name, d in pooled.arm_differences.items():
            g = d.gain
            if g.diff is None:
                lines.append(f"pooled gain {name}: n/a (a group has no pooled distance)")
            else:
                lines.append(f"pooled gain {name}: {g.diff:.3f} (bootstrap 95% CI {_ci(g)}, "
                             f"{g.undefined_resamples} of {g.resamples} resamples undefined)")
    return "\n".join(lines)
