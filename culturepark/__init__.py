"""culturepark: the CulturePark protocol at synthetic-data scale.

Python API (mirrors the CLI):

    import culturepark
    result = culturepark.run("quickstart", out="runs/q")       # -> RunResult
    rows = culturepark.replay("runs/q")                        # conversations as dicts
    scenario = culturepark.load_scenario("paper-v1")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def load_scenario(ref: str | Path) -> Any:
    """A scenario by bundled name or YAML path, validated (`ScenarioError` names file and field)."""
    from culturepark.scenarios.loader import load_scenario as _load
    return _load(ref)


def run(scenario: Any, **kwargs: Any) -> Any:
    from culturepark.runs.in_process import run as _run
    return _run(scenario, **kwargs)


def replay(run_dir: str | Path) -> list[dict[str, Any]]:
    from culturepark.engine.export import assemble, conversation_rows
    return list(conversation_rows(assemble(Path(run_dir))))


def export(run_dir: str | Path) -> dict[str, Any]:
    from culturepark.engine.export import export_run
    exported: dict[str, Any] = export_run(Path(run_dir)).to_json()
    return exported


__all__ = ["export", "load_scenario", "replay", "run"]
