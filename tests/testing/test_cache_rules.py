"""The prompt cache on both sides: the simulator follows OpenAI's published rules, and the engine's
`prompt_cache_key`s keep each key under the per-key rate beyond which those rules say requests miss."""
from culturepark.engine.prompt_cache import CacheKeyShards
from culturepark.testing.cache_rules import PromptCacheSim


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _history(n_words: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": "persona " * 20}, {"role": "user", "content": "word " * n_words}]


def test_sim_caches_from_1024_tokens_in_128_token_steps_of_an_earlier_prefix():
    cache = PromptCacheSim(clock=Clock())
    short = [{"role": "user", "content": "x" * 4000}]  # ~1000 tokens: below the minimum
    assert cache.cached_tokens(short, None, None, 1000) == 0
    assert cache.cached_tokens(short, None, None, 1000) == 0
    first = _history(1200)  # ~1540 tokens
    assert cache.cached_tokens(first, None, None, 1540) == 0  # cold
    longer = [*first[:1], {"role": "user", "content": "word " * 1200}, {"role": "assistant", "content": "yes " * 300}]
    cached = cache.cached_tokens(longer, None, None, 1900)
    assert cached >= 1024 and (cached - 1024) % 128 == 0 and cached <= 1540  # the earlier request's prefix
    edited = [{"role": "system", "content": "PERSONA " * 20}, *longer[1:]]  # first bytes differ: nothing shared
    assert cache.cached_tokens(edited, None, None, 1900) == 0
    assert cache.cached_tokens(longer, None, "another-key", 1900) == 0  # another key, another cache


def test_sim_cache_expires_and_spills_past_the_per_route_rate():
    clock = Clock()
    cache = PromptCacheSim(key_rpm=15, ttl_s=300, clock=clock)
    prompt = "shared instructions " * 400  # ~2000 tokens
    hits = [cache.cached_tokens(None, prompt + f" q{i}", "k", 2000) > 0 for i in range(20)]
    assert hits[0] is False and all(hits[1:15])  # 15 requests a minute to one route
    assert not any(hits[15:]) and cache.overflow == 5  # the rest spill to cold machines
    clock.now += 61
    assert cache.cached_tokens(None, prompt + " again", "k", 2000) > 0  # the window moved on
    clock.now += 301
    assert cache.cached_tokens(None, prompt + " late", "k", 2000) == 0  # not used for 5 minutes: evicted


def test_cache_key_shards_keep_every_key_under_its_rate_in_every_minute_window():
    clock = Clock()
    shards = CacheKeyShards(rpm=15, clock=clock)
    sent: list[tuple[float, str, str]] = []  # (time, key, conversation)
    for second in range(180):  # 3 minutes, a new conversation every 2 s, each sending 3 requests then ending
        clock.now = 1000.0 + second
        if second % 2 == 0:
            conv = f"c{second}"
            for _ in range(3):
                sent.append((clock.now, shards.key("Chinese|27|delegate", conv), conv))
            shards.release(conv)
    for t, key, _conv in sent:
        window = [k for (u, k, _) in sent if t - 60 < u <= t and k == key]
        assert len(window) <= 15 + 2, (t, key)  # a conversation placed at 14 sends its last two too
    by_conv: dict[str, set[str]] = {}
    for _, key, conv in sent:
        by_conv.setdefault(conv, set()).add(key)
    assert all(len(keys) == 1 for keys in by_conv.values())  # a conversation keeps its shard
    assert len({k for _, k, _ in sent}) >= 6  # 90 requests a minute over keys of 15
    assert shards._shards == {}  # ended conversations are forgotten
