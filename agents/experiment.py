"""Which protocol a scenario runs: CulturePark conversations, or an education study.

An `Experiment` answers everything the runners (one process, Ray workers, the study web app) and
the CLI ask of a scenario — its plan, its turn policy, the backend of each role, its
command-line overrides and how it describes itself — so nothing outside this module needs
to know which kind of experiment it holds. `experiment_for` picks the class by the scenario's `kind`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from culturepark.agents.cultures import Culture
from culturepark.agents.direct import DirectPolicy
from culturepark.agents.learners import EducationPolicy, build_education_plan, tutor_configs
from culturepark.agents.protocol import CultureParkPolicy, build_plan
from culturepark.agents.wvs import WVSData
from culturepark.engine.errors import InputError
from culturepark.engine.scheduler import ConversationSpec, TurnPolicy
from culturepark.scenarios.schema import (
    DEFAULT_BASE_URLS,
    DEFAULT_KEY_ENVS,
    EMBEDDED_ONLY,
    AnyScenario,
    BackendConfig,
    DirectScenario,
    EducationScenario,
    Scenario,
)


class ExperimentPlan(Protocol):
    """What a runner needs of a plan: its size, its conversations (lazily), what to tell the user."""

    cultures: list[Culture]
    notices: list[str]
    skipped: set[Any]

    @property
    def data(self) -> WVSData | None: ...  # read-only: a plan that always has data satisfies it too
    @property
    def size(self) -> int: ...
    def conversations(self, keep: Callable[[str], bool] | None = None) -> Iterator[ConversationSpec]: ...


@dataclass(frozen=True)
class Overrides:
    """Command-line flags that change a scenario's backends (`run`, `study serve`)."""

    base_url: str | None = None
    model: str | None = None
    arms: list[str] | None = None  # education: NAME=MODEL_SPEC, replacing the scenario's arms
    service_tier: str | None = None  # standard | flex, for every remote backend


class Experiment(Protocol):
    kind: ClassVar[str]
    scenario: AnyScenario

    def plan(self, data_dir: Path, base_dir: Path | None = None) -> ExperimentPlan: ...
    def policy(self) -> TurnPolicy: ...
    def backends(self) -> dict[str, BackendConfig]: ...
    def apply(self, data: dict[str, Any], flags: Overrides) -> None: ...
    def describe(self, plan: ExperimentPlan) -> tuple[dict[str, Any], str]: ...


def _point_at(backends: list[dict[str, Any]], flags: Overrides) -> None:
    """`--base-url` sends a backend to an OpenAI-compatible server; `--model` renames its model."""
    for b in backends:
        if flags.base_url:
            if b["provider"] == "local":  # now a server: the embedded model's own settings no longer apply
                for key in EMBEDDED_ONLY:
                    b.pop(key, None)
                b["provider"] = "openai"
                b["api"] = "completions"
            b["base_url"] = flags.base_url
        if flags.model:
            provider, sep, name = flags.model.partition(":")
            if sep and name and provider in DEFAULT_KEY_ENVS and b["provider"] != "local":
                _switch_provider(b, provider)  # `--model anthropic:MODEL`: another provider's API
                b["model"] = name
            else:
                b["model"] = flags.model
        if flags.service_tier and b["provider"] != "local":  # a tier is a remote API's
            b["service_tier"] = flags.service_tier


def _switch_provider(b: dict[str, Any], provider: str) -> None:
    """A remote backend moved to another provider: the old provider's default URL and key variable go
    with it (the new one's defaults apply; a `--base-url` given beside it still wins)."""
    old = b["provider"]
    if old == provider:
        return
    if b.get("base_url") == DEFAULT_BASE_URLS.get(old):
        b.pop("base_url", None)
    if b.get("api_key_env") == DEFAULT_KEY_ENVS.get(old):
        b.pop("api_key_env", None)
    b["provider"] = provider


class CultureParkExperiment:
    """Conversations between a main contact and cultural delegates (v1, v2, scripts)."""

    kind: ClassVar[str] = "culturepark"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def plan(self, data_dir: Path, base_dir: Path | None = None) -> ExperimentPlan:
        plan: ExperimentPlan = build_plan(self.scenario, data_dir, base_dir)
        return plan

    def policy(self) -> TurnPolicy:
        return CultureParkPolicy(self.scenario)

    def backends(self) -> dict[str, BackendConfig]:
        """Endpoint role → backend. Roles with identical settings share one endpoint (and its budget)."""
        return {r: self.scenario.backend_for(r) for r in ("delegate", "main_contact")}

    def apply(self, data: dict[str, Any], flags: Overrides) -> None:
        if flags.arms:
            raise InputError("--arm applies to education studies (kind: education) only")
        _point_at([data["backend"]] + [r["backend"] for r in data["roles"].values() if r.get("backend")], flags)

    def describe(self, plan: ExperimentPlan) -> tuple[dict[str, Any], str]:
        items = len(getattr(plan, "items", []))
        never = f", {len(plan.skipped)} never asked" if plan.skipped else ""
        return ({"conversations": plan.size, "items": items},
                f"{plan.size} conversations ({len(plan.cultures)} cultures × {items} items{never})")


class EducationExperiment:
    """Learners taught by tutor arms, tested before and after (simulated or human learners)."""

    kind: ClassVar[str] = "education"

    def __init__(self, scenario: EducationScenario) -> None:
        self.scenario = scenario

    def plan(self, data_dir: Path, base_dir: Path | None = None) -> ExperimentPlan:
        plan: ExperimentPlan = build_education_plan(self.scenario, data_dir, base_dir)
        return plan

    def policy(self) -> TurnPolicy:
        return EducationPolicy(self.scenario, tutor_configs(self.scenario))

    def backends(self) -> dict[str, BackendConfig]:
        return {"learner": self.scenario.learner_backend,
                **{f"tutor:{arm}": cfg for arm, cfg in tutor_configs(self.scenario).items()}}

    def apply(self, data: dict[str, Any], flags: Overrides) -> None:
        """`--arm` replaces the arms; `--base-url` sends every tutor (and the simulated learner) to one
        OpenAI-compatible server; `--model` names the model every arm's tutor (and the learner) asks for
        there — a pilot against one model, since the arms then no longer differ by model."""
        if flags.arms:
            data["arms"] = [_arm(a) for a in flags.arms]
        for arm in data["arms"]:
            if flags.base_url:
                arm["base_url"] = flags.base_url
                if arm["tutor"].startswith("local:"):
                    arm["tutor"] = "openai:" + arm["tutor"].removeprefix("local:").partition("+lora:")[0]
            if flags.model:
                arm["tutor"] = arm["tutor"].partition(":")[0] + ":" + flags.model
        _point_at([data["learner_backend"]], flags)

    def describe(self, plan: ExperimentPlan) -> tuple[dict[str, Any], str]:
        sc = self.scenario
        items = len(getattr(plan, "items", []))
        return ({"conversations": plan.size, "items": items, "arms": [a.name for a in sc.arms]},
                f"{plan.size} learners ({len(plan.cultures)} cultures × {len(sc.arms)} arms × "
                f"{sc.learners_per_arm}), test of {items} items")


class DirectExperiment(CultureParkExperiment):
    """The paper's direct-generation baseline: the CulturePark plan, one delegate request each."""

    kind: ClassVar[str] = "direct"
    scenario: DirectScenario

    def policy(self) -> TurnPolicy:
        return DirectPolicy(self.scenario)

    def backends(self) -> dict[str, BackendConfig]:
        return {"delegate": self.scenario.backend_for("delegate")}

    def describe(self, plan: ExperimentPlan) -> tuple[dict[str, Any], str]:
        items = len(getattr(plan, "items", []))
        return ({"conversations": plan.size, "items": items, "style": self.scenario.style},
                f"{plan.size} direct generations of {self.scenario.reasons} reasons, {self.scenario.style} style "
                f"({len(plan.cultures)} cultures × {items} items)")


def _arm(flag: str) -> dict[str, str]:
    name, eq, spec = flag.partition("=")
    if not eq or not name or not spec:
        raise InputError(f"--arm {flag!r}: expected NAME=MODEL_SPEC, e.g. tuned=local:gemma3-270m+lora:DIR")
    return {"name": name, "tutor": spec}


EXPERIMENTS: dict[str, Any] = {CultureParkExperiment.kind: CultureParkExperiment,
                               EducationExperiment.kind: EducationExperiment,
                               DirectExperiment.kind: DirectExperiment}


def experiment_for(scenario: AnyScenario) -> Experiment:
    """The experiment class for the scenario's `kind` (the one place that dispatches on it)."""
    experiment: Experiment = EXPERIMENTS[scenario.kind](scenario)
    return experiment


__all__ = [
    "EXPERIMENTS",
    "CultureParkExperiment",
    "DirectExperiment",
    "EducationExperiment",
    "Experiment",
    "ExperimentPlan",
    "Overrides",
    "experiment_for",
]
