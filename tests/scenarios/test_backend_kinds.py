"""Backends by kind: `provider` picks a remote HTTP API (`openai`, the default, or `gemini`) or the
embedded model (`local`); each kind takes only its own fields. Files and run headers written when
a backend was one flat model still load: the other kind's fields at their defaults are dropped,
and one set to something else is refused as an unknown field (exit 2, one line)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from culturepark import cli
from culturepark.scenarios.loader import ScenarioError, load_scenario, parse_scenario
from culturepark.scenarios.schema import (
    EMBEDDED_ONLY,
    REMOTE_ONLY,
    EmbeddedBackendConfig,
    RemoteBackendConfig,
    backend_config,
    flat_backend_dump,
)
from tests.conftest import scenario_dict


@pytest.mark.parametrize(("data", "kind", "provider"), [
    ({}, RemoteBackendConfig, "openai"),
    ({"model": "m"}, RemoteBackendConfig, "openai"),
    ({"provider": "gemini", "model": "g"}, RemoteBackendConfig, "gemini"),
    ({"provider": "local", "model": "gemma3-270m", "max_batch": 4}, EmbeddedBackendConfig, "local"),
])
def test_provider_picks_the_kind(data: dict[str, Any], kind: type, provider: str) -> None:
    backend = backend_config(data)
    assert type(backend) is kind and backend.provider == provider
    assert type(parse_scenario(scenario_dict(backend=data)).backend) is kind


def test_remote_defaults_fill_url_and_key_variable() -> None:
    gemini = backend_config({"provider": "gemini", "model": "g"})
    assert isinstance(gemini, RemoteBackendConfig)
    assert gemini.base_url is not None and "googleapis" in gemini.base_url
    assert gemini.api_key_env == "GEMINI_API_KEY"


@pytest.mark.parametrize("name", ["quickstart", "paper-v1", "education-quickstart", "education-paper"])
def test_a_flat_dump_of_every_field_loads_as_the_same_backend(name: str) -> None:
    """What run headers and old refine configs hold: the flat model's every field."""
    sc = load_scenario(name)
    backend = getattr(sc, "backend", None) or sc.learner_backend  # type: ignore[union-attr]
    flat = flat_backend_dump(backend.model_dump(mode="json"))
    assert set(REMOTE_ONLY) | set(EMBEDDED_ONLY) <= set(flat)
    assert backend_config(flat) == backend


@pytest.mark.parametrize(("backend", "field"), [
    ({"provider": "local", "model": "gemma3-270m", "base_url": "http://127.0.0.1:9/v1"}, "base_url"),
    ({"provider": "local", "model": "gemma3-270m", "service_tier": "flex"}, "service_tier"),
    ({"provider": "openai", "model": "m", "device": "cpu"}, "device"),
    ({"provider": "openai", "model": "m", "adapter": "/tmp/x"}, "adapter"),
    ({"provider": "gemini", "model": "m", "max_batch": 4}, "max_batch"),
])
def test_a_field_of_the_other_kind_is_refused_by_name(backend: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError, match=rf"^s: backend\.{field}: unknown field"):
        parse_scenario(scenario_dict(backend=backend), "s")


def test_the_cli_refuses_it_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(scenario_dict(backend={"provider": "local", "model": "gemma3-270m",
                                                          "api_key_env": "MY_KEY"})))
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "backend.api_key_env: unknown field" in err[0]


def test_base_url_turns_an_embedded_backend_into_a_servers() -> None:
    from culturepark.runs.prepare import RunOptions, apply_overrides

    sc = apply_overrides(load_scenario("quickstart"), RunOptions(base_url="http://127.0.0.1:9/v1",
                                                                  service_tier="flex"), "quickstart")
    backend = sc.backend  # type: ignore[union-attr]
    assert isinstance(backend, RemoteBackendConfig)
    assert (backend.api, backend.base_url, backend.service_tier) == ("completions", "http://127.0.0.1:9/v1", "flex")


def test_rendering_is_each_kinds_own() -> None:
    assert RemoteBackendConfig(api="completions").rendering == "transcript"
    assert RemoteBackendConfig().rendering == "chat"
    assert EmbeddedBackendConfig(provider="local", model="gemma3-270m").rendering == "transcript"
    assert EmbeddedBackendConfig(provider="local", model="gemma3-270m", template="gemma").rendering == "chat"
