"""Which protocol a scenario runs: CulturePark conversations, or an education study.

The runner (one process or Ray workers) asks here for the plan, the turn policy and the
backend of each role, so the engine never needs to know which kind of study it is running.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from culturepark.agents.education import EducationPolicy, build_education_plan, tutor_configs
from culturepark.agents.protocol import CultureParkPolicy, build_plan
from culturepark.scenarios.schema import AnyScenario, BackendConfig, EducationScenario


def build_study_plan(scenario: AnyScenario, data_dir: Path, base_dir: Path | None = None) -> Any:
    if isinstance(scenario, EducationScenario):
        return build_education_plan(scenario, data_dir, base_dir)
    return build_plan(scenario, data_dir, base_dir)


def backend_configs(scenario: AnyScenario) -> dict[str, BackendConfig]:
    """Endpoint role → backend. Roles with identical settings share one endpoint (and its budget)."""
    if isinstance(scenario, EducationScenario):
        return {"learner": scenario.learner_backend,
                **{f"tutor:{arm}": cfg for arm, cfg in tutor_configs(scenario).items()}}
    return {r: scenario.backend_for(r) for r in ("delegate", "main_contact")}  # type: ignore[misc]


def policy_for(scenario: AnyScenario) -> Any:
    """A pure `TurnPolicy`; needs no data (each conversation's meta carries what it uses)."""
    if isinstance(scenario, EducationScenario):
        return EducationPolicy(scenario, tutor_configs(scenario))
    return CultureParkPolicy(scenario)
