"""The education study (`kind: education`): one learner's session as a `TurnPolicy`.

A session is a fixed sequence of steps — pre-test, learning conversation (the learner asks,
the tutor answers in the role of a person of the culture), post-test, questionnaire — and
every step is one turn in the run's log. The same sequence drives a simulated learner (model
calls through the engine) and a human participant (the study web app writes the human's
answers as the learner's turns), so `eval education` scores both the same way.

The next step is a pure function of the turns so far (`walk`): an unparseable test answer
from a simulated learner is asked again up to `answer_tries` times, then left as it is and
counted invalid by the scorer — never guessed.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from culturepark.agents.answers import parse_scale_answer
from culturepark.agents.cultures import Culture, load_table, resolve_culture
from culturepark.agents.meta import Learner, LearnerMeta, MetaReader, SurveyItem, Tutor
from culturepark.agents.views import SpokenTurn, Step, chat_messages, transcript_prompt
from culturepark.agents.vsm13 import load_vsm13_items
from culturepark.agents.wvs import WVSData
from culturepark.engine.backends.base import Request
from culturepark.engine.scheduler import ConversationSpec, Turn, TurnRequest
from culturepark.scenarios.schema import BackendConfig, EducationScenario

ANSWER_PHASES = ("pre", "post", "exp")
NOTES_CHARS = 6000  # the post-test shows the learner at most this much of the conversation


@dataclass(frozen=True, slots=True)
class EduStep:
    phase: str  # pre | learn | post | exp | free
    role: str  # learner | tutor
    number: int  # position in the session's base sequence
    item: SurveyItem | None = None  # the test, Likert or free-text item answered at this step
    attempt: int = 1

    @property
    def needs_number(self) -> bool:
        return self.phase in ANSWER_PHASES


LIKERT_SCALE = "1 = strongly disagree, 2 = disagree, 3 = neither, 4 = agree, 5 = strongly agree"


def base_sequence(meta: LearnerMeta) -> list[EduStep]:
    seq: list[tuple[str, str, SurveyItem | None]] = []
    seq += [("pre", "learner", it) for it in meta.test]
    for _ in range(meta.learning_turns):
        seq += [("learn", "learner", None), ("learn", "tutor", None)]
    seq += [("post", "learner", it) for it in meta.test]
    seq += [("exp", "learner", SurveyItem(key=f"likert:{i}", question=q, scale=LIKERT_SCALE, lo=1, hi=5))
            for i, q in enumerate(meta.likert)]
    if meta.free_text:
        seq.append(("free", "learner", SurveyItem(key="free", question=meta.free_text)))
    return [EduStep(phase, role, n, item) for n, (phase, role, item) in enumerate(seq)]


def parse_item_answer(item: SurveyItem, text: str) -> int | None:
    code: int | None = parse_scale_answer(text, item.lo, item.hi)
    return code


def walk(meta: LearnerMeta, texts: Sequence[str], answer_tries: int
         ) -> tuple[list[EduStep], EduStep | None]:
    """Align the turns so far with the session's steps; return them and the next step (None: over)."""
    seq = base_sequence(meta)
    aligned: list[EduStep] = []
    pos, attempt = 0, 1
    for text in texts:
        if pos >= len(seq):
            break
        step = seq[pos]
        step = EduStep(step.phase, step.role, step.number, step.item, attempt)
        aligned.append(step)
        if (step.needs_number and step.item is not None and parse_item_answer(step.item, text) is None
                and attempt < answer_tries):
            attempt += 1
        else:
            pos, attempt = pos + 1, 1
    if pos >= len(seq):
        return aligned, None
    nxt = seq[pos]
    return aligned, EduStep(nxt.phase, nxt.role, nxt.number, nxt.item, attempt)


def learning_transcript(aligned: Sequence[EduStep], texts: Sequence[str]) -> list[SpokenTurn]:
    return [SpokenTurn(step.role, text) for step, text in zip(aligned, texts) if step.phase == "learn"]


class EducationPolicy:
    """Stateless `TurnPolicy` for simulated learners; the web app uses `walk` for humans."""

    def __init__(self, scenario: EducationScenario, tutor_configs: dict[str, BackendConfig]) -> None:
        self.scenario = scenario
        self.learner_rendering = scenario.learner_backend.rendering
        self.tutor_renderings = {arm: cfg.rendering for arm, cfg in tutor_configs.items()}
        self.metas = MetaReader()

    def next_turn(self, conv: ConversationSpec, turns: Sequence[Turn]) -> TurnRequest | None:
        meta = self.metas.learner(conv.id, conv.meta)
        texts = [t.text for t in turns]
        aligned, step = walk(meta, texts, self.scenario.answer_tries)
        if step is None:
            return None
        seed = conv.seq * 10_000 + len(turns)
        if step.role == "tutor":
            request = self.tutor_request(meta, aligned, texts, self.tutor_renderings[meta.arm])
            return TurnRequest(meta.tutor.name, f"tutor:{meta.arm}", request)
        if step.phase == "learn":
            request = self.question_request(meta, aligned, texts)
        else:
            request = self.answer_request(meta, step, aligned, texts, seed)
        return TurnRequest(meta.learner.name, "learner", request)

    # -- requests -------------------------------------------------------------------------
    def _background(self, meta: LearnerMeta) -> str:
        L, T = meta.learner, meta.tutor
        return (f"{L.name} is {L.person} who {L.reason}. {T.name} is {T.person} and answers "
                f"{L.name}'s questions about {T.culture_phrase} from {T.possessive} own experience.")

    def _names(self, meta: LearnerMeta) -> dict[str, str]:
        return {"learner": meta.learner.name, "tutor": meta.tutor.name}

    def _conversation(self, meta: LearnerMeta, me: str, system: str, rendering: str,
                      aligned: Sequence[EduStep], texts: Sequence[str], prompt: str | None) -> Request:
        spoken = learning_transcript(aligned, texts)
        steps = [Step(t.speaker_role) for t in spoken]
        current = Step(me, prompt)
        sampling = self.scenario.sampling
        if rendering == "chat":
            return Request(messages=chat_messages(system, me, steps, spoken, current),
                           max_tokens=sampling.max_tokens, temperature=sampling.temperature)
        text, stop = transcript_prompt(self._background(meta), me, self._names(meta), steps, spoken, current)
        return Request(prompt=text, stop=stop, max_tokens=sampling.max_tokens, temperature=sampling.temperature)

    def question_request(self, meta: LearnerMeta, aligned: Sequence[EduStep], texts: Sequence[str]) -> Request:
        L, T = meta.learner, meta.tutor
        system = (f"{self._background(meta)}\n\nYou are {L.name}. Ask {T.name} one question at a time "
                  f"about everyday life, values and customs in {T.country}, and follow up on what "
                  f"{T.name} tells you. Speak in the first person, briefly.")
        first = not any(s.phase == "learn" for s in aligned)
        prompt = f"Ask {T.name} your first question about {T.country}." if first else None
        return self._conversation(meta, "learner", system, self.learner_rendering, aligned, texts, prompt)

    def tutor_request(self, meta: LearnerMeta, aligned: Sequence[EduStep], texts: Sequence[str],
                      rendering: str) -> Request:
        L, T = meta.learner, meta.tutor
        system = (f"{self._background(meta)}\n\nYou are {T.name}, {T.person}. Answer {L.name}'s "
                  f"questions as a person of {T.culture_phrase} would, from your own experience, "
                  "in a few sentences. Stay in character.")
        return self._conversation(meta, "tutor", system, rendering, aligned, texts, None)

    def answer_request(self, meta: LearnerMeta, step: EduStep, aligned: Sequence[EduStep],
                       texts: Sequence[str], seed: int) -> Request:
        L, T = meta.learner, meta.tutor
        item = step.item
        assert item is not None
        system = f"You are {L.name}, {L.person} who {L.reason}."
        notes = ""
        if step.phase != "pre":
            lines = [f"{L.name if t.speaker_role == 'learner' else T.name}: {t.text}"
                     for t in learning_transcript(aligned, texts)]
            notes = "\n".join(lines)[-NOTES_CHARS:]
            notes = f"Earlier you talked with {T.name}, {T.person}:\n{notes}\n\n"
        if step.phase == "free":
            user = f"{notes}{item.question} Answer in one or two sentences."
            return Request.instruction(system, user, "Answer:", self.learner_rendering, 80,
                                       self.scenario.answer_temperature, stop=["\n\n"], seed=seed)
        if step.phase == "exp":
            user = (f"{notes}How much do you agree with this statement about that conversation?\n"
                    f"\"{item.question}\"\nOptions: {item.scale}\nAnswer with a single number from 1 to 5.")
        else:
            user = (f"{notes}Answer as a typical person from {T.country} would.\n{item.question}\n"
                    f"Options: {item.scale}\nAnswer with a single number from {item.lo} to {item.hi}.")
        cue = f"Answer ({item.lo}-{item.hi}):"
        # No newline stop: a base model often starts its answer on a new line ("\n3"), which a
        # stop at "\n" would turn into an empty reply; four tokens are short enough anyway.
        return Request.instruction(system, user, cue, self.learner_rendering,
                                   8 if self.learner_rendering == "chat" else 4,
                                   self.scenario.answer_temperature, stop=None, seed=seed)


@dataclass
class EducationPlan:
    """Learners (conversations) of a study: per culture, `learners_per_arm` × arms, arms shuffled."""

    scenario: EducationScenario
    cultures: list[Culture]
    learner_culture: Culture
    items: list[SurveyItem]  # the test
    data: WVSData
    notices: list[str] = field(default_factory=list)
    skipped: set[tuple[str, str]] = field(default_factory=set)  # nothing is skipped; the runner reports the count

    @property
    def size(self) -> int:
        sc = self.scenario
        size: int = len(self.cultures) * len(sc.arms) * sc.learners_per_arm
        return size

    def participant_meta(self, culture: Culture, arm: str, number: int,
                         learners: Literal["simulated", "human"]) -> LearnerMeta:
        sc = self.scenario
        rng = random.Random(f"{sc.seed}:learner:{culture.name}:{number}")
        lc = self.learner_culture
        return LearnerMeta(
            learners=learners, culture=culture.name, country=culture.country,
            country_file=culture.country_file, hofstede=culture.hofstede or culture.country,
            arm=arm, learner=Learner(name=rng.choice(sc.learner.names), person=lc.person,
                                     reason=rng.choice(sc.learner.reasons).format(country=culture.country)),
            tutor=Tutor(name=culture.names[0], person=culture.person, culture_phrase=culture.culture_phrase,
                        possessive=culture.possessive, country=culture.country),
            test=self.items, learning_turns=sc.learning_turns,
            likert=list(sc.questionnaire.likert), free_text=sc.questionnaire.free_text,
        )

    def conversations(self, keep: Callable[[str], bool] | None = None) -> Iterator[ConversationSpec]:
        """Per culture, arms assigned to learner slots by a seeded shuffle (balanced, blind);
        `keep(id)` skips a learner before its meta is made (see `Plan.conversations`)."""
        sc = self.scenario
        seq = 0
        for culture in self.cultures:
            slots = [arm.name for arm in sc.arms for _ in range(sc.learners_per_arm)]
            random.Random(f"{sc.seed}:assign:{culture.name}").shuffle(slots)
            for number, arm in enumerate(slots):
                conv_id = f"{culture.name}:learner{number:03d}"
                if keep is None or keep(conv_id):
                    meta = self.participant_meta(culture, arm, number, "simulated")
                    yield ConversationSpec(conv_id, seq, meta.model_dump())
                seq += 1


def build_education_plan(scenario: EducationScenario, data_dir: Path, base_dir: Path | None = None
                         ) -> EducationPlan:
    from culturepark.agents.protocol import PlanError

    data = WVSData(Path(data_dir))
    table = load_table(scenario.culture_table, base_dir)
    available = data.countries()
    cultures = [resolve_culture(name, table, available) for name in scenario.cultures]
    learner_culture = resolve_culture(scenario.learner.culture, table, available)
    items: list[SurveyItem] = []
    if scenario.test.vsm13:
        items += [SurveyItem(key=f"vsm13:{it['item']}", question=it["question"], scale=it["scale"], lo=1, hi=5)
                  for it in load_vsm13_items(data_dir)]
    for q in scenario.test.wvs_items:
        wi = data.item(q)
        if not wi.scale:
            raise PlanError(f"test: WVS item {q} has no numeric answer scale")
        lo, hi = min(wi.scale), max(wi.scale)
        scale = ", ".join(f"{k} = {v}" for k, v in sorted(wi.scale.items()))
        items.append(SurveyItem(key=f"wvs:{wi.q_id}", question=wi.question, scale=scale, lo=lo, hi=hi))
    tutor_configs(scenario)  # a bad tutor spec is bad input now, not when the first tutor turn comes
    return EducationPlan(scenario, cultures, learner_culture, items, data)


def tutor_configs(scenario: EducationScenario) -> dict[str, BackendConfig]:
    from culturepark.scenarios.model_spec import parse_model_spec
    return {arm.name: parse_model_spec(arm.tutor, arm.base_url, arm.api_key_env) for arm in scenario.arms}


__all__ = [
    "EduStep",
    "EducationPlan",
    "EducationPolicy",
    "base_sequence",
    "build_education_plan",
    "parse_item_answer",
    "walk",
]
