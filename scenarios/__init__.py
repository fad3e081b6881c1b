"""Scenario files: the YAML schema (pydantic v2, extra fields forbidden) and its loader."""
from culturepark.scenarios.loader import ScenarioError, builtin_scenarios, load_scenario
from culturepark.scenarios.schema import Scenario

__all__ = ["Scenario", "ScenarioError", "builtin_scenarios", "load_scenario"]
