"""A run's recorded cost is what the provider bills (the simulator's own usage records at the
scenario's rates), split by what was billed; a pilot of a few conversations projects the rest."""
import orjson
import pytest
import yaml

from culturepark.engine.pricing import Price
from culturepark.runs.in_process import run_async
from culturepark.runs.pilot import ESTIMATE_NAME, pilot_async
from culturepark.runs.prepare import RunOptions
from tests.conftest import scenario_dict, sim_stats_async

PRICE = {"input_per_1m": 2.0, "output_per_1m": 8.0, "cached_input_per_1m": 0.5}
SIM = {"seed": 2, "prompt_cache": True, "prompt_cache_min_tokens": 256, "min_reply_tokens": 60,
       "max_reply_tokens": 90}


def _scenario(tmp_path, url, name, **backend):
    data = scenario_dict(items=["27", "31", "158"], conversations_per_item=4, turns=10, concurrency=6)
    data["sampling"]["max_tokens"] = 120
    data["backend"].update(base_url=url, model="priced", price=PRICE, prompt_cache={"key": True}, **backend)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def _bill(url):
    """The simulator's own record of what it answered, per tier, priced at the scenario's rates."""
    by_tier = (await sim_stats_async(url))["usage_by_tier"]
    cost = sum(Price(2.0, 8.0, 0.5).cost(t["prompt_tokens"], t["completion_tokens"], t["cached_tokens"], tier)
               for tier, t in by_tier.items())
    return cost, sum(t["cached_tokens"] for t in by_tier.values())


@pytest.mark.parametrize("tier", ["standard", "flex"])
async def test_recorded_cost_matches_the_providers_bill_and_its_split(sim, tmp_path, tiny_data, tier):
    url = await sim(**SIM, flex_unavailable_rate=0.2 if tier == "flex" else 0.0)
    result = await run_async(_scenario(tmp_path, url, tier, service_tier=tier, flex_fallback_after=2),
                             RunOptions(out=tmp_path / tier, data_dir=tiny_data))
    s = result.summary
    billed, cached = await _bill(url)
    assert s.done == 24 and sum(s.turns_by_tier.values()) == 240 and s.turns_by_tier[tier] > 200
    assert s.cost_usd == pytest.approx(billed, rel=0.01)
    assert s.tokens.cached_prompt == cached > 0
    split = s.cost_split_usd
    assert split is not None and split.uncached_input + split.cached_input + split.output == pytest.approx(s.cost_usd)
    assert 0 < s.cache.hit_rate < 1 and s.cache.hit_rate_by_turn[0] == 0.0  # a first turn has nothing to reuse
    assert s.cache.hit_rate_by_turn[9] > s.cache.hit_rate_by_turn[3]  # history grows, so do hits


async def test_a_pilot_projects_tokens_cache_and_cost_within_ten_percent(sim, tmp_path, tiny_data):
    estimate = await pilot_async(_scenario(tmp_path, await sim(**SIM), "p"),
                                 RunOptions(out=tmp_path / "pilot", data_dir=tiny_data), 6)
    full = (await run_async(_scenario(tmp_path, await sim(**SIM), "f"),
                            RunOptions(out=tmp_path / "full", data_dir=tiny_data))).summary
    p = estimate["projected"]
    assert estimate["pilot"]["conversations"] == 6 and estimate["pilot"]["every"] == 4
    assert p["conversations"] == full.conversations == 24 and p["turns"] == full.turns
    assert p["tokens"]["prompt"] == pytest.approx(full.tokens.prompt, rel=0.10)
    assert p["tokens"]["cached_prompt"] == pytest.approx(full.tokens.cached_prompt, rel=0.10)
    assert p["cost_usd"] == pytest.approx(full.cost_usd, rel=0.10)
    by_tier = p["cost_usd_by_tier"]
    assert by_tier["flex"] == by_tier["batch"] == pytest.approx(by_tier["standard"] / 2)
    assert by_tier["standard_uncached"] > by_tier["standard"]
    assert orjson.loads((tmp_path / "pilot" / ESTIMATE_NAME).read_bytes()) == estimate


async def test_the_progress_line_shows_the_cached_share_once_there_is_one(sim, tmp_path, tiny_data):
    import io

    from culturepark.console import progress_lines

    lines = io.StringIO()
    await run_async(_scenario(tmp_path, await sim(**SIM), "shown"), RunOptions(out=tmp_path / "shown",
                                                                               data_dir=tiny_data),
                    progress=lambda sch, total, done: progress_lines(sch, total, done, lines, every_s=3600))
    last = lines.getvalue().splitlines()[-1]
    assert last.startswith("progress: 24/24 conversations (24 done, 0 failed this session), 240 turns, ")
    share = int(last.split(" turns, ")[1].split("%")[0])
    assert 0 < share < 100 and "of prompt tokens cached" in last
    plain = io.StringIO()
    await run_async(_scenario(tmp_path, await sim(seed=2), "plain"), RunOptions(out=tmp_path / "plain",
                                                                               data_dir=tiny_data),
                    progress=lambda sch, total, done: progress_lines(sch, total, done, plain, every_s=3600))
    assert "cached" not in plain.getvalue()  # no provider cache, no figure


async def test_a_pilot_on_anthropic_projects_its_cache_writes_at_their_rate(sim, tmp_path, tiny_data):
    """A pilot of every conversation projects exactly what it paid: cache writes at 1.25 times input, as
    billed, not at the input rate (which under-projected by the 0.25x write surcharge)."""
    url = await sim(**SIM)
    sc = _scenario(tmp_path, url, "a")
    data = yaml.safe_load(sc.read_text())
    data["backend"] = {"provider": "anthropic", "model": "sim-model", "base_url": url,
                       "api_key_env": "ANTHROPIC_API_KEY", "price": {"input_per_1m": 3.0, "output_per_1m": 15.0}}
    sc.write_text(yaml.safe_dump(data))
    estimate = await pilot_async(sc, RunOptions(out=tmp_path / "pilot", data_dir=tiny_data), 24)
    p, pilot = estimate["projected"], estimate["pilot"]
    assert pilot["conversations"] == 24 and pilot["every"] == 1
    assert p["tokens"]["cache_write_prompt"] > 0 and p["tokens"]["cached_prompt"] > 0
    bill = (await sim_stats_async(url))["bill_usd"]
    assert p["cost_usd"] == pytest.approx(pilot["cost_usd"], rel=1e-4) == pytest.approx(bill, rel=0.01)
    assert p["cost_usd_by_tier"]["batch"] == pytest.approx(p["cost_usd"] / 2, rel=1e-4)


def test_the_cost_bench_prices_the_simulators_cache_writes():
    from culturepark.benchmarks.perf.cost import _billed

    price = Price(3.0, 15.0, 0.3, cache_write_per_1m=3.75)
    stats = {"usage_by_tier": {"standard": {"prompt_tokens": 1_000_000, "completion_tokens": 0, "cached_tokens": 0,
                                            "cache_write_tokens": 1_000_000},
                               "batch": {"prompt_tokens": 1_000_000, "completion_tokens": 0, "cached_tokens": 0}}}
    assert _billed(stats, price) == pytest.approx(3.75 + 1.5)  # written at 1.25x input; an old record has none
