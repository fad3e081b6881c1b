"""Content hashes pinned as the code computed them before `BackendConfig` was split by kind
(remote HTTP / embedded model): every bundled scenario, the tests' scenarios and backends of each
kind with every field set, and refine configs (whose hash covers the whole backend). A run or a
refinement made by an older version resumes only if its hash is unchanged, so a change to the
schema that moves any of these numbers breaks users' directories."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from culturepark.runs.prepare import RunOptions, apply_overrides
from culturepark.scenarios.loader import builtin_scenarios, load_scenario, parse_scenario
from culturepark.trainers.refine import RefineConfig
from tests.conftest import scenario_dict

FIXTURE = Path(__file__).parent.parent / "fixtures" / "v0.1-run" / "scenario.yaml"
REMOTE_FULL = {"provider": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1", "api": "completions",
               "api_key_env": "MY_KEY", "timeout_s": 30.0, "settle": "usage", "max_connections": 8,
               "price": {"input_per_1m": 1.0, "output_per_1m": 2.0, "batch": {"input_per_1m": 0.5,
                                                                              "output_per_1m": 1.0}},
               "service_tier": "flex", "flex_fallback_after": 2, "flex_timeout_s": 100.0,
               "prompt_cache": {"key": True, "key_rpm": 10.0}, "batch": {"max_requests": 10, "poll_s": 5.0}}
EMBEDDED_FULL = {"provider": "local", "model": "gemma3-270m", "device": "cpu", "max_batch": 4, "batch_wait_ms": 1.0,
                 "adapter": "/tmp/adapter", "template": "gemma", "weights": "fp32", "settle": "usage",
                 "price": {"input_per_1m": 0.1, "output_per_1m": 0.1}}

CASES: dict[str, dict[str, Any]] = {
    "tests_scenario_dict": scenario_dict(),
    "v0.1_fixture": yaml.safe_load(FIXTURE.read_text()),
    "no_backend": {"name": "x", "cultures": ["Chinese"]},
    "gemini": scenario_dict(backend={"provider": "gemini", "model": "gemini-2.0-flash"}),
    "remote_every_field": scenario_dict(backend=REMOTE_FULL),
    "embedded_every_field": scenario_dict(backend=EMBEDDED_FULL),
    "embedded_minimal": scenario_dict(backend={"provider": "local", "model": "gemma3-270m"}),
    "roles_mixed": scenario_dict(roles={"delegate": {"backend": EMBEDDED_FULL},
                                        "main_contact": {"backend": REMOTE_FULL}}),
    "education_mixed": {"name": "e", "kind": "education", "cultures": ["Chinese"],
                        "arms": [{"name": "a", "tutor": "local:gemma3-270m"}],
                        "learner_backend": REMOTE_FULL},
    "direct_embedded": scenario_dict(kind="direct", backend=EMBEDDED_FULL),
}
REFINE_CASES: dict[str, RefineConfig] = {
    "default": RefineConfig(),
    "paper_preset": RefineConfig().with_preset("paper"),
    "remote_every_field": RefineConfig.model_validate({"backend": REMOTE_FULL}),
    "embedded_every_field": RefineConfig.model_validate({"backend": EMBEDDED_FULL}),
    # `refine --base-url` of a quickstart run: its embedded backend pointed at a server
    "embedded_source_to_server": RefineConfig().with_flags(load_scenario("quickstart").backend,
                                                           "http://127.0.0.1:9/v1", "m"),
    "flags_on_source": RefineConfig().with_flags(parse_scenario(scenario_dict()).backend, None, "other"),
}

# Computed by the code before the split (commit 17641f8), not by the code under test.
BUILTIN_HASHES = {
    "education-paper": "de711dabb00cb329",
    "education-quickstart": "0a402afb61ae59d6",
    "in-cultural": "0282ec45af673e66",
    "paper-v1": "ab60041d7b2f6480",
    "paper-v2": "317692ed97c8045f",
    "quickstart": "102cc4db3df2344b",
}
CASE_HASHES = {
    "direct_embedded": "f60ec7f410faa2d1",
    "education_mixed": "add595fcadfea4f4",
    "embedded_every_field": "9fa7d5506253cc0f",
    "embedded_minimal": "a43c36751193fda0",
    "gemini": "c766f26a6396b88a",
    "no_backend": "4fdf80089a774d8a",
    "remote_every_field": "488ba32d45ae9242",
    "roles_mixed": "b8bad7de51af4368",
    "tests_scenario_dict": "b9a15b176295e26d",
    "v0.1_fixture": "0544e9d82440ceb6",
}
REFINE_HASHES = {
    "default": "c37972deda72f483",
    "embedded_every_field": "ed74288ef986a785",
    "embedded_source_to_server": "f62f419e084a2176",
    "flags_on_source": "5c1287fedc417b62",
    # the paper preset changed on purpose (issue 34: k-means keeping the longest member, one extraction
    # per utterance, as the original refined): a directory made under the old preset is other work
    "paper_preset": "dafe5f05849bff88",
    "remote_every_field": "77b311d74aa1aff4",
}
# Bundled scenarios with `run` flags applied (--base-url turns the embedded model into a server's).
OVERRIDES: dict[str, tuple[str, RunOptions]] = {
    "quickstart_to_server": ("quickstart", RunOptions(base_url="http://127.0.0.1:9/v1", model="m")),
    "quickstart_flex": ("quickstart", RunOptions(service_tier="flex")),
    "education_quickstart_to_server": ("education-quickstart", RunOptions(base_url="http://127.0.0.1:9/v1")),
    "paper_v1_flex": ("paper-v1", RunOptions(service_tier="flex", model="gpt-4o")),
}
OVERRIDE_HASHES = {
    "quickstart_to_server": "37e8f0ebf42d1ec1",
    "quickstart_flex": "102cc4db3df2344b",
    "education_quickstart_to_server": "6f11aa9d6883c594",
    "paper_v1_flex": "0222bdf59e748dd8",
}


def test_every_builtin_scenario_is_pinned() -> None:
    assert set(builtin_scenarios()) == set(BUILTIN_HASHES)


@pytest.mark.parametrize("name", sorted(BUILTIN_HASHES))
def test_builtin_scenario_hash_is_unchanged(name: str) -> None:
    assert load_scenario(name).content_hash() == BUILTIN_HASHES[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_scenario_hash_is_unchanged(name: str) -> None:
    assert parse_scenario(CASES[name]).content_hash() == CASE_HASHES[name]


@pytest.mark.parametrize("name", sorted(REFINE_CASES))
def test_refine_hash_is_unchanged(name: str) -> None:
    assert REFINE_CASES[name].content_hash("source") == REFINE_HASHES[name]


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_hash_with_run_flags_is_unchanged(name: str) -> None:
    scenario, opts = OVERRIDES[name]
    assert apply_overrides(load_scenario(scenario), opts, scenario).content_hash() == OVERRIDE_HASHES[name]
