"""Conversation meta read into its models (agents/meta.py), and a run header into its scenario
(scenarios/loader.py `scenario_of`): every shape a log holds, and bad meta as one-line bad input."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from culturepark.agents.meta import ConversationMeta, LearnerMeta, conversation_meta, learner_meta, read_meta
from culturepark.engine.errors import InputError
from culturepark.engine.log import read_header
from culturepark.engine.records import RunHeader
from culturepark.scenarios.loader import scenario_of
from culturepark.scenarios.schema import EducationScenario, Scenario

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _end_metas(log: Path) -> list[dict]:
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    return [r["meta"] for r in records if r["type"] == "end"]


V01 = _end_metas(FIXTURES / "v0.1-run" / "log.jsonl")[0]
STUDY = _end_metas(FIXTURES / "meta-shapes" / "study" / "log.jsonl")[0]


@pytest.mark.parametrize(("meta", "kind"), [
    (V01, ConversationMeta),  # culturepark 0.1.0's conversation
    (STUDY, LearnerMeta),  # an education study's simulated learner
    ({**STUDY, "learners": "human", "learner": {"name": "Learner", "person": "a participant in a study",
                                                "reason": "wants to learn about China"}}, LearnerMeta),
    ({k: v for k, v in STUDY.items() if k != "learners"}, LearnerMeta),  # `learners` left out: simulated
    ({}, None),  # no end record yet, or withdrawn
    ({"stage": "extract", "source": "Chinese:Q27:0", "speaker": "delegate"}, None),  # a refinement's own call
    ({**V01, "added_by_a_later_version": 1}, ConversationMeta),
])
def test_each_shape_a_log_holds_reads_as_its_model_and_dumps_back_to_the_same_bytes(meta, kind):
    read = read_meta(meta, "c1")
    if kind is None:
        assert read is None
        return
    assert isinstance(read, kind)
    known = {k: v for k, v in meta.items() if k != "added_by_a_later_version"}
    if "learners" in known or kind is ConversationMeta:
        assert orjson.dumps(read.model_dump()) == orjson.dumps(known)  # what the plans write, key for key


def test_the_typed_views_answer_what_the_readers_ask():
    conv = conversation_meta(V01, "Chinese:Q27:0")
    assert (conv.culture, conv.item_id, conv.stance_code, conv.mode) == ("Chinese", "27", 1, "cross")
    assert conv.participant("delegate").name == "Wei" and conv.other("delegate").name == "Lily"
    assert conv.other("main_contact").name == "Wei"
    assert conv.question == V01["item_question"]
    older = conversation_meta({**V01, "item_question": "", "item_id": 27}, "c")
    assert older.item_id == "27" and older.question == f'What do you think about the statement "{V01["item_text"]}"?'
    learner = learner_meta(STUDY, "Chinese:learner000")
    assert learner.learners == "simulated" and learner.test[0].key == "wvs:27" and learner.test[0].hi == 4
    assert learner_meta({k: v for k, v in STUDY.items() if k != "learners"}).learners == "simulated"


@pytest.mark.parametrize(("reader", "meta", "says"), [
    (read_meta, {**V01, "stance_code": "strongly"}, "stance_code"),
    (read_meta, {**V01, "participants": {"delegate": V01["participants"]["delegate"]}}, "main_contact"),
    (read_meta, {**STUDY, "test": [{"key": "wvs:27"}]}, "question"),
    (conversation_meta, STUDY, "not a CulturePark conversation"),
    (conversation_meta, {}, "not a CulturePark conversation"),
    (learner_meta, V01, "not a learner's session"),
])
def test_meta_that_fits_no_model_is_bad_input_in_one_line_naming_the_conversation(reader, meta, says):
    with pytest.raises(InputError) as exc:
        reader(meta, "German:Q27:0")
    assert "German:Q27:0" in str(exc.value) and says in str(exc.value) and "\n" not in str(exc.value)


def test_a_header_gives_its_scenario_or_none():
    run = scenario_of(read_header(FIXTURES / "v0.1-run" / "log.jsonl"), "run")
    study = scenario_of(read_header(FIXTURES / "meta-shapes" / "study" / "log.jsonl"), "study")
    assert isinstance(run, Scenario) and run.content_hash() == "0544e9d82440ceb6"  # the hash v0.1 recorded
    assert isinstance(study, EducationScenario) and study.arms[1].name == "b"
    assert scenario_of(None, "x") is None
    assert scenario_of(RunHeader(stage="eval", details={"task": "hofstede"}), "x") is None
    with pytest.raises(InputError, match=r"^runs/a/log.jsonl header: name: Field required"):
        scenario_of(RunHeader(scenario={"kind": "education"}), "runs/a/log.jsonl")


def test_a_policy_reads_each_conversations_meta_once_a_replaced_one_again_and_holds_a_bounded_number():
    from culturepark.agents.meta import MetaReader

    reader = MetaReader(size=2)
    first = reader.conversation("a", V01)
    assert reader.conversation("a", V01) is first  # the same dict: not validated again
    changed = {**V01, "stance_text": "Agree"}
    assert reader.conversation("a", changed).stance_text == "Agree"  # another dict under the same id: read
    reader.learner("b", STUDY)
    reader.conversation("c", V01)
    assert len(reader._read) == 2 and "a" not in reader._read  # the oldest read went first
    with pytest.raises(InputError, match="not a learner's session"):
        reader.learner("c", V01)  # a cached read of the other kind is still refused
