import pytest

from culturepark.agents.cultures import CultureError
from culturepark.agents.meta import conversation_meta
from culturepark.agents.protocol import CultureParkPolicy, PlanError, build_plan
from culturepark.agents.wvs import WVSError
from culturepark.engine.errors import InputError
from culturepark.engine.scheduler import Turn
from culturepark.scenarios.loader import parse_scenario
from tests.conftest import scenario_dict


def _plan(tiny_data, **kw):
    return build_plan(parse_scenario(scenario_dict(**kw)), tiny_data)


def _play(policy, conv, n_max=100):
    turns, requests = [], []
    for _ in range(n_max):
        nxt = policy.next_turn(conv, turns)
        if nxt is None:
            break
        requests.append(nxt)
        turns.append(Turn(len(turns), nxt.speaker, nxt.role, f"reply {len(turns)} from {nxt.speaker}"))
    return turns, requests


def test_v1_has_14_alternating_turns_and_the_last_prompt_goes_to_the_main_contact(tiny_data):
    plan = _plan(tiny_data, version="v1")
    conv = next(plan.conversations())
    turns, requests = _play(CultureParkPolicy(plan.scenario), conv)
    assert len(turns) == 14
    assert [t.role for t in turns] == ["delegate", "main_contact"] * 7
    assert [t.speaker for t in turns[:2]] == ["Wei", "Lily"]
    last_user = requests[-1].request.messages[-1]["content"]
    assert "anything in your culture you want to introduce to Wei" in last_user
    first = requests[0].request.messages[-1]["content"]
    assert "make my parents proud" in first and "opinions and reasons" in first
    assert "Do you agree with Lily?" in requests[2].request.messages[-1]["content"]


def test_each_agent_sees_only_its_own_moderator_prompts(tiny_data):
    plan = _plan(tiny_data, version="v1")
    conv = next(plan.conversations())
    _, requests = _play(CultureParkPolicy(plan.scenario), conv)
    contact_view = requests[3].request.messages  # Lily's second turn
    text = " ".join(m["content"] for m in contact_view)
    assert "Do you agree with Lily" not in text  # Wei's private prompt
    assert [m["role"] for m in contact_view] == ["system", "user", "assistant", "user"]
    assert "reply 0 from Wei" in contact_view[1]["content"] and contact_view[2]["content"] == "reply 1 from Lily"
    system = contact_view[0]["content"]
    assert "You are Lily" in system and "her own American culture" in system
    assert conv.meta["stance_text"] in system


def test_v2_opens_once_then_free_turns(tiny_data):
    plan = _plan(tiny_data, version="v2", turns=6)
    conv = next(plan.conversations())
    turns, requests = _play(CultureParkPolicy(plan.scenario), conv)
    assert len(turns) == 6
    assert "(Moderator)" in requests[0].request.messages[-1]["content"]
    assert all("(Moderator)" not in r.request.messages[-1]["content"] for r in requests[1:])


def test_transcript_rendering_for_base_models_stops_at_the_other_speaker(tiny_data):
    plan = _plan(tiny_data, backend={"provider": "openai", "model": "base", "api": "completions",
                                     "base_url": "http://127.0.0.1:9/v1"})
    conv = next(plan.conversations())
    policy = CultureParkPolicy(plan.scenario)
    _turns, requests = _play(policy, conv)
    req = requests[1].request
    assert req.messages is None and req.prompt.endswith("\nLily:")
    assert "Wei: reply 0 from Wei" in req.prompt and "\n" in req.stop and "Wei:" in req.stop


def test_in_cultural_pairs_two_delegates_sharing_the_stance(tiny_data):
    plan = _plan(tiny_data, mode="in")
    conv = next(plan.conversations())
    assert conv.meta["participants"]["main_contact"]["name"] == "Lili"
    _, requests = _play(CultureParkPolicy(plan.scenario), conv)
    assert "shares this view" in requests[0].request.messages[0]["content"]


def test_custom_moderator_script(tiny_data):
    script = {"rounds": [{"delegate": "Tell {contact} about {item}", "main_contact": "Ask {delegate} why"},
                         {"first": "main_contact", "delegate": "Answer", "main_contact": "Summarise"}]}
    plan = _plan(tiny_data, version=script)
    turns, requests = _play(CultureParkPolicy(plan.scenario), next(plan.conversations()))
    assert [t.role for t in turns] == ["delegate", "main_contact", "main_contact", "delegate"]
    assert "Tell Lily about One of my main goals" in requests[0].request.messages[-1]["content"]


def test_echo_replies_are_rejected(tiny_data):
    plan = _plan(tiny_data)
    conv = next(plan.conversations())
    nxt = CultureParkPolicy(plan.scenario).next_turn(conv, [Turn(0, "Wei", "delegate", "Family matters.")])
    assert nxt.validate("family matters") == "echo_reply"
    assert nxt.validate("I see it differently.") is None


def test_never_asked_items_are_skipped_with_a_notice(tiny_data):
    plan = _plan(tiny_data, items=["27", "132"])
    ids = [c.id for c in plan.conversations()]
    assert "Chinese:Q132:0" not in ids and "German:Q132:0" in ids
    assert any("Q132 was never asked in China" in n for n in plan.notices)
    assert plan.size == len(ids) == 3


def test_a_plan_walked_for_some_ids_gives_exactly_those_specs_unchanged(tiny_data):
    """What a Ray shard's feeder relies on: skipping ids changes no other spec (seq, stance, meta)."""
    plan = _plan(tiny_data, conversations_per_item=7, seed=3)
    every = list(plan.conversations())
    odd = list(plan.conversations(keep=lambda conv_id: hash(conv_id) % 2 == 1))
    assert 0 < len(odd) < len(every)
    assert odd == [c for c in every if hash(c.id) % 2 == 1]


def test_same_seed_same_personas_other_seed_differs(tiny_data):
    a = [c.meta["stance_code"] for c in _plan(tiny_data, conversations_per_item=20, seed=5).conversations()]
    b = [c.meta["stance_code"] for c in _plan(tiny_data, conversations_per_item=20, seed=5).conversations()]
    c = [c.meta["stance_code"] for c in _plan(tiny_data, conversations_per_item=20, seed=6).conversations()]
    assert a == b and a != c


def test_meta_carries_provenance(tiny_data):
    meta = next(_plan(tiny_data).conversations()).meta
    for key in ("culture", "country", "mode", "version", "item_id", "item_text", "stance_code",
                "stance_text", "stance_policy", "participants"):
        assert key in meta
    assert meta["participants"]["delegate"]["model"] == "sim-model"


def test_unknown_culture_and_item_are_input_errors_of_their_own_type(tiny_data):
    with pytest.raises(CultureError, match="unknown culture 'Martian'") as culture:
        _plan(tiny_data, cultures=["Martian"])
    with pytest.raises((PlanError, WVSError), match="999") as item:
        _plan(tiny_data, items=["999"])
    assert isinstance(culture.value, InputError) and isinstance(item.value, InputError)  # exit 2 at the CLI


def test_user_culture_rows_and_country_files(tiny_data):
    table = [{"name": "Bavarian", "country_file": "Germany", "names": ["Sepp"], "adjective": "Bavarian"}]
    plan = _plan(tiny_data, cultures=["Bavarian", "United_States"], culture_table=table)
    names = {c.meta["participants"]["delegate"]["name"] for c in plan.conversations()}
    assert names == {"Sepp", "Lily"}


def test_v1_with_the_delegate_answering_the_introduction_has_15_turns(tiny_data):
    plan = _plan(tiny_data, version="v1", delegate_answers_intro=True)
    turns, requests = _play(CultureParkPolicy(plan.scenario), next(plan.conversations()))
    assert len(turns) == 15 and [t.role for t in turns] == ["delegate", "main_contact"] * 7 + ["delegate"]
    assert "anything in your culture you want to introduce to Wei" in requests[13].request.messages[-1]["content"]
    assert requests[14].request.messages[-1]["content"].endswith("(Moderator) What do you think of what Lily introduced?")
    assert plan.scenario.content_hash() != _plan(tiny_data, version="v1").scenario.content_hash()
    for bad in ({"version": "v2"}, {"version": "v1", "rounds": 5}):
        with pytest.raises(InputError, match="delegate_answers_intro"):
            _plan(tiny_data, delegate_answers_intro=True, **bad)


def test_in_cultural_v1_uses_the_originals_in_cultural_prompts(tiny_data):
    plan = _plan(tiny_data, mode="in", version="v1-in")
    turns, requests = _play(CultureParkPolicy(plan.scenario), next(plan.conversations()))
    prompts = [r.request.messages[-1]["content"] for r in requests]
    assert len(turns) == 14 and not any("introduce" in p for p in prompts)
    assert "more ideas from your culture" in prompts[2] and "related to what you have discussed" in prompts[6]
    assert not any("cross-cultural v1 prompts" in n for n in plan.notices)
    assert any("version: v1-in" in n for n in _plan(tiny_data, mode="in", version="v1").notices)


def test_the_delegate_is_asked_again_in_its_own_view_of_the_conversation(tiny_data):
    from culturepark.agents.views import SpokenTurn

    plan = _plan(tiny_data, version="v1")
    conv = next(plan.conversations())
    policy = CultureParkPolicy(plan.scenario)
    turns, requests = _play(policy, conv)
    spoken = [SpokenTurn(t.role, t.text) for t in turns]
    asked = policy.ask_delegate(conversation_meta(conv.meta), spoken, "Which option?", 16, 0.0, seed=0)
    own_last = requests[-2].request.messages  # the delegate's last turn request, then its reply
    assert asked.messages[: len(own_last)] == own_last  # the same view, extended
    assert asked.messages[-1]["content"].endswith("(Moderator) Which option?") and asked.seed == 0
    before = policy.ask_delegate(conversation_meta(conv.meta), [], "Which option?", 16, 0.0)
    assert [m["role"] for m in before.messages] == ["system", "user"]
    assert before.messages[0] == asked.messages[0]  # the persona and stance, unchanged


@pytest.mark.parametrize("mode", ["cross", "in"])
def test_a_base_model_transcript_opens_with_the_delegate_giving_its_seeded_answer(tiny_data, mode):
    """Both agents' transcripts begin with the interview's first exchange, in which the delegate
    states its WVS answer in its own words (a small base model continues what speakers said);
    chat models keep the stance as a sentence in their system message."""
    data = scenario_dict(version="v2", turns=4, mode=mode)
    data["backend"].update({"provider": "openai", "api": "completions"})
    plan = build_plan(parse_scenario(data), tiny_data)
    policy = CultureParkPolicy(plan.scenario)
    conv = next(iter(plan.conversations()))
    meta = conv.meta
    delegate = meta["participants"]["delegate"]["name"]
    answer = f'{delegate}: My answer is "{meta["stance_text"]}".'
    turns: list[Turn] = []
    while (nxt := policy.next_turn(conv, turns)) is not None:
        prompt = nxt.request.prompt
        assert prompt is not None and answer in prompt.split("\n")[:4]
        if turns:
            assert prompt.index(answer) < prompt.index("Turn 0.")  # before the conversation itself
        turns.append(Turn(len(turns), nxt.speaker, nxt.role, f"Turn {len(turns)}."))
    data["backend"]["api"] = "chat"
    chat = CultureParkPolicy(parse_scenario(data)).next_turn(conv, [])
    assert chat is not None and chat.request.messages is not None
    assert f'answered "{meta["stance_text"]}"' in chat.request.messages[0]["content"]


@pytest.mark.parametrize("backend", [None, {"provider": "openai", "model": "base", "api": "completions",
                                            "base_url": "http://127.0.0.1:9/v1"}])
def test_a_control_run_draws_the_same_respondents_but_tells_the_delegate_no_answer(tiny_data, backend):
    kw = {"backend": backend} if backend else {}
    sample, control = (_plan(tiny_data, stance_policy=p, conversations_per_item=3, **kw) for p in ("sample", "control"))
    convs = list(control.conversations())
    assert [c.meta["stance_code"] for c in sample.conversations()] == [c.meta["stance_code"] for c in convs]
    for conv in convs:
        meta = conversation_meta(conv.meta)
        assert meta.stance_policy == "control"
        _turns, requests = _play(CultureParkPolicy(control.scenario), conv)
        delegate = [r.request for r in requests if r.role == "delegate"]
        seen = " ".join(r.prompt or " ".join(m["content"] for m in r.messages) for r in delegate)
        assert meta.participants.delegate.person in seen  # persona and culture stay
        assert "answered" not in seen and "My answer is" not in seen and "consistent with this answer" not in seen
