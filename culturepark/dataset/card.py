"""The dataset card: `README.md` with the YAML block the Hub reads (license, languages, task
categories, size category, configs and their splits) and a body written from the runs.

`facts` gathers what the card says into one typed record (`CardFacts`), from the manifest, the
sources and the evaluation results (typed, through the registry); `render` only formats it. The
card holds no clock and no output path, so it is the same bytes for the same inputs.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import yaml

from culturepark.dataset.gates import Evidence
from culturepark.dataset.models import HELDOUT_ITEMS, SPLITS, TRAINED_ITEMS, Manifest, Record
from culturepark.dataset.sources import Source

CULTUREPARK_BIBTEX = """@inproceedings{li2024culturepark,
  title     = {CulturePark: Boosting Cross-cultural Understanding in Large Language Models},
  author    = {Li, Cheng and Teney, Damien and Yang, Linyi and Wen, Qingsong and Xie, Xing and Wang, Jindong},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2024}
}"""
WVS_BIBTEX = """@misc{haerpfer2022wvs7,
  title     = {World Values Survey: Round Seven -- Country-Pooled Datafile Version 5.0},
  author    = {Haerpfer, C. and Inglehart, R. and Moreno, A. and Welzel, C. and Kizilova, K. and
               Diez-Medrano, J. and Lagos, M. and Norris, P. and Ponarin, E. and Puranen, B.},
  publisher = {JD Systems Institute \\& WVSA Secretariat},
  address   = {Madrid, Spain \\& Vienna, Austria},
  year      = {2022},
  doi       = {10.14281/18241.24}
}"""


class FidelityFigures(Record):
    source: str
    file: str
    conversations: int
    self_report_exact: float | None
    self_report_within_one: float | None
    judge_model: str | None = None
    judge_exact: float | None = None
    judge_within_one: float | None = None
    judge_unclear: float | None = None
    lift_exact: float | None = None


class DiversityFigures(Record):
    file: str
    new_file: str
    reference_file: str
    gain: float
    std: float
    gain_cosine: float | None
    embeddings: str


class RefineYield(Record):
    source: str
    conversations: int
    extracted: int
    kept: int
    exported: int
    drop_reasons: dict[str, int]


class CardFacts(Record):
    """Everything the card states, gathered before it is formatted."""

    manifest: Manifest
    configs: list[str]
    cultures: dict[str, dict[str, int]]  # culture → split → rows of the main config
    items: dict[str, str]  # item → its text
    refine: list[RefineYield]
    costs: dict[str, dict[str, float | None]]  # source → run / refine → USD
    local_endpoints: list[str]  # sources whose models were served on this machine (a simulator?)
    fidelity: list[FidelityFigures]
    diversity: list[DiversityFigures]


def facts(manifest: Manifest, configs: list[str], rows: dict[str, dict[str, list[dict[str, Any]]]],
          sources: list[Source], evidence: Evidence) -> CardFacts:
    main = configs[0]
    cultures: dict[str, Counter[str]] = {}
    items: dict[str, str] = {}
    for sp in SPLITS:
        for r in rows[main][sp]:
            cultures.setdefault(r["culture"], Counter())[sp] += 1
            items.setdefault(r["item"], r["item_text"])
    fid = []
    for s in sources:
        found = evidence.fidelity.get(s.entry.name)
        if found is None:
            continue
        path, result = found
        j = result.judge
        fid.append(FidelityFigures(
            source=s.entry.name, file=str(path), conversations=result.overall.conversations,
            self_report_exact=result.overall.exact, self_report_within_one=result.overall.within_one,
            judge_model=j.model_spec if j else None, judge_exact=j.overall.exact if j else None,
            judge_within_one=j.overall.within_one if j else None, judge_unclear=j.overall.unclear_rate if j else None,
            lift_exact=result.lift.exact if result.lift else None))
    return CardFacts(
        manifest=manifest, configs=configs,
        cultures={c: {sp: n.get(sp, 0) for sp in SPLITS} for c, n in sorted(cultures.items())},
        items=dict(sorted(items.items(), key=lambda kv: (len(kv[0]), kv[0]))),
        refine=[RefineYield(source=s.entry.name, conversations=s.refine_summary.conversations,
                            extracted=s.refine_summary.extracted, kept=s.refine_summary.kept,
                            exported=s.refine_summary.exported, drop_reasons=dict(sorted(
                                s.refine_summary.drop_reasons.items())))
                for s in sources if s.refine_summary is not None],
        costs={s.entry.name: {"run": s.run_cost_usd, "refine": s.refine_cost_usd} for s in sources},
        local_endpoints=[s.entry.name for s in sources if s.local_endpoint],
        fidelity=fid,
        diversity=[DiversityFigures(file=str(p), new_file=d.new_file, reference_file=d.reference_file,
                                    gain=d.diversity_gain, std=d.std, gain_cosine=d.diversity_gain_cosine,
                                    embeddings=d.embeddings) for p, d in evidence.diversity])


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for limit, label in bounds if n < limit), "100M<n<1B")


def front_matter(f: CardFacts) -> str:
    m = f.manifest
    ext = "parquet" if m.settings.format == "parquet" else "jsonl"
    configs = []
    for i, cfg in enumerate(f.configs):
        entry: dict[str, Any] = {"config_name": cfg,
                                 "data_files": [{"split": sp, "path": f"{cfg}/{sp}-*.{ext}"} for sp in SPLITS
                                                if m.rows[cfg][sp]]}
        if i == 0:
            entry["default"] = True
        configs.append(entry)
    meta: dict[str, Any] = {
        "license": m.settings.license,
        **({"license_name": "wvs-derived-research-use",
            "license_link": "https://www.worldvaluessurvey.org/WVSContents.jsp"} if m.settings.license == "other"
           else {}),
        "language": ["en"],
        "pretty_name": "CulturePark conversations and SFT data",
        "task_categories": ["text-generation", "question-answering"],
        "size_categories": [_size_category(sum(m.rows[f.configs[0]].values()))],
        "tags": ["culturepark", "synthetic", "world-values-survey", "cultural-alignment", "multi-agent"],
        "configs": configs,
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def _n(x: float | None) -> str:
    return "–" if x is None else f"{x:g}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def render(f: CardFacts) -> str:
    m = f.manifest
    out = [front_matter(f), "# CulturePark conversations and SFT data", "",
           "Conversations in which LLM agents role-play people of different cultures (the CulturePark protocol), "
           "each delegate holding the stance a real World Values Survey (wave 7) respondent of its country gave, "
           "and the fine-tuning examples refined from them. Built by `culturepark dataset build` "
           f"(culturepark {m.package.version or '?'}, commit {m.package.commit or 'unknown'}); every input and file "
           "is pinned in `manifest.json` (`culturepark dataset verify DIR` checks it).", ""]
    out += ["## Contents", "", _table(["config", *SPLITS], [[c, *(str(m.rows[c][sp]) for sp in SPLITS)]
                                                            for c in f.configs]), "",
            f"`{f.configs[0]}` is the default config. " + (
                "`sft`: one row per fine-tuning example (`messages`, chat format) with its culture, item, stance, "
                "protocol and model; `conversations`: one row per conversation (`turns`) with the same columns. "
                if "sft" in f.configs else "`conversations`: one row per conversation (`turns`). "),
            "", "```python", "from datasets import load_dataset", "",
            f'ds = load_dataset("path/to/this/folder")  # or the Hub repo id; the "{f.configs[0]}" config',
            *(['conversations = load_dataset("path/to/this/folder", "conversations")'] if len(f.configs) > 1 else []),
            "```", ""]
    out += _splits(f) + _making(f) + _gates(f) + _figures(f) + _limitations(f) + _publish(f)
    out += ["## Citation", "", "The protocol (please cite the paper when you use this data):", "", "```bibtex",
            CULTUREPARK_BIBTEX, "```", "", "The stances and items come from the World Values Survey, wave 7:", "",
            "```bibtex", WVS_BIBTEX, "```", ""]
    return "\n".join(out)


def _splits(f: CardFacts) -> list[str]:
    m = f.manifest
    s = m.settings
    held = ", ".join(f"Q{q}" for q in m.heldout_items) or "none"
    lines = ["## Splits", "",
             f"Split by conversation, stratified by culture × item (seed {s.seed}; validation {s.validation:g}, "
             f"test {s.test:g} of each stratum), so every example made from a conversation lies in that "
             f"conversation's split. Held-out WVS items (test only, never trained on): **{held}**.",
             "", f"`{HELDOUT_ITEMS}` and `{TRAINED_ITEMS}` list them one per line; evaluate a model tuned on `train` "
             "with the held-out items reported apart from the trained ones:", "", "```bash",
             "culturepark eval wvs --model local:gemma3-270m+lora:ADAPTER --culture " +
             " ".join(sorted(f.cultures)) + f" \\\n    --items $(cat {HELDOUT_ITEMS} {TRAINED_ITEMS}) "
             f"--trained-items $(cat {TRAINED_ITEMS})", "```", ""]
    if m.items_outside_train:
        lines += [f"Items in validation/test only, by chance of the split (neither trained nor held out): "
                  f"{', '.join('Q' + q for q in m.items_outside_train)}.", ""]
    lines += ["Rows per culture and split:", "",
              _table(["culture", *SPLITS], [[c, *(str(n[sp]) for sp in SPLITS)] for c, n in f.cultures.items()]), "",
              "Items:", "", _table(["item", "text", "held out"],
                                   [[f"Q{q}", t.replace("|", "/"), "yes" if q in m.heldout_items else ""]
                                    for q, t in f.items.items()]), ""]
    return lines


def _making(f: CardFacts) -> list[str]:
    lines = ["## How it was made", ""]
    rows = []
    for e in f.manifest.sources:
        rows.append([e.name, e.run_name or "–", f"{'/'.join(e.protocol)} {'/'.join(e.modes)}",
                     ", ".join(f"{r} {spec}" for r, spec in e.models.items()), e.scenario_hash,
                     e.prompts_hash[:16], str(e.conversations), e.started_at or "–"])
    lines += [_table(["source", "scenario", "protocol", "models", "scenario hash", "prompts hash", "conversations",
                      "started"], rows), ""]
    refined = [e for e in f.manifest.sources if e.refine_dir]
    if refined:
        lines += ["Refinement (extract → verify → rewrite → de-duplicate → SFT export):", "",
                  _table(["source", "refiner", "export format", "refine hash", "started"],
                         [[e.name, e.refiner or "–", e.refine_format or "–", e.refine_hash or "–",
                           e.refine_started_at or "–"] for e in refined]), ""]
    if f.refine:
        lines += ["Refinement yields (opinions):", "", _table(
            ["source", "conversations", "extracted", "kept", "examples", "dropped by reason"],
            [[r.source, str(r.conversations), str(r.extracted), str(r.kept), str(r.exported),
              ", ".join(f"{k} {v}" for k, v in r.drop_reasons.items()) or "–"] for r in f.refine]), ""]
    lines += ["Cost (USD, as recorded in the logs; – where the provider's price was unknown):", "",
              _table(["source", "run", "refinement"], [[k, _n(v["run"]), _n(v["refine"])]
                                                       for k, v in f.costs.items()]), ""]
    return lines


def _gates(f: CardFacts) -> list[str]:
    g = f.manifest.settings.gates
    set_gates = {k: v for k, v in g.model_dump().items() if v not in (None, False)}
    drops = f.manifest.drops
    return ["## Quality gates", "",
            "Failed or unfinished conversations are always dropped; looping ones (both agents repeating their "
            "previous turn word for word) unless kept on purpose. Gates set for this build: " +
            (", ".join(f"`{k}` {v}" for k, v in set_gates.items()) or "none beyond those") + ".", "",
            _table(["dropped", "reason", "count"],
                   [[what, reason, str(n)] for what, counts in drops.items() for reason, n in counts.items()]), ""]


def _figures(f: CardFacts) -> list[str]:
    lines = ["## Fidelity and diversity", ""]
    if not f.fidelity and not f.diversity:
        return [*lines, "No `eval fidelity` or `eval diversity` result was given for these runs (`--evals`).", ""]
    if f.fidelity:
        lines += ["Did the delegates hold their assigned stance? The self-report re-asks the delegate with its "
                  "prompt in place and is **no evidence of adherence**; the blind judge reads only the turns.", "",
                  _table(["source", "conversations", "self-report exact", "within one", "judge", "judge exact",
                          "within one", "unclear", "lift over control"],
                         [[x.source, str(x.conversations), _n(x.self_report_exact), _n(x.self_report_within_one),
                           x.judge_model or "–", _n(x.judge_exact), _n(x.judge_within_one), _n(x.judge_unclear),
                           _n(x.lift_exact)] for x in f.fidelity]), ""]
    if f.diversity:
        lines += ["Diversity gain over a reference (`eval diversity`):", "",
                  _table(["new", "reference", "gain (Euclidean)", "± std", "gain (cosine)", "embeddings"],
                         [[d.new_file, d.reference_file, f"{d.gain:.4f}", f"{d.std:.4f}", _n(d.gain_cosine),
                           d.embeddings] for d in f.diversity]), ""]
    return lines


def _limitations(f: CardFacts) -> list[str]:
    lines = ["## Known limitations", "",
             "- Synthetic text: every turn was written by a language model role-playing a culture. It carries that "
             "model's stereotypes and errors and is no sample of what people of that culture say.",
             "- A delegate's stance is one real respondent's answer, drawn by the run's stance policy; a culture's "
             "rows are as representative as that sampling and the country's WVS sample.",
             "- Refinement verdicts come from a model (the refiner), not from people.",
             "- Items, options and stance codes are derived from the World Values Survey; its terms of use "
             "(research, non-commercial, with citation) apply to them. Check them and the generating models' "
             "terms before redistributing; the `license` above is `other` for that reason."]
    if not f.fidelity:
        lines.append("- No stance-fidelity figures: nothing here shows the delegates held their stances.")
    if f.local_endpoints:
        lines.append(f"- Sources {', '.join(f.local_endpoints)} were generated against a server on this machine "
                     "(127.0.0.1/localhost): if that was the project's simulator, the text is placeholder, not a "
                     "model's.")
    return [*lines, ""]


def _publish(f: CardFacts) -> list[str]:
    return ["## Publishing", "", "Nothing here needs the network; uploading is your step:", "", "```bash",
            "huggingface-cli upload --repo-type dataset YOUR_NAME/YOUR_DATASET path/to/this/folder .", "```", "",
            "or, in Python: `HfApi().upload_folder(folder_path=\"path/to/this/folder\", "
            "repo_id=\"YOUR_NAME/YOUR_DATASET\", repo_type=\"dataset\")` (`huggingface_hub`).", ""]
