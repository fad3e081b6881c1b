"""A real `culturepark run` against the simulator's Anthropic mode: `--model anthropic:sim-model`
switches the scenario's backend to the Messages API, every conversation completes, the cached share
of the prompt rises turn by turn (the breakpoints at the stable prefix), and the recorded cost is
the simulator's own bill in dollars (cache writes at 1.25, reads at 0.1 times input)."""
import json

import orjson
import pytest
import yaml

from tests.conftest import run_cli, scenario_dict, sim_stats


def test_a_run_on_anthropics_api_completes_reads_its_cache_more_each_turn_and_costs_the_bill(
        sim_process, tmp_path, tiny_data):
    url = sim_process("--reply-tokens", "80", "120")
    data = scenario_dict(turns=10, items=["27", "158"], conversations_per_item=2)
    data["sampling"]["max_tokens"] = 150
    data["backend"]["price"] = {"input_per_1m": 3.0, "output_per_1m": 15.0}  # the simulator bills at these
    sc = tmp_path / "a.yaml"
    sc.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    res = run_cli("run", str(sc), "--model", "anthropic:sim-model", "--base-url", url, "--out", str(out),
                  "--data-dir", str(tiny_data), "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads((out / "summary.json").read_text())
    header = orjson.loads((out / "log.jsonl").read_bytes().split(b"\n", 1)[0])
    assert {b["kind"] for b in header["backends"].values()} == {"anthropic"}
    assert s["done"] == s["conversations"] == 8 and s["failed"] == 0 and s["turns"] == 80
    by_turn = {int(k): v for k, v in s["cache"]["hit_rate_by_turn"].items()}
    # nothing under 1,024 tokens is cached (the first turns); from there the history is read from the cache
    assert by_turn[0] == 0.0 and 0 < by_turn[7] < by_turn[8] < by_turn[9]
    assert s["tokens"]["cache_write_prompt"] > 0 and s["tokens"]["cached_prompt"] > 0
    stats = sim_stats(url)
    assert stats["by_path"] == {"messages": 80}
    assert s["cost_usd"] == pytest.approx(stats["bill_usd"], rel=0.01)
    split = s["cost_split_usd"]
    assert sum(split.values()) == pytest.approx(s["cost_usd"], rel=1e-4) and split["cache_write_input"] > 0


@pytest.mark.parametrize("model,base_url,expected", [
    ("anthropic:claude-haiku-4-5", None, ("anthropic", "claude-haiku-4-5", "https://api.anthropic.com/v1",
                                          "ANTHROPIC_API_KEY")),
    ("anthropic:sim-model", "http://127.0.0.1:9/v1", ("anthropic", "sim-model", "http://127.0.0.1:9/v1",
                                                      "ANTHROPIC_API_KEY")),
    ("gpt-4o", None, ("openai", "gpt-4o", "https://api.openai.com/v1", "OPENAI_API_KEY")),  # a plain name
    ("some:name", None, ("openai", "some:name", "https://api.openai.com/v1", "OPENAI_API_KEY")),  # no provider
])
def test_model_flag_with_a_provider_moves_the_backend_there(model, base_url, expected):
    from culturepark.runs.prepare import RunOptions, apply_overrides
    from culturepark.scenarios.loader import parse_scenario

    data = scenario_dict()
    del data["backend"]["base_url"]
    scenario = apply_overrides(parse_scenario(data), RunOptions(model=model, base_url=base_url), "t")
    b = scenario.backend
    assert (b.provider, b.model, b.base_url, b.api_key_env) == expected  # type: ignore[union-attr]
