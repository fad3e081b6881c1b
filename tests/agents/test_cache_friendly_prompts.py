"""Every agent's requests are append-only across its turns, so a provider's prompt cache can serve
the whole earlier request: request n+1 of an agent begins with request n, byte for byte."""
import pytest

from culturepark.agents.protocol import CultureParkPolicy, build_plan
from culturepark.engine.scheduler import Turn
from culturepark.scenarios.loader import parse_scenario
from tests.conftest import scenario_dict

CASES = [  # (version, provider/api → rendering, extra scenario fields)
    ("v1", {"provider": "openai", "api": "chat"}, {"turns": None}),
    ("v1", {"provider": "openai", "api": "completions"}, {"turns": None}),
    ("v2", {"provider": "openai", "api": "chat"}, {"turns": 14}),
    ("v2", {"provider": "openai", "api": "completions"}, {"turns": 14}),
    ("v1-in", {"provider": "openai", "api": "chat"}, {"turns": None, "mode": "in"}),
]


@pytest.mark.parametrize(("version", "backend", "extra"), CASES)
def test_each_agents_next_request_begins_with_its_previous_one(tiny_data, version, backend, extra):
    data = scenario_dict(version=version, **{k: v for k, v in extra.items() if v is not None})
    if extra.get("turns", 0) is None:
        data.pop("turns", None)
    data["backend"].update(backend)
    plan = build_plan(parse_scenario(data), tiny_data)
    policy = CultureParkPolicy(plan.scenario)
    checked = 0
    for conv in plan.conversations():
        turns: list[Turn] = []
        last: dict[str, object] = {}
        while (nxt := policy.next_turn(conv, turns)) is not None:
            req = nxt.request
            rendered = req.messages if req.messages is not None else req.prompt
            before = last.get(nxt.role)
            if before is not None:
                if isinstance(rendered, list):
                    assert rendered[: len(before)] == before, (conv.id, len(turns))  # type: ignore[arg-type]
                else:
                    assert rendered.startswith(before), (conv.id, len(turns))  # type: ignore[union-attr]
                checked += 1
            assert req.cache_key == f"{conv.meta['culture']}|{conv.meta['item_id']}|{nxt.role}"
            assert req.no_repeat_ngram_size == (8 if req.prompt is not None else None)  # transcripts only
            last[nxt.role] = rendered
            turns.append(Turn(len(turns), nxt.speaker, nxt.role, f"Reply {len(turns)}: I think so, {nxt.speaker}."))
    assert checked >= 10
