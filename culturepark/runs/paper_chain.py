"""`culturepark paper`: the paper's whole chain for chosen cultures, one run directory per step.

conversations (paper-v1 / paper-v2) → refine (paper preset: GPT-4-class refiner, paper-format
export) → one SFT set per culture → fine-tune per culture (OpenAI job, or LoRA on the embedded
model) → base vs tuned on Hofstede (C = 50 and C-free) and the culture's moderation sets, both in
the paper's prompt style → a report in the paper's layout.

Rows beside base and tuned, each evaluated on the same tasks and seeds: `--baseline SPEC …` (a model
as it is); `--direct` (the paper's direct-generation baseline: a run of `kind: direct, style: paper`
refined, trained and evaluated like the tuned row); `--ablation` (Generate / +Verify / +Diversify:
the chain's own conversations refined without verification and de-duplication, then without
de-duplication, each trained and evaluated like the tuned row; +Diversify is the full refinement,
the tuned row's very data and model, so it is not trained twice). Every step writes under OUT and is
resumed from there when the command runs again (the engine's logs, the job state, the evals'
logs), so a chain stopped anywhere continues without paying twice.

Hofstede's C-free distance is centred over the compared cultures, so each model is evaluated on
all chosen cultures and the row of its own culture is reported.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from culturepark.agents import paper_format
from culturepark.benchmarks import moderation
from culturepark.benchmarks.compare import EvalTask, run_task
from culturepark.benchmarks.eval_run import EvalSettings, slug
from culturepark.benchmarks.results import (
    BaseTuned,
    ChainEcho,
    ChainRow,
    ChainScores,
    ConversationStep,
    EvalStep,
    HofstedeCulture,
    HofstedeResult,
    ModeLabel,
    ModerationPair,
    ModerationResult,
    PaperResult,
    PaperRow,
    PaperSteps,
    Parse,
    RefineStep,
    RowKind,
    SftStep,
    TrainStep,
    WvsResult,
)
from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write_json, atomic_write_jsonl
from culturepark.engine.log import LOG_NAME
from culturepark.runs.in_process import run_async
from culturepark.runs.paper_settings import PaperChain
from culturepark.runs.prepare import RunOptions
from culturepark.scenarios.loader import load_scenario
from culturepark.trainers.refine import RefineConfig, refine_async
from culturepark.trainers.sft import OPENAI_MIN_EXAMPLES
from culturepark.trainers.summaries import LoraSummary

HOFSTEDE_C = 50.0  # the paper's constant
EVAL_PROMPT_STYLE = "paper"  # culture chatbot, multiple choice: the format the tuned models learned
MODERATION_PARSE: Parse = "strict"  # ours; `eval moderation --parse paper` gives the original's lenient reading


def _datasets(culture: str) -> list[str]:
    """The bundled moderation sets of a culture (matched on the spec's culture)."""
    return sorted(name for name in moderation.bundled_specs()
                  if (moderation.load_spec(name).culture or "").lower() == culture.lower())


def _scenario(chain: PaperChain, key: str) -> Any:
    """The paper scenario of a run key (`v1`, `v1-in`): its version, in its mode, over the chain's cultures."""
    version, _, mode = key.partition("-")
    update = {"cultures": chain.cultures, **({"mode": mode} if mode else {})}
    return load_scenario(f"paper-{version}").model_copy(update=update)


def _run_options(chain: PaperChain, version: str) -> RunOptions:
    out = chain.out / f"conversations-{version}"
    return RunOptions(out=out, resume=(out / LOG_NAME).exists(), limit=chain.limit, base_url=chain.base_url,
                      model=chain.model, data_dir=chain.data_dir, rpm=chain.rpm, tpm=chain.tpm)


def preflight(chain: PaperChain) -> None:
    """Everything that can be checked before a byte is written: the cultures, the data, the model
    specs. Bad input stops here (exit 2) with nothing half-written."""
    from culturepark.agents.cultures import cultures_by_name
    from culturepark.runs.prepare import prepare
    from culturepark.scenarios.model_spec import parse_model_spec

    chain.check_tune_model()
    cultures_by_name(chain.cultures, "paper")
    for v in chain.run_keys():
        prepare(_scenario(chain, v), _run_options(chain, v))
    if chain.direct:
        prepare(direct_scenario(chain), _run_options(chain, "direct"))
    for spec in [chain.base_spec(), *chain.baselines]:
        parse_model_spec(spec, chain.base_url)


async def conversations(chain: PaperChain, say: Callable[[str], None]) -> dict[str, ConversationStep]:
    steps: dict[str, ConversationStep] = {}
    for v in chain.run_keys():
        out = chain.out / f"conversations-{v}"
        result = await run_async(_scenario(chain, v), _run_options(chain, v), say=say)
        s = result.summary
        steps[v] = ConversationStep(dir=str(out), conversations=s.conversations, done=s.done, failed=s.failed,
                                    turns=s.turns, cost_usd=s.cost_usd)
        say(f"conversations {v}: {s.done} done, {s.failed} failed → {out}")
    return steps


# The ablation's refinements of the chain's conversations: (row, verify, de-duplicate). The full
# refinement (+Diversify) is the chain's own, `refined-KEY`.
ABLATION = (("generate", False, False), ("verify", True, False))
ROW_MODES = {
    "base": "the model fine-tuned, as it is",
    "tuned": "trained on the chain's conversations, refined by the paper preset",
    "baseline": "a baseline model, evaluated as it is",
    "direct": "trained on direct generation (kind: direct, style: paper: a chatbot's 10 reasons), refined "
              "by the paper preset",
    "generate": "ablation Generate: the chain's conversations, extracted only (no verification, no de-duplication)",
    "verify": "ablation +Verify: extracted and verified, no de-duplication",
    "diversify": "ablation +Diversify: extracted, verified and de-duplicated (the tuned row's data and model)",
}


def _refine_config(chain: PaperChain, verify: bool = True, dedup: bool = True) -> RefineConfig:
    return (RefineConfig().with_preset("paper").with_flags(None, chain.base_url, chain.refiner)
            .with_switches(verify=verify, dedup=dedup))


async def _refine_one(chain: PaperChain, run_dir: Path, out: Path, config: RefineConfig,
                      say: Callable[[str], None]) -> RefineStep:
    result = await refine_async(run_dir, out, config, resume=(out / LOG_NAME).exists(), say=say)
    s = result.summary
    if result.error or s is None:
        raise InputError(f"paper: refine {out.name} stopped: {result.error} (run again to resume)")
    say(f"{out.name}: {s.kept} opinions kept, {s.exported} examples")
    return RefineStep(dir=str(out), conversations=s.conversations, extracted=s.extracted, kept=s.kept,
                      exported=s.exported, extract_failed=s.extract_failed, call_failed=s.call_failed)


async def refine(chain: PaperChain, say: Callable[[str], None]) -> dict[str, RefineStep]:
    """The chain's conversations refined by the paper preset (`refined-KEY`); with `--ablation`, also
    without verification and de-duplication (`refined-KEY-generate`) and without de-duplication
    (`refined-KEY-verify`), from the same conversations; with `--direct`, the direct run."""
    steps: dict[str, RefineStep] = {}
    for v in chain.run_keys():
        steps[v] = await _refine_one(chain, chain.out / f"conversations-{v}", chain.out / f"refined-{v}",
                                     _refine_config(chain), say)
        for row, verify, dedup in ABLATION if chain.ablation else ():
            steps[f"{v}-{row}"] = await _refine_one(chain, chain.out / f"conversations-{v}",
                                                    chain.out / f"refined-{v}-{row}",
                                                    _refine_config(chain, verify, dedup), say)
    if chain.direct:
        steps["direct"] = await _refine_one(chain, chain.out / "conversations-direct", chain.out / "refined-direct",
                                            _refine_config(chain), say)
    return steps


def trained_rows(chain: PaperChain) -> dict[str, list[tuple[Path, Path]]]:
    """Each row trained per culture → its (conversation run, refinement) pairs, merged into one SFT set.
    `tuned` keeps the directories it always had (`sft/`, `train/`)."""
    keys = chain.run_keys()
    rows = {"tuned": [(chain.out / f"conversations-{v}", chain.out / f"refined-{v}") for v in keys]}
    if chain.direct:
        rows["direct"] = [(chain.out / "conversations-direct", chain.out / "refined-direct")]
    for row, _, _ in ABLATION if chain.ablation else ():
        rows[row] = [(chain.out / f"conversations-{v}", chain.out / f"refined-{v}-{row}") for v in keys]
    return rows


def _row_dir(chain: PaperChain, step: str, row: str) -> Path:
    return chain.out / (step if row == "tuned" else f"{step}-{row}")


def split_sft(chain: PaperChain, row: str = "tuned") -> dict[str, SftStep]:
    """One paper-format SFT file per culture (matched on the system line). As the original did, the
    kept opinions of every version are merged per item first and the augmentation passes run over
    the merged lists: an item gets at most `paper_passes` examples, not that many per version."""
    from culturepark.trainers.refine.pipeline import merged_paper_examples

    by_system = {paper_format.chatbot_system(c): c for c in chain.cultures}
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    passes = RefineConfig().with_preset("paper").export.paper_passes
    pairs = trained_rows(chain)[row]
    merged = merged_paper_examples(pairs, passes)
    for messages in merged:
        culture = by_system.get(messages[0]["content"])
        if culture:
            rows[culture].append({"messages": messages})
    out = {}
    for c in chain.cultures:
        d = _row_dir(chain, "sft", row) / slug(c)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_jsonl(d / "openai_chat.jsonl", rows[c])
        merged_from = chain.run_keys() if row == "tuned" else [p.name for _, p in pairs]
        atomic_write_json(d / "format.json", {"format": "paper", "prompt_style": "paper", "template": "gemma",
                                              "examples": len(rows[c]), "merged_versions": merged_from,
                                              "passes": passes})
        out[c] = SftStep(file=str(d / "openai_chat.jsonl"), examples=len(rows[c]))
    return out


def train(chain: PaperChain, sft: dict[str, SftStep], say: Callable[[str], None],
          row: str = "tuned") -> dict[str, TrainStep]:
    """One tuned model per culture; returns each one's model spec (and how it was trained)."""
    steps = {}
    for c in chain.cultures:
        out = _row_dir(chain, "train", row) / slug(c)
        if sft[c].examples == 0:
            steps[c] = TrainStep(status="no_examples", model_spec=None)
            continue
        if chain.trainer == "openai" and sft[c].examples < OPENAI_MIN_EXAMPLES:
            # a row with little data (a small --limit) is reported untrained; the other rows go on
            steps[c] = TrainStep(status="too_few_examples", model_spec=None)
            say(f"train {row} {c}: {sft[c].examples} examples, OpenAI needs {OPENAI_MIN_EXAMPLES}: not trained")
            continue
        if chain.trainer == "openai":
            from culturepark.trainers.openai_jobs import train_openai
            suffix = f"cp-{slug(c).lower()}" if row == "tuned" else f"cp-{row}-{slug(c).lower()}"
            state = train_openai(Path(sft[c].file), chain.tune_model, out, suffix=suffix,
                                 epochs=chain.train_epochs(), base_url=chain.base_url, poll_s=chain.poll_s)
            spec = f"openai:{state.fine_tuned_model}" if state.status == "succeeded" else None
            steps[c] = TrainStep(status=state.status or "unknown", job_id=state.job_id, model_spec=spec,
                                 trained_tokens=state.trained_tokens)
        else:
            from culturepark.trainers.lora import resolve_settings, train_lora
            if not (out / "train_summary.json").exists():
                train_lora(Path(sft[c].file), out, resolve_settings("paper", epochs=float(chain.train_epochs()),
                                                                    max_steps=chain.lora_max_steps), say=say)
            summary = LoraSummary.read(out / "train_summary.json")
            steps[c] = TrainStep(status="succeeded", steps=summary.steps, last_loss=summary.last_loss,
                                 model_spec=f"local:gemma3-270m+lora:{out}")
        say(f"train {row} {c}: {steps[c].status} → {steps[c].model_spec}")
    return steps


def baseline_key(spec: str) -> str:
    """A `--baseline` row's evaluation key (and directory under eval/)."""
    return f"baseline-{slug(spec)}"


def evaluated_models(chain: PaperChain, trained: dict[str, dict[str, TrainStep]]) -> list[tuple[str, str, list[str]]]:
    """(key, model spec, cultures whose moderation sets it answers) for every model of every row. Base
    and baselines answer every culture's sets; a trained model its own culture's. The keys of base
    (`base`) and the tuned models (the culture) are the ones the chain always used."""
    models = [("base", chain.base_spec(), chain.cultures)]
    models += [(baseline_key(spec), spec, chain.cultures) for spec in chain.baselines]
    for row, steps in trained.items():
        models += [(c if row == "tuned" else f"{row}-{c}", t.model_spec, [c]) for c, t in steps.items()
                   if t.model_spec]
    return models


async def evaluate(chain: PaperChain, trained: dict[str, dict[str, TrainStep]], data_dir: Path,
                   say: Callable[[str], None]) -> dict[str, dict[str, HofstedeResult | ModerationResult | WvsResult]]:
    """Every row's models, in the paper's prompt style, on the same tasks and seeds."""
    results: dict[str, dict[str, HofstedeResult | ModerationResult | WvsResult]] = {}
    for who, spec, mine in evaluated_models(chain, trained):
        tasks = [EvalTask("hofstede", tuple(chain.cultures))] + [EvalTask("moderation", (d,)) for c in mine
                                                                 for d in _datasets(c)]
        for task in tasks:
            out = chain.out / "eval" / slug(who) / slug(str(task))
            settings = EvalSettings(model=spec, base_url=chain.base_url, prompt_style=EVAL_PROMPT_STYLE,
                                    resume=(out / LOG_NAME).exists())
            report = await run_task(settings, task, data_dir, out, chain.seeds, chain.moderation_limit, 1, say,
                                    HOFSTEDE_C, parse=MODERATION_PARSE)
            results.setdefault(who, {})[str(task)] = report
    return results


Evals = dict[str, dict[str, HofstedeResult | ModerationResult | WvsResult]]


def _scores(chain: PaperChain, res: dict[str, HofstedeResult | ModerationResult | WvsResult],
            culture: str) -> ChainScores:
    h = res.get(f"hofstede:{','.join(chain.cultures)}")
    hc = h.cultures.get(culture) if isinstance(h, HofstedeResult) else None
    moderation_sets = {}
    for d in _datasets(culture):
        m = res.get(f"moderation:{d}")
        moderation_sets[d] = (ModerationPair(macro_f1=m.macro_f1, coverage=m.coverage)
                              if isinstance(m, ModerationResult) else ModerationPair(macro_f1=None, coverage=None))
    return ChainScores(hofstede_c50=hc.distance if hc else None, hofstede_centred=hc.centred_distance if hc else None,
                       moderation=moderation_sets)


def chain_rows(chain: PaperChain, trained: dict[str, dict[str, TrainStep]], evals: Evals) -> list[ChainRow]:
    """Every row of the chain, each culture's scores from the model evaluated for it."""
    def row(name: str, kind: RowKind, specs: dict[str, str | None], keys: dict[str, str]) -> ChainRow:
        return ChainRow(name=name, kind=kind, mode=ModeLabel(mode="paper", what=ROW_MODES[kind]), specs=specs,
                        cultures={c: _scores(chain, evals.get(keys[c], {}), c) for c in chain.cultures})
    every = {c: c for c in chain.cultures}
    rows = [row("base", "base", {c: chain.base_spec() for c in chain.cultures}, dict.fromkeys(every, "base"))]
    rows += [row(f"baseline {spec}", "baseline", dict.fromkeys(every, spec), {c: baseline_key(spec) for c in every})
             for spec in chain.baselines]
    for name, steps in trained.items():
        rows.append(row(name, cast(RowKind, name), {c: steps[c].model_spec for c in every},
                        {c: c if name == "tuned" else f"{name}-{c}" for c in every}))
    if chain.ablation:  # +Diversify: the full refinement, i.e. the tuned row's data and model
        rows.append(row("diversify", "diversify", {c: trained["tuned"][c].model_spec for c in every}, every))
    return rows


def chain_modes(chain: PaperChain) -> dict[str, ModeLabel]:
    """The mode each step of the chain ran in, as `report` labels it."""
    cfg = _refine_config(chain)
    modes = {"eval prompt style": ModeLabel(mode="paper", what="culture chatbot, multiple choice"),
             "moderation parse": ModeLabel(mode="ours" if MODERATION_PARSE == "strict" else "paper",
                                           what=f"parse {MODERATION_PARSE}"),
             "refine preset": ModeLabel(mode="paper", what=f"preset paper: extract per {cfg.extract_per}, "
                                                           f"{cfg.dedup.method} keeping the {cfg.dedup.keep}"),
             "conversations": ModeLabel(mode="paper", what=f"{' + '.join(chain.versions)}, "
                                                           f"{' + '.join(chain.modes)}-cultural")}
    if chain.direct:
        modes["direct style"] = ModeLabel(mode="paper", what="style paper: a chatbot's 10 reasons, Question/Answer")
    return modes


def table(chain: PaperChain, evals: dict[str, dict[str, HofstedeResult | ModerationResult | WvsResult]]
          ) -> list[PaperRow]:
    """The paper's layout: per culture, moderation F1 and Hofstede distance, base vs tuned (mean ± std)."""
    rows = []
    hof = f"hofstede:{','.join(chain.cultures)}"
    for c in chain.cultures:
        hofstede: dict[str, HofstedeCulture | None] = {}
        moderation_sets: dict[str, BaseTuned] = {}
        for who, res in (("base", evals["base"]), ("tuned", evals.get(c, {}))):
            h = res.get(hof)
            hofstede[who] = h.cultures.get(c) if isinstance(h, HofstedeResult) else None
            for d in _datasets(c):
                m = res.get(f"moderation:{d}")
                pair = (ModerationPair(macro_f1=m.macro_f1, coverage=m.coverage) if isinstance(m, ModerationResult)
                        else ModerationPair(macro_f1=None, coverage=None))
                setattr(moderation_sets.setdefault(d, BaseTuned()), who, pair)
        base, tuned = hofstede["base"], hofstede["tuned"]
        row = PaperRow(culture=c, hofstede_c50_base=base.distance if base else None,
                       hofstede_centred_base=base.centred_distance if base else None,
                       hofstede_c50_tuned=tuned.distance if tuned else None,
                       hofstede_centred_tuned=tuned.centred_distance if tuned else None)
        if moderation_sets:
            row.moderation = moderation_sets
        rows.append(row)
    return rows


def direct_scenario(chain: PaperChain) -> Any:
    """The paper's direct-generation baseline over the chain's cultures: paper-v1's model, sampling and
    stances, one request per culture and item in the original's frame (`kind: direct, style: paper`)."""
    from culturepark.scenarios.loader import parse_scenario
    base = load_scenario("paper-v1").model_dump(mode="json", exclude_unset=True)
    keep = {k: v for k, v in base.items() if k not in ("version", "rounds", "turns", "mode", "main_contact",
                                                        "delegate_answers_intro", "loop_detection")}
    return parse_scenario({**keep, "name": "paper-direct", "kind": "direct", "style": "paper",
                           "cultures": chain.cultures}, "paper --direct")


async def direct_run(chain: PaperChain, say: Callable[[str], None]) -> ConversationStep:
    out = chain.out / "conversations-direct"
    opts = _run_options(chain, "direct")
    result = await run_async(direct_scenario(chain), opts, say=say)
    s = result.summary
    say(f"direct generation: {s.done} done, {s.failed} failed → {out}")
    return ConversationStep(dir=str(out), conversations=s.conversations, done=s.done, failed=s.failed,
                            turns=s.turns, cost_usd=s.cost_usd)


async def run_chain(chain: PaperChain, data_dir: Path, say: Callable[[str], None]) -> PaperResult:
    preflight(chain)
    convs = await conversations(chain, say)  # refuses an unreachable server
    if chain.direct:
        convs["direct"] = await direct_run(chain, say)
    atomic_write_json(chain.out / "chain.json", chain.model_dump(mode="json"))
    refined = await refine(chain, say)
    sft: dict[str, dict[str, SftStep]] = {}
    trained: dict[str, dict[str, TrainStep]] = {}
    for row in trained_rows(chain):
        sft[row] = split_sft(chain, row)
        trained[row] = await asyncio.to_thread(train, chain, sft[row], say, row)
    evals = await evaluate(chain, trained, data_dir, say)
    def flat(by_row: dict[str, dict[str, Any]]) -> dict[str, Any]:  # the tuned row keyed by culture, as before
        return {(c if row == "tuned" else f"{row}-{c}"): x for row, by in by_row.items() for c, x in by.items()}
    steps = PaperSteps(conversations=convs, refine=refined, sft=flat(sft), train=flat(trained),
                       eval={who: {task: EvalStep(dir=str(chain.out / "eval" / slug(who) / slug(task)),
                                                  requests=r.requests) for task, r in res.items()}
                             for who, res in evals.items()})
    result = PaperResult(chain=ChainEcho.model_validate(chain.model_dump(mode="json")), steps=steps,
                         table=table(chain, evals), hofstede_constant=HOFSTEDE_C, seeds=chain.seeds,
                         prompt_style="paper", rows=chain_rows(chain, trained, evals), modes=chain_modes(chain))
    result.write(chain.out / "paper.json")
    return result


# Assumptions of the dry-run estimate (stated in its output): what refinement typically finds.
OPINIONS_PER_CONVERSATION = 6
REWRITE_SHARE = 0.15  # of opinions: contradict → rewrite → re-verify
KEPT_SHARE = 0.5  # of opinions kept after verification and de-duplication
TOKENS_PER_EXAMPLE = 150
# OpenAI fine-tuning list prices, USD per 1M training tokens.
TRAINING_PRICES = {"gpt-3.5-turbo": 8.0, "gpt-3.5-turbo-0613": 8.0, "gpt-3.5-turbo-0125": 8.0,
                   "gpt-4o-mini-2024-07-18": 3.0, "gpt-4o-2024-08-06": 25.0}


def estimate_chain(chain: PaperChain) -> dict[str, Any]:
    """Requests, tokens, cost and time of every step, without sending anything. Conversations are
    played through the real policy (`run --dry-run`); later steps scale from them by the stated
    assumptions, so they are estimates, not ceilings."""
    from culturepark.engine.pricing import lookup_price
    from culturepark.runs.estimate import estimate

    chain.check_tune_model()

    steps: dict[str, Any] = {}
    convs = turns = 0
    conv_completion = 0
    rpm = 3500.0
    for v in chain.run_keys():
        scenario = _scenario(chain, v)
        rpm = scenario.limits.rpm or rpm
        e = estimate(scenario, RunOptions(limit=chain.limit, base_url=chain.base_url, model=chain.model,
                                          data_dir=chain.data_dir, check_reachable=False))
        steps[f"conversations-{v}"] = {k: e[k] for k in ("conversations", "requests", "prompt_tokens_est",
                                                          "completion_tokens_max", "cost_usd_max")}
        convs += e["conversations"]
        turns += e["requests"]
        conv_completion += e["completion_tokens_max"]
    opinions = convs * OPINIONS_PER_CONVERSATION
    price = lookup_price(chain.refiner)

    def refine_step(extract_calls: float, extract_prompt: float, opinions: float, verify: bool) -> dict[str, Any]:
        verify_calls = opinions * (1 + 2 * REWRITE_SHARE) if verify else 0
        prompt = int(extract_prompt + verify_calls * 130)
        completion = int(extract_calls * 256 + verify_calls * 8 + (opinions * REWRITE_SHARE * 96 if verify else 0))
        return {"requests": int(extract_calls + verify_calls), "prompt_tokens_est": prompt,
                "completion_tokens_est": completion,
                "cost_usd_est": round(price.cost(prompt, completion), 2) if price else None}
    # the paper preset extracts per utterance: at most one call per turn, each turn read once
    extract_prompt = conv_completion + turns * 150
    steps["refine"] = refine_step(turns, extract_prompt, opinions, True)
    trained_rows = 1
    if chain.ablation:  # the same conversations refined twice more: Generate (no verification), +Verify
        generate, verify = (refine_step(turns, extract_prompt, opinions, v) for v in (False, True))
        steps["refine-ablation"] = {k: (generate[k] or 0) + (verify[k] or 0) for k in generate}
        trained_rows += 2
    if chain.direct:  # one request per culture and item; its reasons are the opinions
        scenario = direct_scenario(chain)
        e = estimate(scenario, RunOptions(limit=chain.limit, base_url=chain.base_url, model=chain.model,
                                          data_dir=chain.data_dir, check_reachable=False))
        steps["conversations-direct"] = {k: e[k] for k in ("conversations", "requests", "prompt_tokens_est",
                                                            "completion_tokens_max", "cost_usd_max")}
        steps["refine-direct"] = refine_step(e["requests"], e["completion_tokens_max"] + e["requests"] * 150,
                                             e["conversations"] * scenario.reasons, True)
        trained_rows += 1
    examples = int(opinions * KEPT_SHARE)
    trained_tokens = examples * TOKENS_PER_EXAMPLE * chain.train_epochs() * trained_rows
    train_price = TRAINING_PRICES.get(chain.tune_model) if chain.trainer == "openai" else 0.0
    steps["train"] = {"models": len(chain.cultures) * trained_rows, "examples_est": examples * trained_rows,
                      "trained_tokens_est": trained_tokens,
                      "cost_usd_est": None if train_price is None else round(trained_tokens * train_price / 1e6, 2)}
    per_model = 24 * len(chain.cultures) * chain.seeds
    moderation_rows = sum(len(_datasets(c)) for c in chain.cultures) * (chain.moderation_limit or 200) * chain.seeds
    # base and each baseline answer every culture's sets; each trained row's model its own culture's
    every = 1 + len(chain.baselines)
    eval_requests = (every + trained_rows * len(chain.cultures)) * per_model + (every + trained_rows) * moderation_rows
    steps["eval"] = {"requests": eval_requests, "prompt_tokens_est": eval_requests * 150,
                     "cost_usd_est": None}  # a fine-tuned model's price is the provider's, per model
    requests = sum(s.get("requests", 0) for s in steps.values())
    known = [s.get("cost_usd_max", s.get("cost_usd_est")) for s in steps.values()]
    return {"dry_run": True, "steps": steps, "requests": requests,
            "cost_usd_est": round(sum(c for c in known if c), 2), "cost_complete": all(c is not None for c in known),
            "minutes_at_rpm_est": round(requests / rpm, 1), "rpm": rpm,
            "not_estimated": "fine-tuning wall time (a provider's queue) and the eval cost of tuned models",
            "assumptions": {"opinions_per_conversation": OPINIONS_PER_CONVERSATION, "rewrite_share": REWRITE_SHARE,
                            "kept_share": KEPT_SHARE, "tokens_per_example": TOKENS_PER_EXAMPLE}}
