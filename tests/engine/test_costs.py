"""What a turn costs: cached prompt tokens read from every server's usage block, priced at the
cached-input rate, at the rates of the tier that served it; flex refusals retried, then standard."""
import pytest

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend, _parse_usage
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import RequestFailed
from culturepark.engine.pricing import Price, Rates
from culturepark.engine.records import Usage
from culturepark.engine.retry import RetryPolicy

USAGE_BLOCKS = [  # (server, usage block as sent, expected usage)
    ("openai", {"prompt_tokens": 2000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 1920}},
     Usage(2000, 50, 1920)),
    ("gemini openai endpoint", {"prompt_tokens": 1469, "completion_tokens": 7,
                                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": None}},
     Usage(1469, 7, 1024)),
    ("vllm without details", {"prompt_tokens": 900, "completion_tokens": 9, "prompt_tokens_details": None},
     Usage(900, 9, 0)),
    ("gemini native names", {"prompt_tokens": 3000, "completion_tokens": 1, "cachedContentTokenCount": 2048},
     Usage(3000, 1, 2048)),
    ("llama.cpp timings", {"prompt_tokens": 500, "completion_tokens": 20, "_timings": {"cache_n": 480}},
     Usage(500, 20, 480)),
    ("cached more than the prompt", {"prompt_tokens": 10, "completion_tokens": 2,
                                     "prompt_tokens_details": {"cached_tokens": 99}}, Usage(10, 2, 10)),
    ("cached not a count", {"prompt_tokens": 10, "completion_tokens": 2,
                            "prompt_tokens_details": {"cached_tokens": -5}}, Usage(10, 2, 0)),
    ("cached a boolean", {"prompt_tokens": 10, "completion_tokens": 2,
                          "prompt_tokens_details": {"cached_tokens": True}}, Usage(10, 2, 0)),
]


@pytest.mark.parametrize(("server", "block", "expected"), USAGE_BLOCKS, ids=[c[0] for c in USAGE_BLOCKS])
def test_cached_tokens_are_read_from_every_servers_usage_block(server, block, expected):
    usage, reported = _parse_usage(block)
    assert reported and usage == expected


def test_a_turn_is_priced_by_its_uncached_cached_and_output_tokens_at_its_tier():
    price = Price(2.00, 8.00, 0.50)
    split = price.split(1_000_000, 100_000, 600_000)
    assert (split.uncached_input, split.cached_input, split.output) == pytest.approx((0.80, 0.30, 0.80))
    assert price.cost(1_000_000, 100_000, 600_000, "flex") == pytest.approx(split.total / 2)
    assert price.cost(1_000_000, 100_000, 600_000, "batch") == pytest.approx(split.total / 2)
    no_discount = Price(0.50, 1.50)  # gpt-3.5-turbo: cached input billed as input
    assert no_discount.cost(1000, 0, 1000) == no_discount.cost(1000, 0, 0)
    own = Price(1.0, 1.0, flex=Rates(0.6, 0.6, 0.1))
    assert own.cost(1_000_000, 0, 500_000, "flex") == pytest.approx(0.3 + 0.05)
    assert Price.from_description(own.describe()) == Price(1.0, 1.0, None, Rates(0.6, 0.6, 0.1), Rates(0.5, 0.5))
    with pytest.raises(ValueError, match="unknown service tier"):
        price.cost(1, 1, 0, "priority")


REQ = Request(messages=[{"role": "user", "content": "hello"}], max_tokens=16)


async def _flex_endpoint(url, fallback_after, attempts=4):
    backend = OpenAIHTTPBackend(url, "sim-model", service_tier="flex", price=Price(1.0, 1.0))
    return Endpoint(backend, retry=RetryPolicy(attempts, 0.001, 0.002), tier_fallback_after=fallback_after)


async def test_flex_refusals_are_retried_without_pausing_and_then_served_at_standard(sim):
    url = await sim(flex_unavailable_rate=1.0)
    ep = await _flex_endpoint(url, fallback_after=2)
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert completion.tier is None and completion.attempts == 3  # two refusals, then standard
    assert ep.stats.tier_unavailable == 2 and ep.stats.tier_fallbacks == 1 and ep.stats.rate_limited == 0


async def test_flex_without_fallback_keeps_flex_and_fails_only_after_its_attempts(sim):
    url = await sim(flex_unavailable_rate=1.0)
    ep = await _flex_endpoint(url, fallback_after=None, attempts=3)
    with pytest.raises(RequestFailed, match="flex_unavailable"):
        await ep.complete(REQ)
    await ep.aclose()
    url = await sim(flex_unavailable_rate=0.0)
    ep = await _flex_endpoint(url, fallback_after=None)
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert completion.tier == "flex"


async def test_a_429_that_is_not_about_flex_capacity_still_pauses_the_endpoint(sim):
    from culturepark.testing.simulator import Fault

    url = await sim(faults=[Fault(kind="status", status=429, times=1, retry_after=0.01)])
    ep = await _flex_endpoint(url, fallback_after=1)
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert completion.tier == "flex" and ep.stats.rate_limited == 1 and ep.stats.tier_fallbacks == 0
