"""The CulturePark protocol as engine `TurnPolicy`s, and the plan of a scenario's conversations.

v1 (moderated): 7 rounds; the moderator prompts each agent before it speaks.
The original sends the last round's "anything in your culture you want to
introduce" prompt to the delegate by mistake; here it goes to the main contact,
and turns keep strictly alternating delegate / main contact.
v1-in: the original's own in-cultural v1 prompts (two compatriots; nobody is asked to
"introduce your culture" to someone who shares it).
v2 (free): the moderator only opens; the agents then answer each other.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturepark.agents.cultures import Culture, load_table, resolve_culture
from culturepark.agents.meta import ConversationMeta, MetaReader, Participant, Participants
from culturepark.agents.personas import choose_stance
from culturepark.agents.views import SpokenTurn, Step, chat_messages, transcript_prompt
from culturepark.agents.wvs import WVSData, WVSItem
from culturepark.engine.backends.base import Request
from culturepark.engine.errors import InputError
from culturepark.engine.scheduler import ConversationSpec, Turn, TurnRequest
from culturepark.scenarios.schema import ModeratorRound, ModeratorScript, Role, Scenario

OPENING = "{question}\nPlease provide your opinions and reasons."

V1_ROUNDS: tuple[ModeratorRound, ...] = (
    ModeratorRound(delegate=OPENING,
                   main_contact="What's your opinion? Please provide your reasons. Diverse opinions are welcome."),
    ModeratorRound(delegate="Do you agree with {contact}? Provide more reasons to support your idea.",
                   main_contact="What's your opinion? Please provide your reasons."),
    ModeratorRound(delegate="Talk more about opinions in your culture.", main_contact="What's your opinion?"),
    ModeratorRound(delegate="What's your opinion?", main_contact="What's your opinion?"),
    ModeratorRound(delegate="Do you have more interesting ideas?",
                   main_contact="Do you have more interesting ideas?"),
    ModeratorRound(delegate="Is there anything in your culture you want to introduce to {contact}?",
                   main_contact="What's your opinion?"),
    ModeratorRound(delegate="What's your opinion?",
                   main_contact="Is there anything in your culture you want to introduce to {delegate}?"),
)


# The original's in-cultural v1 prompts (main.py), paraphrased; same 7 rounds, delegate first.
V1_IN_ROUNDS: tuple[ModeratorRound, ...] = (
    ModeratorRound(delegate=OPENING,
                   main_contact="What's your opinion? Please give your reasons. Different opinions are welcome."),
    ModeratorRound(delegate="Can you give more ideas from your culture to support your view?",
                   main_contact="What's your opinion? Can you give more ideas from your culture to support your view?"),
    ModeratorRound(delegate="Do you have more interesting ideas?", main_contact="Do you have more interesting ideas?"),
    ModeratorRound(delegate="Is there anything in your culture related to what you have discussed?",
                   main_contact="What's your opinion?"),
    ModeratorRound(delegate="What's your opinion?",
                   main_contact="Is there anything in your culture related to what you have discussed?"),
    ModeratorRound(delegate="What's your opinion? Please give your reasons. Different opinions are welcome.",
                   main_contact="What's your opinion? Please give your reasons. Different opinions are welcome."),
    ModeratorRound(delegate="Do you have any inspirations or ideas?",
                   main_contact="Do you have any inspirations or ideas?"),
)
INTRO_ANSWER = "What do you think of what {contact} introduced?"


class PlanError(InputError):
    """A scenario that is valid YAML but names something the data does not have."""


# A base model continuing a transcript readily copies the other speaker's last turn word for word
# (rejected as `echo_reply`, then asked again, sometimes until the conversation fails): where the
# backend can, no span of this many tokens from the transcript is repeated.
NO_COPY_TOKENS = 8


def script_steps(scenario: Scenario) -> list[Step]:
    """The sequence of (speaker, moderator prompt template) for one conversation."""
    if scenario.version == "v2":
        return [Step("delegate" if i % 2 == 0 else "main_contact", OPENING if i == 0 else None)
                for i in range(scenario.turns)]
    rounds: Sequence[ModeratorRound]
    if isinstance(scenario.version, ModeratorScript):
        rounds = scenario.version.rounds
    else:
        rounds = list((V1_IN_ROUNDS if scenario.version == "v1-in" else V1_ROUNDS)[: scenario.rounds])
        filler = ModeratorRound(delegate="What's your opinion?", main_contact="What's your opinion?")
        rounds += [filler] * (scenario.rounds - len(rounds))
    steps: list[Step] = []
    for rnd in rounds:
        order = ("delegate", "main_contact") if rnd.first == "delegate" else ("main_contact", "delegate")
        for role in order:
            steps.append(Step(role, getattr(rnd, role)))
    if scenario.delegate_answers_intro:  # right after round 7, where the main contact introduced something
        steps.insert(2 * len(V1_ROUNDS), Step("delegate", INTRO_ANSWER))
    return steps


def background(meta: ConversationMeta) -> str:
    d, c = meta.participants.delegate, meta.participants.main_contact
    opts = f" (options: {meta.item_options})" if meta.item_options else ""
    stance = (f'When asked "{meta.item_text}"{opts}, {d.name} answered "{meta.stance_text}". '
              f"All of {d.name}'s statements must be consistent with this answer.")
    if meta.stance_policy == "control":  # told no respondent's answer: the persona and culture only
        stance = f'{d.name} has a view on "{meta.item_text}"{opts}, as {d.person} might.'
    if meta.mode == "in":
        rest = (f"{c.name} is also {c.person} and shares this view; "
                f"{c.name}'s statements must be consistent with it too.")
    else:
        rest = f"{c.name} speaks from {c.possessive} own {c.culture_phrase} and perspective."
    return f"{d.name} is {d.person} and {c.name} is {c.person}. {stance} {rest}"


def interview_opening(meta: ConversationMeta) -> str:
    """The background for a base model (a transcript): the delegate gives its seeded answer in its
    own words, as the first exchange of the interview. A small base model continues what the
    transcript's speakers said more readily than it follows a sentence about them. On ten seeded
    quickstarts (issue 23), delegates told to disagree with item 27 said so in their first turn in
    5 of 7 conversations (0 of 7 with the sentence); the fidelity re-ask did not move (the 270M
    model picks its favourite option whatever the stance). Chat models keep `background`."""
    d, c = meta.participants.delegate, meta.participants.main_contact
    if meta.mode == "in":
        rest = f"{c.name} is also {c.person} and shares {d.name}'s view."
    else:
        rest = f"{c.name} speaks from {c.possessive} own {c.culture_phrase} and perspective."
    question = meta.question
    if meta.stance_policy == "control":  # told no respondent's answer
        return f"An interview. {d.name} is {d.person} and {c.name} is {c.person}. {rest}"
    return (f"An interview. {d.name} is {d.person} and {c.name} is {c.person}. {rest}\n\n"
            f"Moderator: {d.name}, {question[:1].lower()}{question[1:]}\n"
            f'{d.name}: My answer is "{meta.stance_text}".')


def role_instruction(meta: ConversationMeta, role: str) -> str:
    me, other = meta.participant(role), meta.other(role)
    if role == "delegate" or meta.mode == "in":
        goal = f"Share your views and the views common in {me.culture_phrase}, with reasons."
    else:
        goal = f"Bring your own outside perspective and keep asking {other.name} about {other.culture_phrase}."
    return (f"You are {me.name}, talking with {other.name}. {goal} "
            "Speak in the first person, in a few sentences, and stay in character.")


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?\"'")


class CultureParkPolicy:
    """Stateless `TurnPolicy`: the next request is a pure function of (meta, turns so far)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.steps = script_steps(scenario)
        self.renderings = {r: scenario.backend_for(r).rendering for r in ("delegate", "main_contact")}
        self.samplings = {r: scenario.sampling_for(r) for r in ("delegate", "main_contact")}
        self.metas = MetaReader()

    def _prompt(self, step: Step, meta: ConversationMeta) -> Step:
        if step.prompt is None:
            return step
        p = meta.participants
        text = step.prompt.format(question=meta.item_question, item=meta.item_text,
                                  delegate=p.delegate.name, contact=p.main_contact.name)
        return Step(step.speaker_role, text)

    def next_turn(self, conv: ConversationSpec, turns: Sequence[Turn]) -> TurnRequest | None:
        i = len(turns)
        if i >= len(self.steps):
            return None
        if self.scenario.loop_detection and _looping(turns):
            return None
        meta = self.metas.conversation(conv.id, conv.meta)
        steps = [self._prompt(s, meta) for s in self.steps[: i + 1]]
        current = steps[i]
        role = current.speaker_role
        spoken = [SpokenTurn(t.role, t.text) for t in turns]
        sampling = self.samplings[role]
        request = self._request(meta, steps[:i], spoken, current, sampling.max_tokens, sampling.temperature)
        name = meta.participant(role).name
        echo_of = {_normalise(current.prompt or "")} | ({_normalise(turns[-1].text)} if turns else set())
        return TurnRequest(speaker=name, role=role, request=request,
                           validate=lambda text: "echo_reply" if _normalise(text) in echo_of else None)

    def _request(self, meta: ConversationMeta, steps: Sequence[Step], spoken: Sequence[SpokenTurn], current: Step,
                 max_tokens: int, temperature: float) -> Request:
        """The speaker's own view (its persona, the other's turns, its moderator prompts), rendered."""
        role = current.speaker_role
        # Requests that share a prompt prefix: this agent's persona on this item, in this culture.
        cache_key = f"{meta.culture}|{meta.item_id}|{role}"
        if self.renderings[role] == "chat":
            system = f"{background(meta)}\n\n{role_instruction(meta, role)}"
            return Request(messages=chat_messages(system, role, steps, spoken, current),
                           max_tokens=max_tokens, temperature=temperature, cache_key=cache_key)
        names = {r: meta.participant(r).name for r in ("delegate", "main_contact")}
        prompt, stop = transcript_prompt(interview_opening(meta), role, names, steps, spoken, current)
        return Request(prompt=prompt, stop=stop, max_tokens=max_tokens, temperature=temperature,
                       cache_key=cache_key, no_repeat_ngram_size=NO_COPY_TOKENS)

    def ask_delegate(self, meta: ConversationMeta, turns: Sequence[SpokenTurn], question: str, max_tokens: int,
                     temperature: float, seed: int | None = None) -> Request:
        """A question from the moderator to the delegate after `turns` (none: before the conversation),
        in the delegate's own view of what was said — how fidelity asks the seed item again."""
        steps = [self._prompt(s, meta) for s in self.steps[: len(turns)]]
        request = self._request(meta, steps, turns, Step("delegate", question), max_tokens, temperature)
        request.seed = seed
        return request


def _looping(turns: Sequence[Turn]) -> bool:
    """Both agents repeated their previous turn word for word: more turns add nothing."""
    texts = [t.text for t in turns[-4:]]
    return len(texts) == 4 and _loops_at(texts, 3)


def _loops_at(texts: Sequence[str], i: int) -> bool:
    return (_normalise(texts[i]) == _normalise(texts[i - 2])
            and _normalise(texts[i - 1]) == _normalise(texts[i - 3]))


def repeats_itself(texts: Sequence[str]) -> bool:
    """Somewhere in a finished conversation both agents repeated their previous turn word for word
    (the loop `loop_detection` stops a run at): the dataset's looping gate."""
    return any(_loops_at(texts, i) for i in range(3, len(texts)))


@dataclass
class Plan:
    scenario: Scenario
    items: list[WVSItem]
    cultures: list[Culture]
    main_contact: Culture
    notices: list[str] = field(default_factory=list)
    skipped: set[tuple[str, str]] = field(default_factory=set)  # (culture, item) never asked
    data: WVSData | None = None

    @property
    def size(self) -> int:
        per = self.scenario.conversations_per_item
        size: int = per * (len(self.cultures) * len(self.items) - len(self.skipped))
        return size

    def conversations(self, keep: Callable[[str], bool] | None = None) -> Iterator[ConversationSpec]:
        """Deterministic order: for each repeat k, item, culture — so `--limit` spreads over cultures.

        `keep(id)` skips a conversation before its stance is drawn (a spec is ~18 µs to make, an id
        ~1 µs): how a Ray shard's feeder walks the plan for its own conversations only. Skipping
        changes nothing else: ids, seqs and stances do not depend on which others were made.
        """
        sc = self.scenario
        assert self.data is not None
        seq = 0
        for k in range(sc.conversations_per_item):
            for item in self.items:
                for culture in self.cultures:
                    if (culture.name, item.q_id) in self.skipped:
                        continue
                    conv_id = f"{culture.name}:Q{item.q_id}:{k}"
                    if keep is not None and not keep(conv_id):
                        seq += 1
                        continue
                    rng = random.Random(f"{sc.seed}:{conv_id}")
                    answers = self.data.answers(culture.country_file, item.q_id)
                    stance = choose_stance(sc.stance_policy, item, answers, rng)
                    yield ConversationSpec(conv_id, seq, self._meta(culture, item, stance))
                    seq += 1

    def _participant(self, culture: Culture, name: str, role: Role) -> Participant:
        return Participant(name=name, culture=culture.name, person=culture.person,
                           culture_phrase=culture.culture_phrase, possessive=culture.possessive,
                           model=self.scenario.backend_for(role).model)

    def _meta(self, culture: Culture, item: WVSItem, stance: Any) -> dict[str, Any]:
        sc = self.scenario
        if sc.mode == "in":
            contact = self._participant(culture, _second_name(culture), "main_contact")
        elif self.main_contact.name == culture.name:  # a compatriot as main contact: never the same name
            contact = self._participant(self.main_contact, _second_name(culture), "main_contact")
        else:
            contact = self._participant(self.main_contact, self.main_contact.names[0], "main_contact")
        meta: dict[str, Any] = ConversationMeta(
            culture=culture.name, country=culture.country, country_file=culture.country_file,
            mode=sc.mode, version="direct" if sc.kind == "direct" else (
                sc.version if isinstance(sc.version, str) else "custom"),
            item_id=item.q_id, item_topic=item.topic, item_text=item.text,
            item_question=item.question, item_options=item.option_text,
            stance_code=stance.code, stance_text=stance.text, stance_policy=stance.policy,
            stance_respondents=stance.respondents,
            participants=Participants(delegate=self._participant(culture, culture.names[0], "delegate"),
                                      main_contact=contact),
        ).model_dump()
        return meta


def _second_name(culture: Culture) -> str:
    name: str = culture.names[1] if len(culture.names) > 1 else culture.names[0] + " II"
    return name


def build_plan(scenario: Scenario, data_dir: Path, base_dir: Path | None = None) -> Plan:
    """Resolve cultures and items against the data; items a country never asked are skipped."""
    data = WVSData(Path(data_dir))
    table = load_table(scenario.culture_table, base_dir)
    available = data.countries()
    cultures = [resolve_culture(name, table, available) for name in scenario.cultures]
    main_contact = resolve_culture(scenario.main_contact, table, available)
    all_items = data.items()
    if scenario.items == "all":
        items = list(all_items)
    elif isinstance(scenario.items, list):
        items = [data.item(q) for q in scenario.items]
    else:
        topic = scenario.items.topic.lower()
        items = [it for it in all_items if it.topic.lower() == topic]
        if not items:
            topics = sorted({it.topic for it in all_items})
            raise PlanError(f"items.topic: no item has topic {scenario.items.topic!r}; "
                            f"topics: {', '.join(topics)}")
    plan = Plan(scenario, items, cultures, main_contact, data=data)
    if scenario.mode == "in" and scenario.version == "v1":
        plan.notices.append("in-cultural run with the cross-cultural v1 prompts (a delegate is asked to introduce "
                            "their culture to a compatriot); version: v1-in uses the original's in-cultural prompts")
    elif scenario.mode == "cross" and scenario.version == "v1-in":
        plan.notices.append("cross-cultural run with the in-cultural v1 prompts "
                            "(version: v1 is the cross-cultural script)")
    for culture in cultures:
        if culture.country_file not in available:
            raise PlanError(f"culture {culture.name!r}: no WVS file {culture.country_file}.csv "
                            f"in {data.wvs_dir / 'countries'}")
        plan.notices.extend(data.unlisted(culture.country_file, items))
        for item in items:
            if not data.answers(culture.country_file, item.q_id):
                plan.skipped.add((culture.name, item.q_id))
                plan.notices.append(f"{culture.name}: Q{item.q_id} was never asked in "
                                    f"{culture.country_file} (no valid answers); skipped")
    return plan
