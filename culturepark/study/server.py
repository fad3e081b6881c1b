"""The study's state: participants, their steps and their answers, kept in the run's log.

The session is the one simulated learners go through (`agents.education.walk`): consent →
pre-test → chat with the tutor → post-test → questionnaire → thank-you. The participant's
answers are written as the learner's turns, the tutor's replies come through the engine's
endpoint (limits, retries), and every record goes to the run's append-only log the moment it
exists. The log is the only state: a reload re-renders the participant's current step from
it, and a restarted server reads it back, so nobody loses their place.

Nothing identifying is asked or kept: a participant is a random id in the URL; IP addresses
and user agents are not logged (the access log is off). An admin page behind a token printed
at start shows progress per culture and arm.
"""
from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from culturepark.agents.education import EducationPlan, EduStep, base_sequence, walk
from culturepark.agents.study import study_for
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import RequestFailed
from culturepark.engine.log import RunLog, read_log
from culturepark.engine.records import EndRecord, ParticipantRecord, TurnRecord
from culturepark.engine.scheduler import ConversationSpec, ResumeState, Turn, turn_record
from culturepark.scenarios.schema import EducationScenario

HUMAN_LEARNER = {"name": "Learner", "person": "a participant in a study",
                 "reason": "wants to learn about {country}"}


@dataclass
class Participant:
    spec: ConversationSpec
    turns: list[Turn] = field(default_factory=list)
    done: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def meta(self) -> dict[str, Any]:
        return self.spec.meta


class BadInput(Exception):
    """A participant's answer that is not accepted: shown on the page, nothing written."""


class StudyServer:
    def __init__(self, scenario: EducationScenario, plan: EducationPlan, out: Path,
                 endpoints: dict[str, Endpoint], log: RunLog, admin_token: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.scenario = scenario
        self.plan = plan
        self.out = out
        self.endpoints = endpoints
        self.log = log
        self.admin_token = admin_token
        self.policy = study_for(scenario).policy()
        self.clock = clock
        self.participants: dict[str, Participant] = {}
        self._new_lock = asyncio.Lock()
        self._read_back()

    # -- state from the log ---------------------------------------------------------------
    def _read_back(self) -> None:
        """Participants, their turns and who finished, from the log (as a resumed run reads it)."""
        records = read_log(self.out).records
        state = ResumeState.from_records(records)
        for rec in records:
            if isinstance(rec, ParticipantRecord):
                pid = rec.conversation_id
                self.participants[pid] = Participant(ConversationSpec(pid, rec.seq, rec.meta),
                                                     turns=state.turns.get(pid, []), done=pid in state.ended)

    def _assign(self, number: int) -> tuple[Any, str]:
        """Block randomisation: every block of (culture × arm) slots is shuffled with the seed."""
        combos = [(c, arm.name) for c in self.plan.cultures for arm in self.scenario.arms]
        block = random.Random(f"{self.scenario.seed}:human-block:{number // len(combos)}").sample(combos, len(combos))
        return block[number % len(combos)]

    async def new_participant(self) -> Participant:
        async with self._new_lock:
            number = len(self.participants)
            culture, arm = self._assign(number)
            meta = self.plan.participant_meta(culture, arm, number, "human")
            meta["learner"] = {k: v.format(country=culture.country) for k, v in HUMAN_LEARNER.items()}
            pid = "p-" + secrets.token_urlsafe(9)
            self.log.append(ParticipantRecord(pid, number, meta, self.clock()))
            p = self.participants[pid] = Participant(ConversationSpec(pid, number, meta))
            return p

    def step_of(self, p: Participant) -> tuple[list[EduStep], EduStep | None]:
        return walk(p.meta, [t.text for t in p.turns], self.scenario.answer_tries)

    # -- writing --------------------------------------------------------------------------
    def _append_learner(self, p: Participant, text: str) -> None:
        index = len(p.turns)
        self.log.append(TurnRecord(p.spec.id, p.spec.seq, index, p.meta["learner"]["name"], "learner", text,
                                   human=True, t=self.clock()))
        p.turns.append(Turn(index, p.meta["learner"]["name"], "learner", text))

    async def _tutor_reply(self, p: Participant, on_text: Callable[[str], None] | None = None) -> None:
        nxt = self.policy.next_turn(p.spec, p.turns)
        endpoint = self.endpoints[nxt.role]
        request_hash = nxt.request.key(endpoint.backend.model)
        completion = await endpoint.complete(nxt.request, nxt.validate, request_hash, on_text)
        record = turn_record(p.spec, len(p.turns), nxt, completion, endpoint, request_hash, self.clock())
        self.log.append(record)
        p.turns.append(Turn(record.index, nxt.speaker, nxt.role, record.text))

    def _finish_if_over(self, p: Participant) -> None:
        _, step = self.step_of(p)
        if step is None and not p.done:
            self.log.append(EndRecord(p.spec.id, p.spec.seq, "done", meta=p.meta, t=self.clock()))
            p.done = True

    async def submit_answers(self, p: Participant, form: dict[str, str]) -> None:
        """A whole test or questionnaire page: every answer is checked before any is written."""
        aligned, step = self.step_of(p)
        if step is None or step.role != "learner" or step.phase == "learn":
            return
        pending = self.page_steps(p, step)
        values: list[str] = []
        missing = 0
        for s in pending:
            raw = form.get(s.item["key"], "").strip()  # type: ignore[index]
            if s.phase == "free":
                if len(raw) > self.scenario.max_reply_chars:
                    raise BadInput(f"Your answer is too long ({len(raw)} characters; at most "
                                   f"{self.scenario.max_reply_chars}).")
                values.append(raw or "(no answer)")
                continue
            if not raw:
                missing += 1
                continue
            lo, hi = s.item["lo"], s.item["hi"]  # type: ignore[index]
            if not raw.isdigit() or not lo <= int(raw) <= hi:
                raise BadInput(f"An answer must be a whole number from {lo} to {hi} (got {raw[:20]!r}).")
            values.append(str(int(raw)))
        if missing:
            raise BadInput(f"Please answer every question ({missing} not answered yet).")
        for text in values:
            self._append_learner(p, text)
        self._finish_if_over(p)

    async def ask(self, p: Participant, message: str, on_text: Callable[[str], None] | None = None) -> None:
        _, step = self.step_of(p)
        if step is None or step.phase != "learn" or step.role != "learner":
            return
        message = message.strip()
        if not message:
            raise BadInput("Please write a question or a reply first.")
        if len(message) > self.scenario.max_reply_chars:
            raise BadInput(f"Your message is too long ({len(message)} characters; at most "
                           f"{self.scenario.max_reply_chars}).")
        self._append_learner(p, message)
        await self.catch_up(p, on_text)

    async def ask_if_current(self, p: Participant, step: str, message: str,
                             on_text: Callable[[str], None] | None = None) -> None:
        """`ask` under the participant's lock, for both the plain and the streamed page.

        A stale (double) submit writes nothing; a reply that fails leaves the question saved,
        and the next page view asks for the reply again. `BadInput` goes to the caller.
        """
        async with p.lock:
            if step != str(len(p.turns)):
                return
            try:
                await self.ask(p, message, on_text)
            except RequestFailed:
                pass

    async def catch_up(self, p: Participant, on_text: Callable[[str], None] | None = None) -> None:
        """If the tutor owes a reply (also after a restart between question and reply), get it."""
        _, step = self.step_of(p)
        if step is not None and step.role == "tutor":
            await self._tutor_reply(p, on_text)
        self._finish_if_over(p)

    def page_steps(self, p: Participant, step: EduStep) -> list[EduStep]:
        """The steps shown together on one page: the rest of the current test, or the questionnaire."""
        seq = base_sequence(p.meta)
        phases = {"pre": ("pre",), "post": ("post",), "exp": ("exp", "free"), "free": ("free",)}[step.phase]
        return [s for s in seq[step.number:] if s.phase in phases]


__all__ = ["BadInput", "Participant", "StudyServer"]
