"""Property: whatever YAML a user writes, every config loader answers with a model or its own
one-line error (`ScenarioError`, exit 2) — never a traceback from deep inside."""
from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturepark.benchmarks.moderation import DatasetSpec
from culturepark.scenarios.loader import ScenarioError, load_config, load_scenario
from culturepark.scenarios.schema import EducationScenario
from culturepark.trainers.refine.config import RefineConfig

FIELDS = ["name", "kind", "backend", "cultures", "items", "version", "turns", "seed", "limits", "roles",
          "sampling", "arms", "learners_per_arm", "test", "text_field", "positive_labels", "dedup", "export",
          "concurrency", "provider", "model", "base_url", "rpm", "moderator", "culture_table", "path"]
scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=4),
                      max_leaves=20)
documents = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8) | values
raw_text = st.text(alphabet=st.sampled_from(list("abc: -[]{}'\"\n\t#&*!|>%@`0129.")), max_size=80)

LOADERS = [load_scenario, lambda p: load_config(RefineConfig, p), lambda p: load_config(DatasetSpec, p),
           lambda p: load_config(EducationScenario, p)]


def _each_loader(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_text(text)
        for load in LOADERS:
            try:
                load(path)
            except ScenarioError as exc:
                assert str(exc).startswith(str(path)) and "\n" not in str(exc).strip()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_yaml_document_gives_a_model_or_the_loaders_error(doc):
    _each_loader(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=150, deadline=None)
@given(raw_text)
def test_any_text_gives_a_model_or_the_loaders_error(text):
    _each_loader(text)
