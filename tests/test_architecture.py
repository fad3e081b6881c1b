"""The import rules of ../shared/design.md, enforced: dependencies point one way.

    face (culturepark/: cli, commands, runs, study, errors, console)
      → benchmarks/, trainers/  →  agents/  →  scenarios/  →  engine/
    culturepark/testing (the simulator) depends on engine/ only.

Every `import culturepark.X` in every module is read with `ast` (also the ones inside
functions), so a lazy import cannot hide an upward dependency.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"engine": "engine", "scenarios": "scenarios", "agents": "agents", "trainers": "trainers",
         "benchmarks": "benchmarks", "culturepark": "culturepark"}
RANK = {"engine": 0, "scenarios": 1, "agents": 2, "trainers": 3, "benchmarks": 3, "face": 4, "testing": 1}


def layer(module: str) -> str:
    """`culturepark.engine.log` → engine; `culturepark.testing.simulator` → testing; the face otherwise."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("engine", "scenarios", "agents", "trainers", "benchmarks", "testing"):
        return parts[1]
    return "face"


def modules() -> list[tuple[str, Path]]:
    out = []
    for name, folder in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            dotted = ".".join(p for p in rel.parts if p != "__init__")
            prefix = "culturepark" if name == "culturepark" else f"culturepark.{name}"
            out.append((f"{prefix}.{dotted}".rstrip("."), path))
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("culturepark"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("culturepark")}
    return found


def edges() -> list[tuple[str, str]]:
    return [(module, target) for module, path in modules() for target in imports(path)]


def violations(edges: list[tuple[str, str]]) -> list[str]:
    bad = []
    for module, target in edges:
        here, there = layer(module), layer(target)
        if True:
            if there == here:
                continue
            if here == "testing" and there != "engine":
                bad.append(f"{module} → {target} (the simulator depends on engine/ only)")
            elif there == "testing" and here != "face":
                bad.append(f"{module} → {target} (only the face and tests use the simulator)")
            elif there != "testing" and RANK[there] >= RANK[here]:
                bad.append(f"{module} ({here}) → {target} ({there})")
    return bad


def test_dependencies_point_one_way():
    found = edges()
    assert len(modules()) > 60 and len(found) > 100, "the checker found too little to be checking anything"
    assert violations(found) == []


@pytest.mark.parametrize("edge", [
    ("culturepark.engine.stage", "culturepark.scenarios.schema"),      # engine knows no scenario
    ("culturepark.agents.experiment", "culturepark.runs.prepare"),          # upward into the face
    ("culturepark.trainers.refine.pipeline", "culturepark.benchmarks.stats"),  # peers stay apart
    ("culturepark.testing.simulator", "culturepark.agents.cultures"),  # the simulator: engine only
    ("culturepark.benchmarks.moderation", "culturepark.testing.simulator"),  # measures: no simulator
])
def test_the_checker_reports_each_kind_of_wrong_edge(edge):
    assert len(violations([edge])) == 1 and violations([(edge[1], edge[1])]) == []


def _fresh_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("heavy", ["torch", "transformers", "ray", "sentence_transformers", "peft"])
def test_import_culturepark_loads_no_heavy_library(heavy):
    out = _fresh_python(f"import sys, culturepark; print({heavy!r} in sys.modules)")
    assert out.strip() == "False"


def test_help_loads_no_scenario_data_and_no_study():
    out = _fresh_python("import sys, io, contextlib\n"
                        "from culturepark.cli import build_parser\n"
                        "build_parser().format_help()\n"
                        "print(sorted(m for m in sys.modules if m.startswith('culturepark')))")
    loaded = eval(out)  # a printed list of module names
    assert not [m for m in loaded if layer(m) in ("agents", "trainers", "benchmarks", "testing")]
    assert "culturepark.scenarios.loader" not in loaded and "torch" not in out
