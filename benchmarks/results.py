"""The result of every evaluation as a model: written from it, read back through it.

Each `culturepark eval` task returns one of these, writes its JSON file with `to_json()` and every
reader (`eval compare`, `paper`, `report`) reads the file with `read_result`, so a renamed or
missing field fails where the file is read, not silently in a report. The JSON is the same as the
dicts written before these models (tests/fixtures/results_v1 holds one file of each, written by
that code, and each must read and write back unchanged).

Keys that a file may lack are written only when set (`to_json` leaves unset fields out), which is
how one model reads both the older and the newer shape of a file: a field added in a later
version (`constant`, `macro_f1_scored`, ...) has a default and stays absent when read from an old
file. Files of one shape are told apart by their `task`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write_json


class ResultModel(BaseModel):
    """A record of a result file: unknown keys refused (a renamed field is an error, not a gap)."""

    model_config = ConfigDict(extra="forbid")

    def model_post_init(self, _context: object) -> None:
        if "task" in type(self).model_fields:  # the discriminator is always written, even as a default
            self.__pydantic_fields_set__.add("task")

    def to_json(self) -> dict[str, JsonValue]:
        """The file's content: every field that was set, in declaration order (the old dicts' order)."""
        data: dict[str, JsonValue] = self.model_dump(mode="json", exclude_unset=True)
        return data

    def write(self, path: Path) -> Path:
        atomic_write_json(path, self.to_json())
        return path


class MeanStd(ResultModel):
    """mean ± std over the stated seeds (`stats.mean_std`); n values were defined."""

    mean: float | None
    std: float | None
    n: int


# ---- the fields every model-calling evaluation adds from its run (`eval_run.run_items`)


class ModeLabel(ResultModel):
    """Which mode produced an output: the paper's (the original's way, for comparison with its
    figures) or ours (the corrected default), and in a few words what that mode did. `report`
    prints it beside the output; an output that records no mode (a file made before the modes)
    gets none, so old files render as they did."""

    mode: Literal["paper", "ours"]
    what: str

    def text(self) -> str:
        return f"{self.mode}: {self.what}"


class RunInfo(ResultModel):
    model_spec: str
    prompts_hash: str
    prompt_style: str | None
    template: str | None
    items_hash: str
    requests: int
    elapsed_s: float


class EvalResult(ResultModel):
    """The head of every model-calling evaluation's file: its task, then how its model was called."""

    task: str
    model_spec: str
    prompts_hash: str
    prompt_style: str | None
    template: str | None
    items_hash: str
    requests: int
    elapsed_s: float


# ---- hofstede


class HofstedeSeed(ResultModel):
    seed: int
    item_means: dict[str, float | None]
    indices: dict[str, float | None]
    distance_c0: float | None = None
    distance: float | None = None
    diffs: dict[str, float | None] = {}
    centred_distance: float | None = None


class HofstedeCulture(ResultModel):
    hofstede_country: str | None
    published: dict[str, float | None]
    dimensions_compared: list[str]
    indices: dict[str, MeanStd]
    distance_c0: MeanStd
    distance: MeanStd | None = None  # with the constant; absent before 0.4
    centred_distance: MeanStd
    diffs: dict[str, MeanStd]
    invalid_answers: int
    invalid_by_item: dict[str, int]
    answers: int
    per_seed: list[HofstedeSeed]

    @property
    def distance_with_constant(self) -> MeanStd:
        """The distance with the file's constant (before 0.4 only C = 0 was computed)."""
        return self.distance if self.distance is not None else self.distance_c0


class HofstedePaperCompat(ResultModel):
    """The original's Hofstede scoring, as named options that are off by default (Scarelette/CulturePark,
    `hofstede_test.py`: `computeMetrics` and `run`). Scoring only: the same answers are re-scored for free.

    - `mas_weight`: the second MAS term's weight. The VSM13 manual's formula is
      MAS = 35(m05 − m03) + 35(m08 − m10) (ours, 35); the original wrote 25(m08 − m10).
    - `arabic_vs_jordan`: the original compared Arabic with Jordan's published row
      (`country_dict = {'Arabic': 'Jordan', …}`), where only LTO (16) and IVR (43) are published
      (the four others are `#NULL!` and were skipped), so the distance has two dimensions; ours
      compares Arabic with the table's "Arab countries" row on all six.
    """

    mas_weight: Literal[35, 25] = Field(35, description="MAS's second weight: 35 (the VSM13 manual's) or 25 "
                                                        "(the original's, paper-compat); scoring only")
    arabic_vs_jordan: bool = Field(False, description="paper-compat: compare Arabic with Jordan's published scores "
                                                      "(LTO and IVR only) as the original did, not 'Arab countries'",
                                   json_schema_extra={"flag": "--paper-arabic"})

    @property
    def is_default(self) -> bool:
        return self.mas_weight == 35 and not self.arabic_vs_jordan

    def labels(self) -> list[str]:
        """What a reader is told: each option that is on, by its name."""
        return ([f"MAS weight {self.mas_weight} (the original's; the manual's is 35)"] if self.mas_weight != 35
                else []) + (["Arabic vs Jordan on LTO and IVR (the original's)"] if self.arabic_vs_jordan else [])


class HofstedeResult(EvalResult):
    task: Literal["hofstede"] = "hofstede"
    data_hash: str
    seeds: int
    samples: int
    temperature: float
    constant: float = 0.0  # absent before 0.4: C = 0
    paper_compat: HofstedePaperCompat | None = None  # written only when an option is on: absent = the manual's
    cultures: dict[str, HofstedeCulture]


# ---- moderation


class PaperLabels(ResultModel):
    """The label words the original (CultureLLM) asked a model to answer with, e.g. OFF / NOT_OFF."""

    positive: str = Field(min_length=1)
    negative: str = Field(min_length=1)


class DatasetSpec(ResultModel):
    """A moderation data set (a small YAML file; nine are bundled). `paper_prompt` and `paper_labels`
    are the original's per-task question and label words, used only by `--parse paper`."""

    name: str
    path: str  # relative to the data directory, or absolute
    text_field: str
    label_field: str = "label"
    positive_labels: list[str] = Field(min_length=1)
    negative_labels: list[str] = Field(min_length=1)
    language: str
    culture: str | None = None
    task: str  # what a positive row contains, e.g. "offensive language"
    paper_prompt: str | None = None  # the original's instruction; the post follows it after a space
    paper_labels: PaperLabels | None = None

    @model_validator(mode="after")
    def _paper_pair(self) -> DatasetSpec:
        if (self.paper_prompt is None) != (self.paper_labels is None):
            raise ValueError("paper_prompt and paper_labels come together (the question names the label words)")
        return self

    def model_post_init(self, _context: object) -> None:
        # a spec is written whole; the paper fields only where it has them (older files stay the same)
        self.__pydantic_fields_set__.update(k for k in type(self).model_fields
                                            if not (k.startswith("paper_") and getattr(self, k) is None))

    def strict_view(self) -> dict[str, JsonValue]:
        """The spec as the strict (yes/no) mode reads it: without the paper fields, so hashes made
        before they existed stay the same."""
        data: dict[str, JsonValue] = self.model_dump(mode="json", exclude={"paper_prompt", "paper_labels"})
        return data


class F1Scores(ResultModel):
    f1_positive: float
    f1_negative: float
    macro_f1: float
    accuracy: float


class MajorityBaseline(F1Scores):
    predicts: Literal["positive", "negative"]

    @model_serializer(mode="wrap")
    def _predicts_first(self, handler: SerializerFunctionWrapHandler) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = handler(self)
        return {"predicts": data.pop("predicts"), **data}


class ModerationSeed(F1Scores):
    seed: int
    macro_f1_strict: float | None = None  # paper parse: the same answers read strictly (one label word)
    macro_f1_scored: float | None = None
    accuracy_scored: float | None = None
    unparseable: int
    coverage: float | None = None
    predicted_positive_rate: float | None

    @model_serializer(mode="wrap")
    def _seed_first(self, handler: SerializerFunctionWrapHandler) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = handler(self)
        return {"seed": data.pop("seed"), **data}


Parse = Literal["strict", "paper"]


class ModerationResult(EvalResult):
    task: Literal["moderation"] = "moderation"
    # strict: our yes/no question, re-asked until readable; paper: the original's question and label
    # words, one attempt, read leniently. Absent in files made before the paper mode: strict.
    parse: Parse = "strict"
    dataset: str
    spec: DatasetSpec
    data_hash: str
    seeds: int
    rows: int
    positives: int
    skipped_unknown_labels: dict[str, int]
    temperature: float
    scoring: str | None = None
    macro_f1: MeanStd
    f1_positive: MeanStd
    f1_negative: MeanStd
    accuracy: MeanStd
    macro_f1_scored: MeanStd | None = None  # absent before 0.4
    accuracy_scored: MeanStd | None = None
    coverage: MeanStd | None = None
    macro_f1_strict: MeanStd | None = None  # paper parse only: the same answers read strictly
    unparseable: int
    majority_baseline: MajorityBaseline
    per_seed: list[ModerationSeed]

    def mode_label(self) -> ModeLabel | None:
        if "parse" not in self.model_fields_set:
            return None
        return (ModeLabel(mode="paper", what="parse paper: the original's label words, one attempt, read leniently")
                if self.parse == "paper" else
                ModeLabel(mode="ours", what="parse strict: yes/no, re-asked until readable"))


# ---- wvs


class WvsItemRow(ResultModel):
    item: str
    options: int
    respondents: int
    modal: list[int]
    distribution: dict[str, float]
    codes: list[int | None]  # per seed; None: unparseable
    share: list[float | None]
    is_modal: list[bool]
    # distribution fidelity (files from before it lack these): the model's answers as a distribution over
    # the options against the respondents' (benchmarks/distribution.py)
    model_distribution: dict[str, float] | None = None
    answers: int | None = None  # parsed model answers the distribution is made of
    w1: float | None = None  # normalised Wasserstein-1, W1 / (N − 1)
    w1_interval: list[float] | None = None  # 95 % bootstrap (respondents and answers resampled)
    representativeness: float | None = None  # OpinionQA: 1 − W1/(N − 1)
    js_similarity: float | None = None  # GlobalOpinionQA: 1 − Jensen–Shannon distance
    # what the distribution came from (files from before answer probabilities lack these): "probs", the
    # model's probability of each option code at the answer position renormalised over the options, or
    # "samples", the parsed answers; with probs, the probability the model put on anything else
    method: Literal["probs", "samples"] | None = None
    outside_mass: float | None = None


class Estimate(ResultModel):
    """A figure over items with its 95 % percentile-bootstrap interval (items resampled)."""

    value: float
    interval: list[float]


class DistributionFidelity(ResultModel):
    """Answer distributions vs the respondents' over a set of items (OpinionQA, GlobalOpinionQA, WorldValuesBench)."""

    items: int  # items with at least one parsed answer
    # "samples": N answers at the temperature; "probs": answer probabilities; "mixed": some items each way
    # (`methods` counts them); "stances": a run's assigned stances
    source: str
    w1: Estimate  # mean normalised W1
    representativeness: Estimate
    js_similarity: Estimate
    share_w1_below_0_2: Estimate  # WorldValuesBench's figure
    methods: dict[str, int] | None = None  # items per method (absent: files from before answer probabilities)
    outside_mass: float | None = None  # mean probability put outside the options, over the items from probs


class WvsSummary(ResultModel):
    """Agreement over a set of items; only `items` when the set is empty."""

    items: int
    agreement: MeanStd | None = None
    mean_share: MeanStd | None = None
    unparseable: int | None = None
    chance_agreement: float | None = None
    distribution: DistributionFidelity | None = None  # absent in files from before distribution fidelity


class WvsCulture(ResultModel):
    country_file: str
    all: WvsSummary
    held_out: WvsSummary
    trained: WvsSummary
    never_asked: list[str]
    per_item: list[WvsItemRow]


class WvsResult(EvalResult):
    task: Literal["wvs"] = "wvs"
    data_hash: str
    seeds: int
    temperature: float
    trained_items: list[str]
    cultures: dict[str, WvsCulture]
    samples: int | None = None  # answers per item × culture the distributions are made of (absent: old files)
    # how distributions were asked for (`eval wvs --method`; absent: files from before, all samples)
    method: Literal["probs", "samples", "auto"] | None = None


# ---- fidelity


class FidelityRates(ResultModel):
    conversations: int
    unparseable: int
    exact: float | None
    within_one: float | None
    exact_before: float | None = None  # with --before-after only
    changed_after_conversation: float | None = None


class FidelityRecord(ResultModel):
    id: str
    culture: str
    item: str
    stance: int
    after: int | None
    before: int | None = None  # with --before-after only


class PopulationItem(ResultModel):
    """One culture × item: the stances a run assigned, as a distribution, against the country's respondents."""

    culture: str
    item: str
    conversations: int
    respondents: int
    stance_distribution: dict[str, float]
    w1: float
    w1_interval: list[float]
    representativeness: float
    js_similarity: float


class Population(ResultModel):
    """The run's delegates as a population: is the stance sampling faithful to the respondents?"""

    data_dir: str
    by_culture: dict[str, DistributionFidelity]
    per_item: list[PopulationItem]


class JudgeRates(ResultModel):
    """The blind judge's verdicts against the assigned codes (unclear and unparseable count as misses)."""

    conversations: int
    unclear: int
    unparseable: int
    exact: float | None
    within_one: float | None
    unclear_rate: float | None


class DriftPoint(JudgeRates):
    k: int  # the judge read the conversation up to the delegate's k-th turn


class JudgeRecord(ResultModel):
    id: str
    culture: str
    item: str
    stance: int
    verdict: int | Literal["unclear"] | None  # None: unparseable


class StanceJudge(ResultModel):
    """`eval fidelity --judge`: a judge that never sees the persona, stance or system prompt."""

    model_spec: str
    source: str
    requests: int
    overall: JudgeRates
    by_culture: dict[str, JudgeRates]
    by_item: dict[str, JudgeRates]
    drift: list[DriftPoint] | None = None  # with --per-turn only
    per_conversation: list[JudgeRecord]


class Lift(ResultModel):
    """The judge's agreement on this run minus on the control run (what the stance added over culture priors)."""

    exact: float | None
    within_one: float | None


_SELF_REPORT = {"overall": "self_report", "by_culture": "self_report_by_culture", "by_item": "self_report_by_item"}
S = TypeVar("S", bound="SelfReportNames")


class SelfReportNames(ResultModel):
    """The re-ask's rates (`overall`, `by_culture`, `by_item`) are written as `self_report…`: it reads the
    delegate's prompt back and is no evidence of adherence (the blind judge is). A file written before the
    rename keeps its names when read and written back."""

    _legacy_names: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _self_report_names(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        legacy = isinstance(data, dict) and "overall" in data
        if isinstance(data, dict) and "self_report" in data:
            old = {v: k for k, v in _SELF_REPORT.items()}
            data = {old.get(k, k): v for k, v in data.items()}
        model = handler(data)
        model._legacy_names = legacy
        return model

    @model_serializer(mode="wrap")
    def _written_as_self_report(self, handler: SerializerFunctionWrapHandler) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = handler(self)
        return data if self._legacy_names else {_SELF_REPORT.get(k, k): v for k, v in data.items()}

    @classmethod
    def new(cls: type[S], **fields: Any) -> S:
        """A result made now: its re-ask is written under the `self_report` names."""
        return cls.model_validate({_SELF_REPORT.get(k, k): v for k, v in fields.items()})


class FidelityResult(EvalResult, SelfReportNames):
    """`overall`, `by_culture`, `by_item`: the re-ask, written as `self_report…` (it reads the delegate's prompt
    back: no evidence of adherence; `judge` is). Files written before the rename keep their names when read and
    written back."""

    task: Literal["fidelity"] = "fidelity"
    source: str
    stance_policy: str
    overall: FidelityRates
    by_culture: dict[str, FidelityRates]
    by_item: dict[str, FidelityRates]
    per_conversation: list[FidelityRecord]  # `after`/`before`: the self-reported codes
    population: Population | None = None  # absent in files from before it, or when the run's data is not at hand
    judge: StanceJudge | None = None  # with --judge only
    control: StanceJudge | None = None  # with --judge --control RUN only: the same judge on the control run
    lift: Lift | None = None


# ---- judged: phenomena, content


class LabelCount(ResultModel):
    count: int
    share: float | None


class LabelShares(ResultModel):
    """A judge's labels over some records: counts, then each label's count and share of the judged.

    On disk the labels sit beside the counts (`{"records", "judged", "unparseable", "yes": {...}}`).
    """

    records: int
    judged: int
    unparseable: int
    labels: dict[str, LabelCount]

    @model_validator(mode="before")
    @classmethod
    def _gather_labels(cls, data: object) -> object:
        if isinstance(data, dict) and "labels" not in data:
            fixed = {"records", "judged", "unparseable"}
            return {**{k: v for k, v in data.items() if k in fixed},
                    "labels": {k: v for k, v in data.items() if k not in fixed}}
        return data

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = handler(self)
        labels = data.pop("labels")
        assert isinstance(labels, dict)
        return {**data, **labels}

    def share(self, label: str) -> float | None:
        return self.labels[label].share


class PhenomenaResult(EvalResult):
    task: Literal["phenomena"] = "phenomena"
    # which construct (`eval phenomena --construct`): ours, per conversation, stance_shift and
    # understanding; paper, per delegate turn, the original's extend and understanding_ratio. Absent in
    # files made before the paper construct: ours. (`construct` itself is a pydantic method's name.)
    mode: Literal["ours", "paper"] = "ours"
    source: str
    conversations: int
    by_culture: dict[str, dict[str, LabelShares]]  # culture ("all" too) → question → verdicts

    def mode_label(self) -> ModeLabel | None:
        if "mode" not in self.model_fields_set:
            return None
        return (ModeLabel(mode="paper", what="construct paper: extend rate and understanding ratio per delegate turn")
                if self.mode == "paper" else
                ModeLabel(mode="ours", what="construct ours: stance shift and understanding per conversation"))


class ContentResult(EvalResult):
    task: Literal["content"] = "content"
    source: str
    by_culture: dict[str, LabelShares]  # culture ("all" too) → belief/norm/custom
    # --second-level: culture ("all" too) → kind → the original's sub-categories of that kind
    second_level: dict[str, dict[str, LabelShares]] | None = None
    # top: belief / norm / custom only (ours); second: with the original's sub-categories. Absent in
    # files made before it was recorded.
    level: Literal["top", "second"] | None = None

    def mode_label(self) -> ModeLabel | None:
        if self.level is None:
            return None
        return (ModeLabel(mode="paper", what="second level: belief / norm / custom and the original's sub-categories")
                if self.level == "second" else ModeLabel(mode="ours", what="top level: belief / norm / custom"))


# ---- diversity


class DiversityRow(ResultModel):
    task: Literal["diversity"] = "diversity"
    distance: str | None = None
    diversity_gain: float
    std: float
    median: float | None = None
    diversity_gain_cosine: float | None = None
    std_cosine: float | None = None
    new: int
    reference: int
    distinct_texts_embedded: int | None = None
    embeddings: str
    new_file: str
    reference_file: str
    new_texts: str | None = None  # the unit of a run's texts (run_texts.UNITS); absent: a file's rows as they are
    reference_texts: str | None = None


class DiversityResult(ResultModel):
    """Several new files against one reference; a single row is written as that row alone."""

    task: Literal["diversity"] = "diversity"
    rows: list[DiversityRow]

    @model_validator(mode="before")
    @classmethod
    def _one_row(cls, data: object) -> object:
        if isinstance(data, dict) and "rows" not in data:
            return {"task": "diversity", "rows": [data]}
        return data

    def to_json(self) -> dict[str, JsonValue]:
        return self.rows[0].to_json() if len(self.rows) == 1 else super().to_json()


# ---- compare: several models, the same tasks


class ModerationHeadline(ResultModel):
    macro_f1: MeanStd
    macro_f1_scored: MeanStd | None
    accuracy: MeanStd
    unparseable: int
    majority_macro_f1: float
    parse: Parse = "strict"  # absent before the paper mode
    macro_f1_strict: MeanStd | None = None


class HofstedeHeadline(ResultModel):
    distance_c0: MeanStd
    constant: float
    distance: MeanStd
    centred_distance: MeanStd
    invalid: int
    paper_compat: HofstedePaperCompat | None = None  # absent: the manual's scoring


class WvsHeadline(ResultModel):
    agreement: MeanStd | None
    mean_share: MeanStd | None
    unparseable: int | None
    chance: float | None
    distribution: DistributionFidelity | None = None  # absent from comparisons made before it


Headline = ModerationHeadline | dict[str, HofstedeHeadline] | dict[str, WvsHeadline]


class CompareRow(ResultModel):
    model: str
    task: str
    result: Headline
    seeds: int
    prompt_style: str | None = None
    items_hash: str
    prompts_hash: str
    data_hash: str


class CompareResult(ResultModel):
    task: Literal["compare"] = "compare"
    models: list[str]
    tasks: list[str]
    seeds: int
    limit: int | None
    rows: list[CompareRow]


class FidelitySide(SelfReportNames):
    overall: FidelityRates
    by_culture: dict[str, FidelityRates]


class CompareRunsDiversity(ResultModel):
    B_over_A: DiversityRow
    A_over_B: DiversityRow


class CompareRunsResult(ResultModel):
    """Two runs side by side. A direct run (one request per culture and item, no conversation) has
    no fidelity or phenomena side: `kinds` and `not_measured` say so (both absent when both runs are
    conversation runs, as before)."""

    task: Literal["compare-runs"] = "compare-runs"
    runs: dict[str, str]  # "A", "B" → run directory
    kinds: dict[str, str] | None = None  # "A", "B" → culturepark | direct; written when a side is direct
    fidelity: dict[str, FidelitySide] = {}
    phenomena: dict[str, dict[str, dict[str, LabelShares]]] | None = None  # with --judge only
    diversity: CompareRunsDiversity | None = None
    not_measured: dict[str, list[str]] | None = None  # "A"/"B" → what was not measured on it, and why


# ---- education


class BootstrapDiff(ResultModel):
    diff: float | None
    ci95: list[float] | None
    resamples: int | None = None  # pooled differences only
    undefined_resamples: int | None = None
    n: list[int]

    @model_serializer(mode="wrap")
    def _n_last(self, handler: SerializerFunctionWrapHandler) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = handler(self)
        return {**{k: v for k, v in data.items() if k != "n"}, "n": data["n"]}


class ArmDifference(ResultModel):
    gain: BootstrapDiff
    experience: BootstrapDiff | None = None  # learner-level differences only


class InvalidAnswers(ResultModel):
    """Unparseable answers left after the re-asks, per phase of the study."""

    pre: int
    post: int
    exp: int


class ValidAnswers(ResultModel):
    pre: int
    post: int


class PhaseMeans(ResultModel):
    pre: MeanStd
    post: MeanStd


class EducationGroup(ResultModel):
    learners: int
    pre_distance: MeanStd
    post_distance: MeanStd
    gain: MeanStd
    invalid_answers: InvalidAnswers
    experience: MeanStd
    experience_items: dict[str, MeanStd]
    free_text_answers: int
    wvs_distance: dict[str, PhaseMeans] | None = None


class PooledGroup(ResultModel):
    pre_distance: float | None
    post_distance: float | None
    gain: float | None
    learners: int
    valid_answers: ValidAnswers


class PooledArm(ResultModel):
    gain: float | None


class PooledScores(ResultModel):
    method: str
    dimensions: list[str]
    by_culture: dict[str, dict[str, PooledGroup]]
    by_arm: dict[str, PooledArm]
    arm_differences: dict[str, ArmDifference]


class LearnerRecord(ResultModel):
    id: str
    culture: str
    arm: str
    learners: str
    pre_distance: float | None
    post_distance: float | None
    gain: float | None
    experience: float | None
    invalid: dict[str, int]


class EducationResult(ResultModel):
    task: Literal["education"] = "education"  # not written: the file is known by its name
    run_dir: str
    run_name: str | None
    scenario_hash: str | None
    learners: str  # simulated, human or mixed
    note: str
    cultures: list[str]
    arms: list[str]
    learners_scored: int
    withdrawn_excluded: int
    learners_planned: int | None
    distance: str
    dimensions: dict[str, list[str]]
    by_culture: dict[str, dict[str, EducationGroup]]
    by_arm: dict[str, EducationGroup]
    warning: str | None = None
    arm_differences: dict[str, ArmDifference] | None = None
    pooled: PooledScores | None = None
    per_learner: list[LearnerRecord] = []

    def model_post_init(self, _context: object) -> None:
        pass  # education.json never carried its task

    def to_json(self) -> dict[str, JsonValue]:
        return self.model_dump(mode="json", exclude_unset=True, exclude={"task"})


# ---- the paper chain (`culturepark paper`)


class ConversationStep(ResultModel):
    dir: str
    conversations: int
    done: int
    failed: int
    turns: int
    cost_usd: float | None


class RefineStep(ResultModel):
    dir: str
    conversations: int | None
    extracted: int | None
    kept: int | None
    exported: int | None
    extract_failed: int | None
    call_failed: int | None


class SftStep(ResultModel):
    file: str
    examples: int


class TrainStep(ResultModel):
    status: str
    job_id: str | None = None  # openai
    steps: int | None = None  # lora
    last_loss: float | None = None
    model_spec: str | None
    trained_tokens: int | None = None

    @model_serializer(mode="wrap")
    def _spec_after_run(self, handler: SerializerFunctionWrapHandler) -> dict[str, JsonValue]:
        """The orders the chain wrote: status, job_id, model_spec, trained_tokens (openai);
        status, steps, last_loss, model_spec (lora)."""
        data: dict[str, JsonValue] = handler(self)
        spec = data.pop("model_spec")
        tokens = {"trained_tokens": data.pop("trained_tokens")} if "trained_tokens" in data else {}
        return {**data, "model_spec": spec, **tokens}


class EvalStep(ResultModel):
    dir: str
    requests: int


class PaperSteps(ResultModel):
    conversations: dict[str, ConversationStep]
    refine: dict[str, RefineStep]
    sft: dict[str, SftStep]
    train: dict[str, TrainStep]
    eval: dict[str, dict[str, EvalStep]]


class ModerationPair(ResultModel):
    macro_f1: MeanStd | None
    coverage: MeanStd | None


class BaseTuned(ResultModel):
    """One moderation set's scores for the base model and the culture's tuned one."""

    base: ModerationPair | None = None
    tuned: ModerationPair | None = None


class PaperRow(ResultModel):
    """One culture in the paper's layout: base vs its own tuned model."""

    culture: str
    hofstede_c50_base: MeanStd | None
    hofstede_centred_base: MeanStd | None
    moderation: dict[str, BaseTuned] | None = None  # per moderation set
    hofstede_c50_tuned: MeanStd | None
    hofstede_centred_tuned: MeanStd | None

    def hofstede(self, metric: Literal["c50", "centred"], who: Literal["base", "tuned"]) -> MeanStd | None:
        value: MeanStd | None = getattr(self, f"hofstede_{metric}_{who}")
        return value


class ChainScores(ResultModel):
    """One culture's scores for one row of the chain: Hofstede (C = the paper's, and C-free) and
    each of its moderation sets."""

    hofstede_c50: MeanStd | None
    hofstede_centred: MeanStd | None
    moderation: dict[str, ModerationPair]


RowKind = Literal["base", "tuned", "baseline", "direct", "generate", "verify", "diversify"]


class ChainRow(ResultModel):
    """One row of the chain's table beside base and tuned: a `--baseline` model (evaluated as it is),
    the direct-generation baseline, or an ablation row (trained on data refined with less). A row
    with a model per culture (`specs`) was trained like the tuned row on its own data."""

    name: str
    kind: RowKind
    mode: ModeLabel
    specs: dict[str, str | None]  # culture → the model evaluated for it
    cultures: dict[str, ChainScores]


class ChainEcho(BaseModel):
    """The chain's settings as it ran (`PaperChain`, a face-level model, written whole)."""

    model_config = ConfigDict(extra="allow")
    cultures: list[str]


class PaperResult(ResultModel):
    task: Literal["paper"] = "paper"  # not written: the file is known by its name
    chain: ChainEcho
    steps: PaperSteps
    table: list[PaperRow]
    hofstede_constant: float
    seeds: int
    prompt_style: str
    # added with --baseline / --direct / --ablation: every row (base and tuned too) and the mode each
    # step of the chain ran in; absent in files made before, which render as they did
    rows: list[ChainRow] | None = None
    modes: dict[str, ModeLabel] | None = None

    def model_post_init(self, _context: object) -> None:
        pass

    def to_json(self) -> dict[str, JsonValue]:
        return self.model_dump(mode="json", exclude_unset=True, exclude={"task"})


AnyResult = (HofstedeResult | ModerationResult | WvsResult | FidelityResult | PhenomenaResult | ContentResult
             | DiversityResult | CompareResult | CompareRunsResult | EducationResult | PaperResult)
R = TypeVar("R", bound=ResultModel)


def read_result(path: Path, model: type[R]) -> R:
    """A result file read through its model; a file that is not of that shape is bad input, named."""
    try:
        return model.model_validate(orjson.loads(Path(path).read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from exc
    except ValueError as exc:  # pydantic's ValidationError
        first = str(exc).splitlines()
        raise InputError(f"{path}: not a {model.__name__} file: {' '.join(first[1:3]).strip()}") from exc
