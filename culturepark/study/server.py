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

Who may continue a session: the browser that consented holds a session key in a cookie; the
log keeps only its sha256 (and that of a short recovery code shown to the participant), so a
restarted server still recognises both, and neither the link alone nor the log opens a
session. Admission is bounded: `human.signups_per_minute` over any 60 s, and, for a closed
study, one sign-up per invitation code. Refused requests write nothing to the log; they are
counted (`rejected`) and shown on the admin page.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturepark.agents.experiment import experiment_for
from culturepark.agents.learners import EducationPlan, EduStep, base_sequence, walk
from culturepark.agents.meta import Learner, LearnerMeta, learner_meta
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import RequestFailed
from culturepark.engine.limiter import WindowCounter
from culturepark.engine.log import RunLog, read_log
from culturepark.engine.records import AccessRecord, EndRecord, ParticipantRecord, TurnRecord, WithdrawalRecord
from culturepark.engine.scheduler import ConversationSpec, ResumeState, Turn, turn_record
from culturepark.scenarios.schema import EducationScenario

HUMAN_LEARNER = {"name": "Learner", "person": "a participant in a study",
                 "reason": "wants to learn about {country}"}


WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")  # ASCII digits only: "²" and "٣" are digits to str.isdigit
RECOVERY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud or copied by hand
RECOVERY_LENGTH = 8  # 31**8 ≈ 2**40 codes; recovery attempts are limited per minute (see `recover`)
RECOVERIES_PER_MINUTE = 20


def digest(secret: str) -> str:
    """What the log keeps of a secret (session key, recovery or invitation code)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def form_token(session_key: str) -> str:
    """The anti-forgery token of a session's forms: derived from the cookie another site cannot read,
    so it survives a restart without a server-side secret."""
    return hmac.new(session_key.encode(), b"culturepark-form", hashlib.sha256).hexdigest()[:32]


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison that any text may reach (`secrets.compare_digest` refuses non-ASCII str)."""
    return secrets.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def normalise_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isascii() and ch.isalnum())


@dataclass
class Participant:
    spec: ConversationSpec  # its meta as written to the log (a plain dict, as the engine keeps it)
    meta: LearnerMeta  # the same, read once
    turns: list[Turn] = field(default_factory=list)
    done: bool = False
    session: str = ""  # sha256 of the current session key (the newest access record wins)
    withdrawn: bool = False
    reply_failed: bool = False  # the tutor's last reply failed: the page offers "Try again"
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class NewSession:
    """What a participant is given at consent: the cookie's key and the recovery code (shown once)."""

    participant: Participant
    key: str
    recovery_code: str


class BadInput(Exception):
    """A participant's answer that is not accepted: shown on the page, nothing written.
    `fields`: the form fields to point at (the unanswered questions)."""

    def __init__(self, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or []


class Refused(Exception):
    """A request the study does not take (forged, over a limit, a wrong code): nothing is written,
    the reason is counted, and the message is shown on the page with `status`."""

    def __init__(self, reason: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.reason, self.status = reason, status


class StudyServer:
    def __init__(self, scenario: EducationScenario, plan: EducationPlan, out: Path,
                 endpoints: dict[str, Endpoint], log: RunLog, admin_token: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.scenario = scenario
        self.human = scenario.human
        self.plan = plan
        self.out = out
        self.endpoints = endpoints
        self.log = log
        self.admin_token = admin_token
        self.policy = experiment_for(scenario).policy()
        self.clock = clock
        self.participants: dict[str, Participant] = {}
        self.by_recovery: dict[str, str] = {}  # sha256 of a recovery code -> participant id
        self.used_invitations: set[str] = set()  # sha256 of each invitation code already used
        self.invitations = {digest(c) for c in self.human.invitation_codes}
        self.texts_hash = digest(self.human.model_dump_json(  # what participants read, not how they are admitted
            exclude={"signups_per_minute", "invitation_codes", "log_client_addresses"}))[:16]
        self.signups = WindowCounter(self.human.signups_per_minute)
        self.recoveries = WindowCounter(RECOVERIES_PER_MINUTE)
        self.rejected: Counter[str] = Counter()  # refused requests by reason (never written to the log)
        self._new_lock = asyncio.Lock()
        self._read_back()

    # -- state from the log ---------------------------------------------------------------
    def _read_back(self) -> None:
        """Participants, their turns, keys, withdrawals and who finished, from the log."""
        records = read_log(self.out).records
        state = ResumeState.from_records(records)
        for rec in records:
            if isinstance(rec, ParticipantRecord):
                p = self._register(rec)
                p.turns, p.done = state.turns.get(p.spec.id, []), p.spec.id in state.ended
            elif isinstance(rec, AccessRecord) and rec.conversation_id in self.participants:
                self.participants[rec.conversation_id].session = rec.session
            elif isinstance(rec, WithdrawalRecord) and rec.conversation_id in self.participants:
                self.participants[rec.conversation_id].withdrawn = True

    def _register(self, rec: ParticipantRecord) -> Participant:
        """A participant record's state, for a new participant and one read back alike: the participant,
        and the hashes of its recovery and invitation codes."""
        p = self.participants[rec.conversation_id] = Participant(
            ConversationSpec(rec.conversation_id, rec.seq, rec.meta), learner_meta(rec.meta, rec.conversation_id),
            session=rec.access.get("session", ""))
        if "recovery" in rec.access:
            self.by_recovery[rec.access["recovery"]] = rec.conversation_id
        if "invitation" in rec.access:
            self.used_invitations.add(rec.access["invitation"])
        return p

    def _assign(self, number: int) -> tuple[Any, str]:
        """Block randomisation: every block of (culture × arm) slots is shuffled with the seed."""
        combos = [(c, arm.name) for c in self.plan.cultures for arm in self.scenario.arms]
        block = random.Random(f"{self.scenario.seed}:human-block:{number // len(combos)}").sample(combos, len(combos))
        return block[number % len(combos)]

    def refuse(self, reason: str, message: str, status: int = 403) -> Refused:
        self.rejected[reason] += 1
        return Refused(reason, message, status)

    # -- admission and sessions -----------------------------------------------------------
    async def new_participant(self, invitation: str = "") -> NewSession:
        """Consent given: admit (rate, invitation) or raise `Refused`; then one participant record
        with the hashes of the new session key and recovery code, and of the texts agreed to."""
        async with self._new_lock:
            access: dict[str, str] = {}
            if self.invitations:
                code = digest(invitation.strip())
                if code not in self.invitations or code in self.used_invitations:
                    raise self.refuse("invitation", "This invitation code is not valid, or it has been used "
                                                    "already. Please check the code you were sent.")
                access["invitation"] = code
            if not self.signups.admit(self.clock()):
                raise self.refuse("signup_rate", "Too many people are starting the study right now. "
                                                 "Please try again in a minute.", 429)
            number = len(self.participants)
            culture, arm = self._assign(number)
            learner = Learner(**{k: v.format(country=culture.country) for k, v in HUMAN_LEARNER.items()})
            meta = self.plan.participant_meta(culture, arm, number, "human").model_copy(update={"learner": learner})
            pid = "p-" + secrets.token_urlsafe(9)
            key = secrets.token_urlsafe(24)
            recovery = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
            access.update(session=digest(key), recovery=digest(recovery), texts=self.texts_hash)
            record = ParticipantRecord(pid, number, meta.model_dump(), self.clock(), access)
            self.log.append(record)
            return NewSession(self._register(record), key, recovery[:4] + "-" + recovery[4:])

    def holds(self, p: Participant, key: str) -> bool:
        """Whether a browser's session key is the participant's current one (constant time)."""
        return bool(p.session) and same_secret(digest(key), p.session)

    def recover(self, code: str) -> tuple[Participant, str]:
        """A recovery code moves the session to this browser: a new key, logged as its hash, so the
        browser that held the old key can no longer continue. Raises `Refused`."""
        if not self.recoveries.admit(self.clock()):
            raise self.refuse("recovery_rate", "Too many attempts right now. Please try again in a minute.", 429)
        pid = self.by_recovery.get(digest(normalise_code(code)))
        if pid is None:
            raise self.refuse("recovery_code", "This recovery code does not match any session of this study. "
                                               "Check it and try again.")
        p = self.participants[pid]
        key = secrets.token_urlsafe(24)
        session = digest(key)
        self.log.append(AccessRecord(pid, p.spec.seq, session, self.clock()))  # the log first, then the state
        p.session = session
        return p, key

    def withdraw(self, p: Participant) -> None:
        if not p.withdrawn:
            self.log.append(WithdrawalRecord(p.spec.id, p.spec.seq, self.clock()))
            p.withdrawn = True

    def step_of(self, p: Participant) -> tuple[list[EduStep], EduStep | None]:
        return walk(p.meta, [t.text for t in p.turns], self.scenario.answer_tries)

    # -- writing --------------------------------------------------------------------------
    def _append_learner(self, p: Participant, text: str) -> None:
        index = len(p.turns)
        self.log.append(TurnRecord(p.spec.id, p.spec.seq, index, p.meta.learner.name, "learner", text,
                                   human=True, t=self.clock()))
        p.turns.append(Turn(index, p.meta.learner.name, "learner", text))

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
            self.log.append(EndRecord(p.spec.id, p.spec.seq, "done", meta=p.spec.meta, t=self.clock()))
            p.done = True

    async def submit_answers(self, p: Participant, form: dict[str, str]) -> None:
        """A whole test or questionnaire page: every answer is checked before any is written."""
        _aligned, step = self.step_of(p)
        if p.withdrawn or step is None or step.role != "learner" or step.phase == "learn":
            return
        pending = self.page_steps(p, step)
        values: list[str] = []
        missing: list[int] = []
        for number, s in enumerate(pending, 1):
            item = s.item
            assert item is not None  # every step of a test or questionnaire page asks an item
            raw = form.get(item.key, "").strip()
            if s.phase == "free":
                if len(raw) > self.scenario.max_reply_chars:
                    raise BadInput(f"Your answer is too long ({len(raw)} characters; at most "
                                   f"{self.scenario.max_reply_chars}).", ["free"])
                values.append(raw or "(no answer)")
                continue
            if not raw:
                missing.append(number)
                continue
            lo, hi = item.lo, item.hi
            if not WHOLE_NUMBER.fullmatch(raw) or not lo <= int(raw) <= hi:
                raise BadInput(f"Question {number}: an answer must be a whole number from {lo} to {hi}.",
                               [item.key])
            values.append(str(int(raw)))
        if missing:
            raise BadInput(f"Please answer every question: {'question' if len(missing) == 1 else 'questions'} "
                           f"{_listed(missing)} {'is' if len(missing) == 1 else 'are'} not answered yet.",
                           [_key(pending[n - 1]) for n in missing])
        for text in values:
            self._append_learner(p, text)
        self._finish_if_over(p)

    async def ask(self, p: Participant, message: str, on_text: Callable[[str], None] | None = None) -> None:
        _, step = self.step_of(p)
        if p.withdrawn or step is None or step.phase != "learn" or step.role != "learner":
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

        A stale (double) submit writes nothing. A reply that fails leaves the question saved (see
        `catch_up`). `BadInput` goes to the caller.
        """
        async with p.lock:
            if step != str(len(p.turns)):
                return
            await self.ask(p, message, on_text)

    async def retry(self, p: Participant, on_text: Callable[[str], None] | None = None) -> None:
        """"Try again" after a failed reply: asks the tutor once more (under the participant's lock)."""
        async with p.lock:
            await self.catch_up(p, on_text)

    async def catch_up(self, p: Participant, on_text: Callable[[str], None] | None = None) -> None:
        """If the tutor owes a reply (also after a restart between question and reply), get it. A reply
        that fails after the endpoint's retries marks the participant (`reply_failed`) instead of
        raising: the page then says so and offers "Try again" (`retry`)."""
        _, step = self.step_of(p)
        if step is not None and step.role == "tutor" and not p.withdrawn:
            try:
                await self._tutor_reply(p, on_text)
            except RequestFailed:
                p.reply_failed = True
                return
            p.reply_failed = False
        self._finish_if_over(p)

    def page_steps(self, p: Participant, step: EduStep) -> list[EduStep]:
        """The steps shown together on one page: the rest of the current test, or the questionnaire."""
        seq = base_sequence(p.meta)
        phases = {"pre": ("pre",), "post": ("post",), "exp": ("exp", "free"), "free": ("free",)}[step.phase]
        return [s for s in seq[step.number:] if s.phase in phases]


def _key(step: EduStep) -> str:
    return step.item.key if step.item is not None else ""


def _listed(numbers: list[int]) -> str:
    """1 → "1"; 3, 7, 12 → "3, 7 and 12"."""
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


__all__ = ["BadInput", "NewSession", "Participant", "Refused", "StudyServer", "digest",
           "form_token", "same_secret"]
