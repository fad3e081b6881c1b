"""`culturepark eval fidelity RUN_DIR`: did each delegate hold the stance of the respondent it was given?

Every delegate is anchored to a real WVS answer, so its fidelity has a ground truth. After each
finished conversation the delegate is asked its seed item again, as multiple choice, in role and
in its own view of the conversation (the same rendering it spoke with); the answer code is
compared with the stance code it was given: exact, and within one scale step. With
`--before-after` it is also asked before the conversation (no turns), and the drift between the
two answers is reported. Unparseable answers are counted, never guessed. Works on a partial log
(finished conversations only), so a run can be checked while it is still going.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from culturepark.agents import paper_format
from culturepark.agents.meta import ConversationMeta, read_meta
from culturepark.agents.protocol import CultureParkPolicy
from culturepark.agents.views import SpokenTurn
from culturepark.benchmarks import distribution, stance_judge
from culturepark.benchmarks.eval_run import EvalSettings, digest, run_items
from culturepark.benchmarks.results import (
    FidelityRates,
    FidelityRecord,
    FidelityResult,
    Lift,
    Population,
    PopulationItem,
)
from culturepark.engine.batch import BatchItem
from culturepark.engine.errors import InputError
from culturepark.engine.export import conversation_rows, ordered_conversations
from culturepark.engine.log import LOG_NAME, read_header
from culturepark.scenarios.loader import scenario_of
from culturepark.scenarios.model_spec import parse_model_spec, to_model_spec
from culturepark.scenarios.schema import RemoteBackendConfig, Scenario


class Finished(NamedTuple):
    """A finished conversation of a run: its row as the export writes it, and its meta read."""

    row: dict[str, Any]
    meta: ConversationMeta


def load_run(run_dir: Path, kinds: tuple[str, ...] = ("culturepark",), what: str = "fidelity"
             ) -> tuple[Scenario, list[Finished]]:
    """The run's scenario (from its header) and its finished conversations (from its log); a run of
    another scenario kind than `kinds` is refused, naming `what` refused it."""
    header = read_header(run_dir / LOG_NAME) if (run_dir / LOG_NAME).exists() else None
    if header is None:
        raise InputError(f"{what}: no run header in {run_dir / LOG_NAME} (not a run directory)")
    scenario = scenario_of(header, str(run_dir / LOG_NAME))
    if not isinstance(scenario, Scenario) or scenario.kind not in kinds:
        kind = scenario.kind if scenario else "none recorded"
        wanted = "a conversation run" if kinds == ("culturepark",) else f"a {' or '.join(kinds)} run"
        raise InputError(f"{what}: {run_dir} is not {wanted} (scenario kind {kind})")
    rows = []
    with ordered_conversations(run_dir) as run:
        for r in conversation_rows(run.conversations()):
            meta = read_meta(r["meta"], r["id"]) if r["status"] == "done" else None
            if isinstance(meta, ConversationMeta):
                rows.append(Finished(r, meta))
    return scenario, rows


def settings_for(scenario: Scenario, model: str | None, base_url: str | None, **kw: Any) -> EvalSettings:
    """The delegate's own backend unless another model is named."""
    cfg = scenario.backend_for("delegate")
    if model:
        return EvalSettings(model=model, base_url=base_url, **kw)
    if isinstance(cfg, RemoteBackendConfig):
        return EvalSettings(model=to_model_spec(cfg), base_url=base_url or cfg.base_url, api_key_env=cfg.api_key_env,
                            api=cfg.api if cfg.api != "chat" else None, **kw)  # a base model asked as it spoke
    return EvalSettings(model=to_model_spec(cfg), base_url=base_url, **kw)


def question(meta: ConversationMeta) -> str:
    name = meta.participants.delegate.name
    return f"{name}, one survey question for you. {paper_format.multiple_choice(paper_format.item_from_meta(meta))}"


def _spoken(run: Finished) -> list[SpokenTurn]:
    """Roles by speaker: the delegate by name, anyone else is the other side (in a fork, the first
    turns may have been spoken by the source run's main contact)."""
    row, delegate = run.row, run.meta.participants.delegate.name
    return [SpokenTurn("delegate" if t["speaker"] == delegate else "main_contact", t["text"]) for t in row["turns"]]


def _rates(recs: list[FidelityRecord], before_after: bool) -> FidelityRates:
    n = len(recs)
    read = [(r, r.after) for r in recs if r.after is not None]
    out = FidelityRates(
        conversations=n, unparseable=n - len(read),
        exact=round(sum(a == r.stance for r, a in read) / n, 4) if n else None,
        within_one=round(sum(abs(a - r.stance) <= 1 for r, a in read) / n, 4) if n else None)
    if before_after and recs:
        both = [r for r in recs if r.before is not None and r.after is not None]
        out.exact_before = round(sum(r.before == r.stance for r in recs if r.before is not None) / n, 4)
        out.changed_after_conversation = round(sum(r.before != r.after for r in both) / len(both), 4) \
            if both else None
    return out


class StanceJudgeSpec(NamedTuple):
    """`--judge SPEC` and what goes with it: the judge's model, its server, `--per-turn`, `--control RUN`."""

    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    per_turn: bool = False
    control: Path | None = None


def _control_rows(control: Path, scenario: Scenario) -> list[Finished]:
    """The control run's finished conversations; refused unless it is a `control` run of the same plan."""
    ctl_scenario, ctl_rows = load_run(Path(control))
    if ctl_scenario.stance_policy != "control":
        raise InputError(f"fidelity: --control {control}: its stance policy is {ctl_scenario.stance_policy!r}, "
                         "not 'control' (a run whose delegates were told no respondent's answer)")
    if (ctl_scenario.cultures, ctl_scenario.items) != (scenario.cultures, scenario.items):
        raise InputError(f"fidelity: --control {control}: not the same cultures and items as the run judged")
    if not ctl_rows:
        raise InputError(f"fidelity: --control {control} has no finished conversation yet")
    return ctl_rows


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def population(rows: list[Finished], data_dir: Path) -> Population | None:
    """The assigned stances of each culture × item as a distribution against the country's valid respondents
    (benchmarks/distribution.py): a run whose stances were drawn faithfully scores near 0 W1 given enough
    conversations; `mode` and `mean` policies do not, by design. None when the run's data is not at hand."""
    from culturepark.agents.wvs import WVSData, WVSError

    data = WVSData(data_dir)
    groups: dict[tuple[str, str], list[Finished]] = defaultdict(list)
    for r in rows:
        groups[(r.meta.culture, str(r.meta.item_id))].append(r)
    per_item: list[PopulationItem] = []
    try:
        for (culture, item_id), runs in sorted(groups.items()):
            meta = runs[0].meta
            people = data.answers(meta.country_file, item_id)
            figures = distribution.item_figures([r.meta.stance_code for r in runs], people,
                                                sorted(paper_format.item_from_meta(meta).scale))
            if figures:
                per_item.append(PopulationItem(
                    culture=culture, item=item_id, conversations=len(runs), respondents=len(people),
                    stance_distribution=figures["model_distribution"], w1=figures["w1"],
                    w1_interval=figures["w1_interval"], representativeness=figures["representativeness"],
                    js_similarity=figures["js_similarity"]))
    except WVSError:
        return None
    by_culture = {c: distribution.over_items([(x.w1, x.representativeness, x.js_similarity) for x in per_item
                                              if x.culture == c], "stances")
                  for c in sorted({x.culture for x in per_item})}
    return Population(data_dir=str(data_dir), by_culture={c: d for c, d in by_culture.items() if d},
                      per_item=per_item)


async def evaluate(run_dir: Path, out: Path, model: str | None = None, base_url: str | None = None,
                   before_after: bool = False, temperature: float = 0.0, resume: bool = False,
                   say: Callable[[str], None] | None = None, judge: StanceJudgeSpec | None = None) -> FidelityResult:
    if model:
        parse_model_spec(model, base_url)  # a bad spec fails before any data is read
    if judge:
        parse_model_spec(judge.model, judge.base_url)
    scenario, rows = load_run(Path(run_dir))
    if not rows:
        raise InputError(f"fidelity: {run_dir} has no finished conversation yet")
    control = _control_rows(judge.control, scenario) if judge and judge.control else None
    settings = settings_for(scenario, model, base_url, resume=resume)
    policy = CultureParkPolicy(scenario)
    items: list[BatchItem] = []
    for run in rows:
        row, meta, item = run.row, run.meta, paper_format.item_from_meta(run.meta)

        def valid(text: str, item: Any = item) -> str | None:
            return None if paper_format.parse_code(text, item) is not None else "invalid_answer"
        when = [("after", _spoken(run))] + ([("before", [])] if before_after else [])
        items += [BatchItem(f"{row['id']}|{w}", policy.ask_delegate(meta, turns, question(meta), 16, temperature, 0),
                            valid) for w, turns in when]
    header = {"task": "fidelity", "source": str(run_dir), "conversations": len(rows), "before_after": before_after,
              "temperature": temperature, "source_hash": digest([r.row["id"] for r in rows])}
    results, info = await run_items(out, items, settings, header, say)
    recs = []
    for row, meta in rows:
        item = paper_format.item_from_meta(meta)
        codes = {}
        for w in ("after", "before") if before_after else ("after",):
            res = results.get(f"{row['id']}|{w}")
            codes[w] = paper_format.parse_code(res.text, item) if res and res.text is not None else None
        recs.append(FidelityRecord(id=row["id"], culture=meta.culture, item=str(meta.item_id),
                                   stance=int(meta.stance_code), **codes))
    by: dict[str, dict[str, list[FidelityRecord]]] = {"culture": defaultdict(list), "item": defaultdict(list)}
    for r in recs:
        by["culture"][r.culture].append(r)
        by["item"][r.item].append(r)
    report = FidelityResult.new(
        **info.model_dump(), source=str(run_dir), stance_policy=scenario.stance_policy,
        overall=_rates(recs, before_after),
        by_culture={k: _rates(v, before_after) for k, v in sorted(by["culture"].items())},
        by_item={k: _rates(v, before_after) for k, v in sorted(by["item"].items())}, per_conversation=recs)
    header_data = read_header(Path(run_dir) / LOG_NAME)
    data_dir = Path(header_data.data_dir) if header_data and header_data.data_dir else None
    found = population(rows, data_dir) if data_dir else None
    if found is not None:
        report.population = found
    if judge:
        js = EvalSettings(model=judge.model, base_url=judge.base_url, api_key_env=judge.api_key_env, resume=resume)
        report.judge = await stance_judge.judge(rows, str(run_dir), out / "judge", js, judge.per_turn, 0.0, say)
        if control is not None and judge.control is not None:
            report.control = await stance_judge.judge(control, str(judge.control), out / "control", js, False, 0.0,
                                                      say)
            report.lift = Lift(exact=_minus(report.judge.overall.exact, report.control.overall.exact),
                               within_one=_minus(report.judge.overall.within_one, report.control.overall.within_one))
    report.write(out / "fidelity.json")
    return report
