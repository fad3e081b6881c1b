"""The meta a conversation carries, as models: what a plan writes into each `ConversationSpec`
and what the engine copies, untouched, into the conversation's end record and its export.

The engine keeps meta a plain dict (it knows nothing about cultures); everything above it
reads meta through `read_meta` and gets one of these models, so a renamed or missing key is
one error here, not a `KeyError` (or a silent `None`) in whichever reader meets it first.

Two kinds exist, told apart by `study`: a CulturePark conversation (`ConversationMeta`, also
the direct baseline's, which shares the plan) and an education study's learner session
(`LearnerMeta`, `"study": "education"`). Fields are declared in the order the plans have always
written them, and plans build meta through these models (`model_dump()`), so logs written
before this module and after it carry the same bytes (tests/agents/test_meta_exports.py).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from culturepark.engine.errors import InputError
from culturepark.scenarios.loader import format_validation_error

Role = Literal["delegate", "main_contact"]


class _Meta(BaseModel):
    # extra="ignore": a key written by a later version is no reason to refuse an old reader;
    # numbers to text: an item id written as 27 is the item "27" (WVS ids are text everywhere)
    model_config = ConfigDict(frozen=True, extra="ignore", coerce_numbers_to_str=True)


class Participant(_Meta):
    """One side of a CulturePark conversation, as the prompts describe them."""

    name: str
    culture: str
    person: str  # "a Chinese person"
    culture_phrase: str  # "Chinese culture"
    possessive: str  # "his" / "her" / "their"
    model: str | None = None  # the model that spoke for them


class Participants(_Meta):
    delegate: Participant
    main_contact: Participant


class ConversationMeta(_Meta):
    """A CulturePark conversation: whose culture, which WVS item, which real respondent's answer."""

    culture: str
    country: str
    country_file: str
    mode: Literal["cross", "in"]
    version: str  # the protocol's script: v1, v2, v1-in, custom, or direct
    item_id: str
    item_topic: str = ""
    item_text: str
    item_question: str = ""
    item_options: str = ""
    stance_code: int
    stance_text: str
    stance_policy: str
    stance_respondents: int
    participants: Participants

    def participant(self, role: str) -> Participant:
        return self.participants.delegate if role == "delegate" else self.participants.main_contact

    def other(self, role: str) -> Participant:
        """The one `role` talks to."""
        return self.participant("main_contact" if role == "delegate" else "delegate")

    @property
    def question(self) -> str:
        """The item as a question (older plans wrote no `item_question`: built from the statement)."""
        return self.item_question or f'What do you think about the statement "{self.item_text}"?'


class Learner(_Meta):
    name: str
    person: str
    reason: str  # "wants to learn about China": follows the learner's name in the prompts


class Tutor(_Meta):
    name: str
    person: str
    culture_phrase: str
    possessive: str
    country: str


class SurveyItem(_Meta):
    """A test or questionnaire item: answered with a whole number from `lo` to `hi` (the free-text
    question has no scale: `lo` = `hi` = 0)."""

    key: str  # vsm13:N, wvs:N, likert:N or free
    question: str
    scale: str = ""
    lo: int = 0
    hi: int = 0


class LearnerMeta(_Meta):
    """One learner's session of an education study (simulated, or a human in the web app)."""

    study: Literal["education"] = "education"
    learners: Literal["simulated", "human"] = "simulated"
    culture: str
    country: str
    country_file: str
    hofstede: str  # the name of the culture's row in the Hofstede table
    arm: str
    learner: Learner
    tutor: Tutor
    test: list[SurveyItem]
    learning_turns: int
    likert: list[str]
    free_text: str | None = None


AnyMeta = ConversationMeta | LearnerMeta


def read_meta(meta: Mapping[str, Any], where: str = "conversation") -> AnyMeta | None:
    """A conversation's meta as its model. None where it is no plan's conversation: the empty meta
    of one with no end record yet or withdrawn, the meta of a stage's own calls (a refinement's
    `{"stage", "source"}`). A learner's or a conversation's meta that does not fit its model is
    bad input (`InputError`), named by `where`."""
    model: type[AnyMeta]
    if meta.get("study") == "education":
        model = LearnerMeta
    elif "participants" in meta:
        model = ConversationMeta
    else:
        return None
    try:
        return model.model_validate(meta)
    except ValidationError as exc:
        raise InputError(format_validation_error(f"{where} meta", exc)) from exc


def conversation_meta(meta: Mapping[str, Any], where: str = "conversation") -> ConversationMeta:
    """`read_meta` where only a CulturePark conversation can be (its turn policy, its prompts)."""
    read = read_meta(meta, where)
    if not isinstance(read, ConversationMeta):
        raise InputError(f"{where}: not a CulturePark conversation (its meta has {sorted(meta)})")
    return read


def learner_meta(meta: Mapping[str, Any], where: str = "conversation") -> LearnerMeta:
    """`read_meta` where only an education study's learner session can be."""
    read = read_meta(meta, where)
    if not isinstance(read, LearnerMeta):
        raise InputError(f"{where}: not a learner's session of an education study (its meta has {sorted(meta)})")
    return read


class MetaReader:
    """`conversation_meta` / `learner_meta` for a turn policy, which is asked once per turn: each
    conversation's meta is validated once, not on every turn (~15 µs a time, two thirds of the
    CulturePark policy's CPU per turn). A hit needs the very dict it was read from, so a spec
    whose meta was replaced is read again. At most `size` conversations are held, the oldest
    read dropped first (a run never holds more than its concurrency in flight)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._read: dict[str, tuple[Mapping[str, Any], AnyMeta]] = {}

    def _cached(self, conv_id: str, meta: Mapping[str, Any], read: Callable[..., AnyMeta]) -> AnyMeta:
        hit = self._read.get(conv_id)
        if hit is not None and hit[0] is meta:
            return hit[1]
        model = read(meta, conv_id)
        if len(self._read) >= self.size:
            del self._read[next(iter(self._read))]
        self._read[conv_id] = (meta, model)
        return model

    def conversation(self, conv_id: str, meta: Mapping[str, Any]) -> ConversationMeta:
        read = self._cached(conv_id, meta, conversation_meta)
        return read if isinstance(read, ConversationMeta) else conversation_meta(meta, conv_id)

    def learner(self, conv_id: str, meta: Mapping[str, Any]) -> LearnerMeta:
        read = self._cached(conv_id, meta, learner_meta)
        return read if isinstance(read, LearnerMeta) else learner_meta(meta, conv_id)


__all__ = [
    "AnyMeta",
    "ConversationMeta",
    "Learner",
    "LearnerMeta",
    "MetaReader",
    "Participant",
    "Participants",
    "Role",
    "SurveyItem",
    "Tutor",
    "conversation_meta",
    "learner_meta",
    "read_meta",
]
