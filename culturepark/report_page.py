"""`culturepark report DIR... --out report/`: one HTML page with PNG plots of everything
found under the given directories — Hofstede evals, moderation evals, diversity results,
refinement summaries and conversation runs (turns, tokens, cost, throughput from the log)."""
from __future__ import annotations

import html
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from culturepark.benchmarks.compare import distribution_source
from culturepark.benchmarks.content import KINDS
from culturepark.benchmarks.evaluation import (
    CONTENT,
    DIVERSITY,
    EDUCATION,
    FIDELITY,
    HOFSTEDE,
    MODERATION,
    PHENOMENA,
    WVS,
)
from culturepark.benchmarks.phenomena import EXTEND, SHIFT, UNDERSTANDING, UNDERSTANDING_RATIO
from culturepark.benchmarks.results import (
    BaseTuned,
    BootstrapDiff,
    ChainScores,
    ContentResult,
    DiversityResult,
    EducationGroup,
    EducationResult,
    Estimate,
    FidelityResult,
    HofstedeCulture,
    HofstedeResult,
    MeanStd,
    ModeLabel,
    ModerationResult,
    PaperResult,
    PaperRow,
    PhenomenaResult,
    PooledGroup,
    WvsResult,
)
from culturepark.engine.export import CostSplitUSD, RunSummary, Tally, header_prices, ordered_conversations
from culturepark.engine.log import LOG_NAME, read_header
from culturepark.engine.records import RunHeader
from culturepark.trainers.summaries import REFINE_SUMMARY, RefineSummary

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px}"
         "th{background:#f0f0f0}img{max-width:100%;display:block;margin:1em 0}.note{color:#555}")
DIM_LABELS = {"pdi": "PDI", "idv": "IDV", "mas": "MAS", "uai": "UAI", "lto": "LTO", "ivr": "IVR"}


REPORTED = (HOFSTEDE, MODERATION, DIVERSITY, EDUCATION, FIDELITY, PHENOMENA, CONTENT, WVS)


@dataclass
class Found:
    """Every result under the report's directories, read through its model."""

    hofstede: list[tuple[Path, HofstedeResult]] = field(default_factory=list)
    moderation: list[tuple[Path, ModerationResult]] = field(default_factory=list)
    diversity: list[tuple[Path, DiversityResult]] = field(default_factory=list)
    education: list[tuple[Path, EducationResult]] = field(default_factory=list)
    fidelity: list[tuple[Path, FidelityResult]] = field(default_factory=list)
    phenomena: list[tuple[Path, PhenomenaResult]] = field(default_factory=list)
    content: list[tuple[Path, ContentResult]] = field(default_factory=list)
    wvs: list[tuple[Path, WvsResult]] = field(default_factory=list)
    refine: list[tuple[Path, RefineSummary]] = field(default_factory=list)
    runs: list[tuple[Path, RunHeader]] = field(default_factory=list)


def collect(dirs: list[Path]) -> Found:
    found = Found()
    for d in dirs:
        for evaluation in REPORTED:
            getattr(found, evaluation.name).extend(evaluation.find(Path(d)))
        found.refine += [(p.parent, RefineSummary.read(p)) for p in sorted(Path(d).rglob(REFINE_SUMMARY))]
        for log in sorted(Path(d).rglob(LOG_NAME)):
            header = read_header(log)
            if header is not None and header.scenario is not None:  # a conversation run or study
                found.runs.append((log.parent, header))
    return found


def _plt() -> ModuleType:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig: Any, out: Path, name: str, rect: tuple[float, float, float, float] | None = None) -> str:
    """Lay out (within `rect`, leaving room for a legend outside it), write and release a figure; its
    file name, for the page."""
    fig.tight_layout(**({"rect": rect} if rect else {}))
    fig.savefig(out / name, dpi=110)
    _plt().close(fig)
    return name


def plot_hofstede(items: list[tuple[Path, HofstedeResult]], out: Path) -> list[str]:
    plt = _plt()
    by_culture: dict[str, list[tuple[str, int, HofstedeCulture]]] = defaultdict(list)
    published: dict[str, dict[str, float | None]] = {}
    for _, rep in items:
        for culture, v in rep.cultures.items():
            by_culture[culture].append((rep.model_spec, rep.seeds, v))
            published[culture] = v.published
    files = []
    for culture, models in sorted(by_culture.items()):
        dims = list(DIM_LABELS)
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / (len(models) + 1)
        xs = range(len(dims))
        ax.bar([x - 0.4 + width / 2 for x in xs], [published[culture].get(d) or 0 for d in dims], width,
               label="published (human)", color="#444444")
        for k, (model, seeds, v) in enumerate(models, 1):
            means = [_mean(v.indices[d]) for d in dims]
            stds = [v.indices[d].std or 0 for d in dims]
            pos = [x - 0.4 + width / 2 + k * width for x in xs]
            ax.bar(pos, means, width, yerr=stds, capsize=3,
                   label=f"{model} (C = 0, mean ± std over {seeds} seeds)")
            for x, m in zip(pos, means):
                if m != m:  # NaN: an item the index needs was never answered validly
                    ax.text(x, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="#666666")
        ax.set_xticks(list(xs), [DIM_LABELS[d] for d in dims])
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"Hofstede dimensions — {culture}  (n/a: an item it needs had no valid answer)")
        ax.set_ylabel("index")
        ax.legend(fontsize=7)
        files.append(_save(fig, out, f"hofstede_{culture}.png"))
    return files


def _mean(ms: MeanStd) -> float:
    """A mean for a plot: NaN where undefined (drawn as n/a)."""
    return ms.mean if ms.mean is not None else float("nan")


def plot_moderation(items: list[tuple[Path, ModerationResult]], out: Path) -> list[str]:
    plt = _plt()
    datasets = sorted({rep.dataset for _, rep in items})
    models = sorted({rep.model_spec for _, rep in items})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(datasets)), 4))
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        means, stds = [], []
        for ds in datasets:
            rep = next((r for _, r in items if r.dataset == ds and r.model_spec == model), None)
            means.append(rep.macro_f1.mean if rep and rep.macro_f1.mean is not None else 0)
            stds.append(rep.macro_f1.std if rep else 0)
        ax.bar([i - 0.4 + width / 2 + k * width for i in range(len(datasets))], means, width, yerr=stds,
               capsize=3, label=model)
    for i, ds in enumerate(datasets):
        base = next(r for _, r in items if r.dataset == ds).majority_baseline.macro_f1
        ax.hlines(base, i - 0.45, i + 0.45, colors="red", linestyles="dashed",
                  label="majority-class baseline" if i == 0 else None)
    ax.set_xticks(range(len(datasets)), datasets, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1 (mean ± std over seeds)")
    ax.set_title("Content moderation")
    ax.legend(fontsize=7)
    return [_save(fig, out, "moderation_f1.png")]


def _pooled(res: EducationResult, c: str, arm: str) -> PooledGroup | None:
    return res.pooled.by_culture.get(c, {}).get(arm) if res.pooled else None


def _phase(group: EducationGroup, phase: str) -> MeanStd:
    """A learner group's pre_distance or post_distance."""
    return group.pre_distance if phase == "pre_distance" else group.post_distance


def _pooled_phase(group: PooledGroup | None, phase: str) -> float | None:
    """A pooled group's pre_distance or post_distance (None: no such group, or undefined)."""
    if group is None:
        return None
    distance: float | None = group.pre_distance if phase == "pre_distance" else group.post_distance
    return distance


def plot_education(items: list[tuple[Path, EducationResult]], out: Path) -> list[str]:
    """Per study: pre/post C-free distance by culture and arm, and experience by arm (mean ± std)."""
    plt = _plt()
    files = []
    for k, (_, res) in enumerate(items):
        groups = [(c, arm) for c in res.by_culture for arm in res.arms]
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
        xs = range(len(groups))
        nothing = all(_phase(res.by_culture[c][arm], ph).mean is None
                      and _pooled_phase(_pooled(res, c, arm), ph) is None
                      for c, arm in groups for ph in ("pre_distance", "post_distance"))
        for offset, phase, color in ((-0.2, "pre_distance", "#9aa5b1"), (0.2, "post_distance", "#2563eb")):
            vals = [_phase(res.by_culture[c][arm], phase) for c, arm in groups]
            means = [_mean(v) for v in vals]
            ax.bar([x + offset for x in xs], means, 0.4, yerr=[v.std or 0 for v in vals], capsize=3,
                   color=color, label=phase.replace("_", " ") + ", learner mean (C-free)")
            for x, m in zip(xs, means):
                if m != m and not nothing:
                    ax.text(x + offset, 0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="#666")
            pts = [(x + offset, g) for x, (c, arm) in zip(xs, groups)
                   if (g := _pooled_phase(_pooled(res, c, arm), phase)) is not None]
            if pts:
                ax.plot([x for x, _ in pts], [g for _, g in pts], "D", color="#111827", markersize=5,
                        markerfacecolor=color, label=f"{phase.split('_')[0]} pooled (item means)")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        if nothing:
            ax.text(0.5, 0.5, "no C-free distance: no Hofstede dimension had valid answers\\n"
                    "from every culture before and after learning (see invalid answers)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9, color="#666")
            ax.set_yticks([])
        ax.set_xticks(list(xs), [f"{c}\\n{arm}" for c, arm in groups], fontsize=8)
        ax.set_ylabel("distance to published scores")
        ax.set_title(f"{res.run_name}: before and after learning ({res.note})", fontsize=9)
        ax.legend(fontsize=7)
        exp = [res.by_arm[arm].experience for arm in res.arms]
        ax2.bar(range(len(exp)), [_mean(e) for e in exp], yerr=[e.std or 0 for e in exp], capsize=3, color="#16a34a")
        ax2.set_xticks(range(len(exp)), res.arms, fontsize=8)
        ax2.set_ylim(0, 5)
        ax2.set_title("experience (1-5, mean ± std)", fontsize=9)
        files.append(_save(fig, out, f"education_{k}.png"))
    return files


def run_stats(run_dir: Path) -> tuple[RunSummary, list[float]]:
    """The run's summary and every turn's time, read in bounded memory (a float per turn)."""
    times = array("d")
    with ordered_conversations(run_dir) as run:
        tally = Tally(header_prices(run.header))
        for _, conv in run.conversations():
            tally.add(conv)
            times.extend(t.t for t in conv.turns.values() if t.t)
    summary = tally.summary(run.header, run.duplicate_turns, run.stop_reasons, run.last_t)
    return summary, sorted(times)


@dataclass
class RunRow:
    """One conversation run's row of the report's table."""

    run: str
    name: str | None
    summary: RunSummary
    duration_s: float | None
    mode: ModeLabel | None = None

    def cells(self) -> list[object]:
        s = self.summary
        return [self.run, self.name, s.conversations, s.done, s.failed, s.turns, s.tokens.total,
                _num100(s.cache.hit_rate) + " %", s.cost_usd, _rejected(s), _split(s.cost_split_usd),
                ", ".join(f"{k} {v}" for k, v in s.turns_by_tier.items()), self.duration_s]


def plot_runs(runs: list[tuple[Path, RunHeader]], out: Path) -> tuple[list[str], list[RunRow]]:
    plt = _plt()
    rows = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    fig_cache, ax_cache = plt.subplots(figsize=(8, 3.0))
    for run_dir, header in runs:
        s, times = run_stats(run_dir)
        label = f"{header.run_name} ({run_dir.name})"
        by_turn = s.cache.hit_rate_by_turn
        ax_cache.plot([int(i) for i in by_turn], [100 * v for v in by_turn.values()], marker="o", markersize=3,
                      label=label)
        rows.append(RunRow(str(run_dir), header.run_name, s,
                           round(times[-1] - times[0], 1) if len(times) > 1 else None, run_mode(header)))
        if len(times) > 1:
            t0 = times[0]
            ax.plot([t - t0 for t in times], range(1, len(times) + 1), label=label)
    ax.set_xlabel("seconds since first turn")
    ax.set_ylabel("turns written (cumulative)")
    ax.set_title("Generation progress (from the logs)")
    ax_cache.set_xlabel("turn index")
    ax_cache.set_ylabel("% of prompt tokens cached")
    ax_cache.set_ylim(0, 100)
    ax_cache.set_title("Provider prompt cache by turn (from the logs)")
    if runs:
        ax.legend(fontsize=7)
        ax_cache.legend(fontsize=7)
    return [_save(fig, out, "runs_progress.png"), _save(fig_cache, out, "runs_cache.png")], rows


def _split(split: CostSplitUSD | None) -> str:
    if not split:
        return "n/a (rates not in the log)"
    text = " / ".join(f"{v:.4f}" for v in (split.uncached_input, split.cached_input, split.output))
    return text + (f" + cache writes {split.cache_write_input:.4f}" if split.cache_write_input else "")


def _rejected(s: RunSummary) -> str:
    """Replies billed but rejected by validation and re-asked: part of the cost, and its share."""
    if s.rejected_cost_usd is None or s.rejected_cost_share is None:
        return "n/a (price unknown)"
    return f"{s.rejected_cost_usd:.4f} ({100 * s.rejected_cost_share:.1f} %)"


def _fmt(ms: MeanStd | None) -> str:
    if not ms or ms.mean is None:
        return "n/a"
    return f"{ms.mean:.3f} ± {ms.std:.3f} (n={ms.n})"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _moded(headers: list[str], rows: list[list[Any]], labels: list[ModeLabel | None]) -> str:
    """A table with a "mode" column (paper or ours, and what it did) where any row's output recorded
    its mode; outputs that record none (made before the modes) leave the table as it was."""
    if not any(labels):
        return _table(headers, rows)
    return _table([*headers, "mode"], [[*r, lab.text() if lab else "n/a (not recorded)"]
                                       for r, lab in zip(rows, labels)])


def refine_mode(s: RefineSummary) -> ModeLabel | None:
    """The mode of a refinement, from what its summary recorded (None: made before it was recorded)."""
    if s.extract_per is None and s.verify is None:
        return None
    dedup = s.dedup or {}
    deduplicated = "off" if dedup.get("enabled") is False else f"{dedup.get('method')}, {dedup.get('keep')}"
    paper = s.extract_per == "utterance" and dedup.get("method") == "kmeans" and dedup.get("keep") == "longest"
    what = (f"{'preset paper: ' if paper else ''}per {s.extract_per}, verify "
            f"{'on' if s.verify is not False else 'off'}, dedup {deduplicated}")
    return ModeLabel(mode="paper" if paper else "ours", what=what)


def run_mode(header: RunHeader) -> ModeLabel | None:
    """A run's mode from its header's scenario: a CulturePark run on one of the original's protocol
    versions is the paper's, one on a moderator script of its own ours; a direct run by its style.
    None for other kinds (education studies)."""
    sc = header.scenario or {}
    kind = sc.get("kind", "culturepark")
    if kind == "direct":
        if sc.get("style") == "paper":
            return ModeLabel(mode="paper", what=f"direct style paper: a chatbot's {sc.get('reasons')} reasons, "
                                                "Question/Answer frame")
        return ModeLabel(mode="ours", what=f"direct style ours: the persona's {sc.get('reasons')} reasons")
    if kind != "culturepark":
        return None
    version, mode = sc.get("version", "v1"), sc.get("mode", "cross")
    if isinstance(version, str):
        return ModeLabel(mode="paper", what=f"protocol {version}, {mode}-cultural")
    return ModeLabel(mode="ours", what=f"a moderator script of its own, {mode}-cultural")


def _hofstede_section(items: list[tuple[Path, HofstedeResult]], out: Path) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Hofstede VSM13</h2>")
    rows = [[rep.model_spec, c, _fmt(v.distance_c0), f"{rep.constant:g}", _fmt(v.distance_with_constant),
             _fmt(v.centred_distance), v.invalid_answers, rep.seeds]
            for _, rep in items for c, v in rep.cultures.items()]
    parts.append(_table(["model", "culture", "distance (C = 0)", "C", "distance (C)", "centred distance (C-free)",
                         "invalid answers", "seeds"], rows))
    parts += [f'<img src="{f}" alt="{f}">' for f in plot_hofstede(items, out)]
    return parts


def _moderation_section(items: list[tuple[Path, ModerationResult]], out: Path) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Content moderation</h2>")
    rows = [[rep.model_spec, rep.dataset, rep.rows, _fmt(rep.macro_f1),
             _fmt(rep.macro_f1_scored) if rep.macro_f1_scored is not None else "n/a", _fmt(rep.accuracy),
             f"{rep.majority_baseline.macro_f1:.3f}", rep.unparseable, rep.seeds]
            for _, rep in items]
    parts.append("<p>macro-F1 counts an unparseable answer as wrong (as the paper); "
                 "“parseable only” leaves those rows out.</p>")
    parts.append(_moded(["model", "dataset", "rows", "macro-F1", "macro-F1 (parseable only)", "accuracy",
                         "majority macro-F1", "unparseable", "seeds"], rows,
                        [rep.mode_label() for _, rep in items]))
    parts += [f'<img src="{f}" alt="{f}">' for f in plot_moderation(items, out)]
    return parts


def _diversity_section(items: list[tuple[Path, DiversityResult]], out: Path) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Diversity gain</h2>")
    rows = [r for _, res in items for r in res.rows]  # one file may hold several rows
    cosine = [float("nan") if r.diversity_gain_cosine is None else r.diversity_gain_cosine for r in rows]
    parts.append(_table(["new", "reference", "gain (Euclidean)", "gain (cosine)", "embeddings"],
                        [[r.new_file, r.reference_file, f"{r.diversity_gain:.4f} ± {r.std:.4f}", f"{c:.4f}",
                          r.embeddings] for r, c in zip(rows, cosine)]))
    return parts


REFINE_COLUMNS = ["conversations", "extracted", "entail", "contradict", "irrelevant", "rewritten", "rewritten_entail",
                  "too_short", "deduplicated_removed", "exported"]


def _refine_section(items: list[tuple[Path, RefineSummary]], out: Path) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Refinement</h2>")
    parts.append(_moded(["dir", *REFINE_COLUMNS],
                        [[str(d)] + [getattr(s, k) for k in REFINE_COLUMNS] for d, s in items],
                        [refine_mode(s) for _, s in items]))
    return parts


def _ci(d: BootstrapDiff) -> str:
    return "n/a" if d.ci95 is None else f"[{d.ci95[0]:.3f}, {d.ci95[1]:.3f}]"


def _education_study(d: Path, res: EducationResult) -> list[str]:
    parts = [f"<p class=note><b>{html.escape(str(res.run_name))}</b> ({html.escape(str(d))}): "
             f"learners are <b>{html.escape(res.learners)}</b> — {html.escape(res.note)}. "
             f"{res.learners_scored} of {res.learners_planned} learners finished. "
             "Distances are C-free; gain = pre − post (positive: closer after learning).</p>"]
    rows = [[c, arm, s.learners, _fmt(s.pre_distance), _fmt(s.post_distance), _fmt(s.gain),
             _fmt(s.experience), f"{s.invalid_answers.pre}/{s.invalid_answers.post}"]
            for c, arms in res.by_culture.items() for arm, s in arms.items()]
    parts.append(_table(["culture", "arm", "learners", "pre distance", "post distance", "gain",
                         "experience (1-5)", "invalid answers pre/post"], rows))
    for name, diff in (res.arm_differences or {}).items():
        for what, g in (("Gain", diff.gain), ("Experience", diff.experience)):
            if g is None or g.diff is None:
                parts.append(f"<p>{what} difference {html.escape(name)}: n/a (no learner with a value "
                             f"in one of the arms)</p>")
                continue
            parts.append(f"<p>{what} difference {html.escape(name)}: {g.diff:.3f} (bootstrap 95 % CI "
                         f"{_ci(g)}, learners {g.n[0]} vs {g.n[1]})</p>")
    pooled = res.pooled
    if pooled:
        parts.append("<p>Pooled per group (VSM13 item means over the group's valid answers, as "
                     f"<code>eval hofstede</code> does), dimensions: "
                     f"{html.escape(', '.join(pooled.dimensions) or 'none defined')}</p>")
        prow = [[c, arm, _num(g.pre_distance), _num(g.post_distance), _num(g.gain),
                 f"{g.valid_answers.pre}/{g.valid_answers.post}"]
                for c, arms in pooled.by_culture.items() for arm, g in arms.items()]
        parts.append(_table(["culture", "arm", "pooled pre", "pooled post", "pooled gain",
                             "valid answers pre/post"], prow))
        for name, diff in pooled.arm_differences.items():
            b = diff.gain
            text = ("n/a (a group has no pooled distance)" if b.diff is None else
                    f"{b.diff:.3f} (bootstrap 95 % CI {_ci(b)}; {b.undefined_resamples} of "
                    f"{b.resamples} resamples undefined)")
            parts.append(f"<p>Pooled gain difference {html.escape(name)}: {text}</p>")
    return parts


def _education_section(items: list[tuple[Path, EducationResult]], out: Path) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Cultural education</h2>")
    for d, res in items:
        parts += _education_study(d, res)
    parts += [f'<img src="{f}" alt="{f}">' for f in plot_education(items, out)]
    return parts


def _quality_section(found: Found) -> list[str]:
    """Data quality: did the delegates hold their stance (fidelity), did stances shift and was there
    cross-cultural understanding (phenomena), what the kept opinions are (content)."""
    parts = ["<h2>Data quality</h2>"]
    rows = [[rep.source, c, r.conversations, _num100(r.exact), _num100(r.within_one), r.unparseable,
             _num100(r.changed_after_conversation)]
            for _, rep in found.fidelity for c, r in [("all", rep.overall), *rep.by_culture.items()]]
    judged = any(rep.judge for _, rep in found.fidelity)
    if rows:
        parts += [("<p class=note>Self-report (not evidence of adherence: the delegate is re-asked with its prompt, "
                   "which states its answer, in place; the blind judge below is the evidence): " if judged else
                   "<p class=note>Fidelity: ") +
                  "each delegate asked its seed item again after the conversation, against "
                  "the real respondent's answer it was given (shares of all conversations; unparseable = miss).</p>",
                  _table(["run", "culture", "conversations", "exact %", "within one step %", "unparseable",
                          "changed after the conversation %"], rows)]
    ours = [(rep, c, q) for _, rep in found.phenomena if rep.mode == "ours" for c, q in rep.by_culture.items()]
    rows = [[rep.source, c, _num100(q[SHIFT].share("yes")), _num100(q[UNDERSTANDING].share("yes")),
             q[SHIFT].judged, q[SHIFT].unparseable + q[UNDERSTANDING].unparseable] for rep, c, q in ours]
    if rows:
        parts += ["<p class=note>Phenomena: a judge model on each conversation (judged conversations only).</p>",
                  _moded(["run", "culture", "stance shifted %", "cross-cultural understanding %", "judged",
                          "unparseable verdicts"], rows, [rep.mode_label() for rep, _, _ in ours])]
    paper = [(rep, c, q) for _, rep in found.phenomena if rep.mode == "paper" for c, q in rep.by_culture.items()]
    if paper:
        parts += ["<p class=note>Phenomena, the paper's construct: a judge model on each delegate turn (extend: "
                  "the same topic as the delegate's first reply; understanding: the turn reflects cross-cultural "
                  "understanding).</p>",
                  _moded(["run", "culture", "extend rate %", "understanding ratio %", "judged turns",
                          "unparseable verdicts"],
                         [[rep.source, c, _num100(q[EXTEND].share("yes")),
                           _num100(q[UNDERSTANDING_RATIO].share("yes")), q[EXTEND].judged,
                           q[EXTEND].unparseable + q[UNDERSTANDING_RATIO].unparseable] for rep, c, q in paper],
                         [rep.mode_label() for rep, _, _ in paper])]
    content = [(rep, c, r) for _, rep in found.content for c, r in rep.by_culture.items()]
    rows = [[rep.source, c, *(_num100(r.share(k)) for k in KINDS), r.judged, r.unparseable] for rep, c, r in content]
    if rows:
        parts += ["<p class=note>Content: a judge model on each kept opinion (judged opinions only).</p>",
                  _moded(["refinement", "culture", "belief %", "norm %", "custom %", "judged", "unparseable"], rows,
                         [rep.mode_label() for rep, _, _ in content])]
    return parts if len(parts) > 1 else []


def _est(e: Estimate) -> str:
    return f"{e.value:.3f} [{e.interval[0]:.3f}, {e.interval[1]:.3f}]"


def _distribution_section(items: list[tuple[Path, WvsResult]], out: Path) -> list[str]:
    """WVS answer distributions against the respondents' (benchmarks/distribution.py), per culture, trained and
    held-out items apart, and a histogram of the per-item normalised W1; only results that carry them."""
    items = [(d, r) for d, r in items if any(c.all.distribution for c in r.cultures.values())]
    if not items:
        return []
    rows = [[rep.model_spec, c, part, d.items, distribution_source(d), _est(d.w1), _est(d.share_w1_below_0_2),
             _est(d.representativeness), _est(d.js_similarity)]
            for _, rep in items for c, v in rep.cultures.items()
            for part, summary in (("all", v.all), ("held out", v.held_out), ("trained", v.trained))
            if (d := summary.distribution) is not None]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for _, rep in items:
        for c, v in rep.cultures.items():
            w1 = [r.w1 for r in v.per_item if r.w1 is not None]
            ax.hist(w1, bins=[i / 20 for i in range(21)], alpha=0.5, label=f"{rep.model_spec} {c}")
    ax.axvline(0.2, color="red", linestyle="dashed", label="W1 = 0.2 (WorldValuesBench)")
    ax.set_xlabel("normalised W1 to the respondents' distribution, per item")
    ax.set_ylabel("items")
    ax.legend(fontsize=7)
    return ["<h2>WVS answer distributions</h2>",
            "<p class=note>The model's answer distribution per item against the culture's valid respondents: mean "
            "normalised W1, the share of items with W1 &lt; 0.2 (WorldValuesBench), representativeness 1 − W1/(N−1) "
            "(OpinionQA), 1 − Jensen–Shannon distance (GlobalOpinionQA); 95 % bootstrap intervals over items.</p>",
            "<p class=note>From: the model's answer probabilities (probs: each option code's probability at the "
            "answer position, renormalised over the options, with the mass put elsewhere given), or its sampled "
            "answers (samples).</p>",
            _table(["model", "culture", "item set", "items", "from", "W1", "W1 < 0.2", "representativeness",
                    "1 − JSD"], rows),
            f'<img src="{_save(fig, out, "wvs_w1.png")}" alt="W1 histogram">']


def _judge_section(items: list[tuple[Path, FidelityResult]], out: Path) -> list[str]:
    """The blind judge, its control and the lift; the drift curve as a plot."""
    items = [(d, r) for d, r in items if r.judge]
    if not items:
        return []
    rows = []
    for _, rep in items:
        assert rep.judge is not None
        ctl = rep.control.by_culture if rep.control else {}
        for c, r in [("all", rep.judge.overall), *rep.judge.by_culture.items()]:
            base = rep.control.overall if rep.control and c == "all" else ctl.get(c)
            lift = None if base is None or base.exact is None or r.exact is None else r.exact - base.exact
            rows.append([rep.source, c, r.conversations, _num100(r.exact), _num100(r.within_one),
                         _num100(r.unclear_rate), _num100(base.exact if base else None), _num100(lift)])
    parts = ["<h2>Stance fidelity: the blind judge</h2>",
             "<p class=note>A judge that sees only the speakers' turns with the item and its options (never the "
             "persona, the stance or a system prompt) names the option the delegate's turns express; control: the "
             "same judge on a run whose delegates were told no answer (what the culture alone gives); lift: the "
             "difference in exact agreement.</p>",
             _table(["run", "culture", "conversations", "exact %", "within one %", "unclear %", "control exact %",
                     "lift (points)"], rows)]
    drifts = [(rep.source, rep.judge.drift) for _, rep in items if rep.judge and rep.judge.drift]
    if drifts:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for source, drift in drifts:
            ax.plot([p.k for p in drift], [p.exact or 0 for p in drift], marker="o", label=source)
        ax.set_xlabel("the delegate's turns read (k)")
        ax.set_ylabel("judge's exact agreement")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        parts.append(f'<img src="{_save(fig, out, "fidelity_drift.png")}" alt="drift">')
    return parts


def _num100(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _runs_section(items: list[tuple[Path, RunHeader]], out: Path) -> list[str]:
    parts: list[str] = []
    parts.append("<h2>Conversation runs</h2>")
    files, rows = plot_runs(items, out)
    parts.append(_moded(["run", "name", "conversations", "done", "failed", "turns", "tokens",
                         "prompt tokens cached", "cost (USD)", "rejected (USD, share of cost)",
                         "uncached in / cached in / out (USD)", "turns by tier",
                         "duration (s)"], [r.cells() for r in rows], [r.mode for r in rows]))
    parts += [f'<img src="{f}" alt="{f}">' for f in files]
    return parts


def build(dirs: list[Path], out: Path) -> Path:
    found = collect(dirs)  # reads every input first: a bad one refuses before anything is written
    out.mkdir(parents=True, exist_ok=True)
    parts = ["<h1>culturepark report</h1>",
             f"<p class=note>Sources: {html.escape(', '.join(str(d) for d in dirs))}. Every number is a mean ± std "
             "over the seeds stated; nothing was selected.</p>"]
    if found.hofstede:
        parts += _hofstede_section(found.hofstede, out)
    if found.moderation:
        parts += _moderation_section(found.moderation, out)
    if found.diversity:
        parts += _diversity_section(found.diversity, out)
    if found.refine:
        parts += _refine_section(found.refine, out)
    if found.education:
        parts += _education_section(found.education, out)
    if found.runs:
        parts += _runs_section(found.runs, out)
    parts += _distribution_section(found.wvs, out)
    parts += _quality_section(found)
    parts += _judge_section(found.fidelity, out)
    if len(parts) == 2:
        parts.append("<p>No eval results or runs were found under these directories.</p>")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>culturepark report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def screenshot(index: Path, png: Path, width: int = 1200) -> Path:
    """Full-page PNG of the report in headless Chromium (Debian's `chromium`, via playwright)."""
    import shutil

    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("no chromium on PATH (apt install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(index.resolve().as_uri())
        page.wait_for_load_state("networkidle")
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        if broken:
            raise RuntimeError(f"{broken} image(s) did not load in {index}")
        page.screenshot(path=str(png), full_page=True)
        browser.close()
    return png


def _paper_rows(result: PaperResult) -> list[list[Any]]:
    rows = []
    for r in result.table:
        hof = [_fmt(r.hofstede(metric, who)) for metric in ("c50", "centred") for who in ("base", "tuned")]
        for d, m in (r.moderation or {"(none bundled)": BaseTuned()}).items():
            base, tuned = m.base, m.tuned
            rows.append([r.culture, d, _fmt(base.macro_f1 if base else None),
                         _fmt(tuned.macro_f1 if tuned else None), *hof])
    return rows


def _mean_f1(row: PaperRow, who: str) -> float:
    """A culture's moderation macro-F1 averaged over its sets (0 where none has a mean)."""
    pairs = [sets.base if who == "base" else sets.tuned for sets in (row.moderation or {}).values()]
    f1s = [p.macro_f1.mean for p in pairs if p is not None and p.macro_f1 is not None and p.macro_f1.mean is not None]
    return sum(f1s) / len(f1s) if f1s else 0.0


def plot_paper(result: PaperResult, out: Path) -> str:
    plt = _plt()
    rows = result.table
    cultures = [r.culture for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    x = list(range(len(cultures)))
    for ax, metric, title in ((a, "f1", "moderation macro-F1 (mean over sets)"),
                              (b, "c50", f"Hofstede distance (C = {result.hofstede_constant:g})")):
        for k, who in enumerate(("base", "tuned")):
            vals = []
            for r in rows:
                if metric == "f1":
                    vals.append(_mean_f1(r, who))
                else:
                    ms = r.hofstede("c50", "base" if who == "base" else "tuned")
                    vals.append((ms.mean if ms else None) or 0.0)
            ax.bar([i + (k - 0.5) * 0.38 for i in x], vals, width=0.38, label=who)
        ax.set_xticks(x, cultures)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    return _save(fig, out, "paper.png")


def _row_f1(scores: ChainScores) -> float | None:
    """A row's moderation macro-F1 for one culture, averaged over its sets (None: no set has a mean)."""
    f1s = [p.macro_f1.mean for p in scores.moderation.values() if p.macro_f1 and p.macro_f1.mean is not None]
    return sum(f1s) / len(f1s) if f1s else None


def _rows_section(result: PaperResult, out: Path) -> list[str]:
    """Every row of the chain (base, tuned, baselines, direct, ablation), each labelled with its mode,
    and the mode of each step; only in files made with rows."""
    if not result.rows:
        return []
    c50 = f"{result.hofstede_constant:g}"
    table = [[r.name, c, r.specs.get(c) or "n/a (not trained)",
              "; ".join(f"{d} {_fmt(p.macro_f1)}" for d, p in sc.moderation.items()) or "n/a (none bundled)",
              _fmt(sc.hofstede_c50), _fmt(sc.hofstede_centred), r.mode.text()]
             for r in result.rows for c, sc in r.cultures.items()]
    plt = _plt()
    cultures = list(result.chain.cultures)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    width = 0.8 / len(result.rows)
    for k, r in enumerate(result.rows):
        xs = [i - 0.4 + width / 2 + k * width for i in range(len(cultures))]
        a.bar(xs, [_row_f1(r.cultures[c]) or 0.0 for c in cultures], width, label=r.name)
        b.bar(xs, [(ms.mean if (ms := r.cultures[c].hofstede_c50) else None) or 0.0 for c in cultures], width,
              label=r.name)
    for ax, title in ((a, "moderation macro-F1 (mean over sets)"), (b, f"Hofstede distance (C = {c50})")):
        ax.set_xticks(range(len(cultures)), cultures)
        ax.set_title(title, fontsize=10)
    handles, labels = a.get_legend_handles_labels()  # one legend below both panels, clear of the bars
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7)
    rect = (0.0, 0.06 * (1 + (len(labels) - 1) // 4), 1.0, 1.0)
    parts = ["<h2>Every row: baselines, direct generation, ablation</h2>",
             "<p class=note>Each row evaluated on the same tasks and seeds as base and tuned. A trained row has a "
             "model per culture (trained like the tuned row on its own data); a baseline is a model as it is. "
             "+Diversify is the full refinement: the tuned row's data and model.</p>",
             _table(["row", "culture", "model", "moderation macro-F1 per set", f"Hofstede C={c50}",
                     "Hofstede C-free", "mode"], table),
             f'<img src="{_save(fig, out, "paper_rows.png", rect)}" alt="every row">']
    if result.modes:
        parts += ["<h2>Modes of the chain's steps</h2>",
                  _table(["step", "mode", "what"], [[k, m.mode, m.what] for k, m in result.modes.items()])]
    return parts


def build_paper(result: PaperResult, out: Path) -> Path:
    """The `culturepark paper` report: every step's counts, then the paper's table (per culture,
    base vs tuned), every figure mean ± std over the seeds."""
    out.mkdir(parents=True, exist_ok=True)
    s = result.steps
    c50 = f"{result.hofstede_constant:g}"
    parts = ["<h1>CulturePark chain: base vs tuned</h1>",
             f"<p class=note>Cultures {html.escape(', '.join(result.chain.cultures))}; every figure is a mean ± "
             f"std over {result.seeds} seeds; prompts in the paper's style (culture chatbot, multiple choice); "
             f"Hofstede distances with C = {c50} (the paper) and C-free (centred over "
             "the cultures). Each tuned model is its own culture's.</p>", "<h2>Steps</h2>",
             _table(["conversations of", "conversations", "done", "failed", "turns", "cost (USD)"],
                    [[v, c.conversations, c.done, c.failed, c.turns,
                      "n/a (price unknown)" if c.cost_usd is None else f"{c.cost_usd:.4f}"]
                     for v, c in s.conversations.items()]),
             _table(["refinement of", "conversations", "extracted", "kept", "exported", "failed calls"],
                    [[v, r.conversations, r.extracted, r.kept, r.exported,
                      (r.extract_failed or 0) + (r.call_failed or 0)] for v, r in s.refine.items()]),
             _table(["culture", "SFT examples", "training", "tuned model"],
                    [[c, s.sft[c].examples, t.status, t.model_spec] for c, t in s.train.items()]),
             "<h2>Results (the paper's layout)</h2>",
             "<p class=note>macro-F1: higher is better, an unparseable answer counts as wrong. Hofstede: distance "
             "to the published scores, lower is better.</p>",
             _table(["culture", "moderation set", "macro-F1 base", "macro-F1 tuned",
                     f"Hofstede C={c50} base", "tuned", "Hofstede C-free base", "tuned"],
                    _paper_rows(result)),
             f'<img src="{plot_paper(result, out)}" alt="base vs tuned">', *_rows_section(result, out)]
    index = out / "index.html"
    index.write_text(f"<!doctype html><html><head><meta charset=utf-8><title>culturepark paper</title>"
                     f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>", encoding="utf-8")
    return index
