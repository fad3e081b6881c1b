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
log keeps only a salted scrypt hash of it (and of a recovery code shown to the participant; see
`keys`), so a restarted server still recognises both, and neither the link alone nor the log
opens a session. A session lasts the study's duration plus `SESSION_MARGIN_S`; after that, the
recovery code opens it again. Invitation codes are compared in their normal form and kept as a
keyed hash only. Admission is bounded: `human.signups_per_minute` over any 60 s, and, for a closed
study, one sign-up per invitation code. Refused requests write nothing to the log; they are
counted (`rejected`) and shown on the admin page.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
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
from culturepark.engine.records import (
    AccessRecord,
    EndRecord,
    ParticipantRecord,
    RunHeader,
    TurnRecord,
    WithdrawalRecord,
)
from culturepark.engine.scheduler import ConversationSpec, ResumeState, Turn, turn_record
from culturepark.scenarios.schema import EducationScenario
from culturepark.study.forms import clean_text, visible
from culturepark.study.keys import (
    RECOVERY_COST,
    SESSION_COST,
    kdf_check,
    kdf_hash,
    keyed,
    legacy_digest,
    load_key,
    normal_code,
)
from culturepark.study.limits import ClientBuckets

logger = logging.getLogger("culturepark.study")
HUMAN_LEARNER = {"name": "Learner", "person": "a participant in a study",
                 "reason": "wants to learn about {country}"}


SESSION_KEY = re.compile(r"[A-Za-z0-9_-]{32}")  # secrets.token_urlsafe(24)
WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")  # ASCII digits only: "²" and "٣" are digits to str.isdigit
RECOVERY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud or copied by hand
# A recovery code is a 4-letter tag, kept in clear to find the record, and 8 secret letters (31**8 ≈ 2**40),
# kept as a salted scrypt hash; attempts are limited per minute (see `recover`). Logs made before
# the tag hold 8-letter codes as a plain sha256, still accepted.
RECOVERY_TAG = 4
RECOVERY_LENGTH = 12
RECOVERIES_PER_MINUTE = 20
SESSION_MARGIN_S = 24 * 3600  # a session outlives the study's stated duration by a day: a pause, then the code


def digest(secret: str) -> str:
    """The texts' version hash (not for secrets: those go through `keys`)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def form_token(session_key: str) -> str:
    """The anti-forgery token of a session's forms: derived from the cookie another site cannot read,
    so it survives a restart without a server-side secret."""
    return hmac.new(session_key.encode(), b"culturepark-form", hashlib.sha256).hexdigest()[:32]


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison that any text may reach (`secrets.compare_digest` refuses non-ASCII str)."""
    return secrets.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def normalise_code(code: str) -> str:
    """A recovery code as typed (any case, spaces, dashes, full-width letters) → its letters."""
    return "".join(ch for ch in normal_code(code).upper() if ch.isascii() and ch.isalnum())


@dataclass
class Participant:
    spec: ConversationSpec  # its meta as written to the log (a plain dict, as the engine keeps it)
    meta: LearnerMeta  # the same, read once
    turns: list[Turn] = field(default_factory=list)
    done: bool = False
    session: str = ""  # the KDF hash of the current session key (the newest access record wins)
    since: float = 0.0  # when that session began: it lasts `StudyServer.session_lifetime_s`
    verified: str = ""  # in memory only: sha256 of the key last checked against `session` (saves the KDF)
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
                 clock: Callable[[], float] = time.time, pilot: bool = False) -> None:
        self.scenario = scenario
        self.human = scenario.human
        self.plan = plan
        self.out = out
        self.endpoints = endpoints
        self.log = log
        self.admin_token = admin_token
        self.policy = experiment_for(scenario).policy()
        self.clock = clock
        self.pilot = pilot  # admit participants although researcher, contact or approval is unset (pages say so)
        self.texts_logged: set[str] = set()  # versions of the texts whose full wording is in the log
        self.participants: dict[str, Participant] = {}
        self.by_recovery: dict[str, str] = {}  # sha256 of an old 8-letter recovery code -> participant id
        self.by_tag: dict[str, list[tuple[str, str]]] = {}  # recovery tag -> [(participant id, KDF hash)]
        self.used_invitations: set[str] = set()  # keyed hash of each invitation code already used
        self.key = load_key(out)
        self.invitations = {keyed(self.key, c) for c in self.human.invitation_codes}
        self._legacy_invitations = {legacy_digest(c.strip()): keyed(self.key, c) for c in self.human.invitation_codes}
        self.texts_hash = digest(self.human.model_dump_json(  # what participants read, not how they are admitted
            exclude={"signups_per_minute", "invitation_codes", "log_client_addresses"}))[:16]
        if self.human.log_client_addresses:  # the data text's {ip} sentence follows it: another version
            self.texts_hash = digest(self.texts_hash + ":ip")[:16]
        self.signups = WindowCounter(self.human.signups_per_minute)
        self.recoveries = WindowCounter(RECOVERIES_PER_MINUTE)
        self.clients = ClientBuckets()  # per-client limits, checked before the study-wide ones (see `limits`)
        self.rejected: Counter[str] = Counter()  # refused requests by reason (never written to the log)
        self.alerts: Counter[str] = Counter()  # what the researcher must act on (the admin page shows it first)
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
                p = self.participants[rec.conversation_id]
                p.session, p.since = rec.session, rec.t
            elif isinstance(rec, WithdrawalRecord) and rec.conversation_id in self.participants:
                self.participants[rec.conversation_id].withdrawn = True

    def _register(self, rec: ParticipantRecord) -> Participant:
        """A participant record's state, for a new participant and one read back alike: the participant,
        and the hashes of its recovery and invitation codes."""
        p = self.participants[rec.conversation_id] = Participant(
            ConversationSpec(rec.conversation_id, rec.seq, rec.meta), learner_meta(rec.meta, rec.conversation_id),
            session=rec.access.get("session", ""), since=rec.t)
        recovery = rec.access.get("recovery", "")
        if "recovery_tag" in rec.access:
            self.by_tag.setdefault(rec.access["recovery_tag"], []).append((rec.conversation_id, recovery))
        elif recovery:
            self.by_recovery[recovery] = rec.conversation_id
        if "texts_json" in rec.access:
            self.texts_logged.add(rec.access.get("texts", ""))
        if "invitation" in rec.access:
            used = rec.access["invitation"]
            self.used_invitations.add(self._legacy_invitations.get(used, used))
        return p

    @property
    def open_to_participants(self) -> bool:
        """A study with people states who runs it, how to reach them and its approval before anyone
        is admitted; `--pilot` admits people anyway, and every page then says it is a pilot."""
        return self.pilot or not self.human.missing()

    def texts_json(self) -> str:
        """The texts participants read and agree to, in full: logged once per version (`texts_hash`),
        so an audit can show what a later participant agreed to, not only a hash."""
        texts: str = self.human.model_dump_json(exclude={"signups_per_minute", "invitation_codes"})
        return texts

    @property
    def minutes(self) -> int:
        """The study's duration as the consent page states it: the scenario's, or an estimate:
        ~15 s per test answer (twice), ~90 s per chat message and reply, ~10 s per Likert item,
        3 min for the texts; to 5 minutes."""
        if self.human.duration_minutes:
            stated: int = self.human.duration_minutes
            return stated
        sc = self.scenario
        seconds = 2 * 15 * len(self.plan.items) + 90 * sc.learning_turns + 10 * len(sc.questionnaire.likert) + 180
        minutes: int = max(5, 5 * round(seconds / 300))
        return minutes

    @property
    def session_lifetime_s(self) -> int:
        """How long a session key opens a session: the stated duration plus `SESSION_MARGIN_S`."""
        return self.minutes * 60 + SESSION_MARGIN_S

    def _assign(self, number: int) -> tuple[Any, str]:
        """Block randomisation: every block of (culture × arm) slots is shuffled with the seed."""
        combos = [(c, arm.name) for c in self.plan.cultures for arm in self.scenario.arms]
        block = random.Random(f"{self.scenario.seed}:human-block:{number // len(combos)}").sample(combos, len(combos))
        return block[number % len(combos)]

    def log_failed(self, exc: Exception) -> None:
        """A record could not be written (disk full, I/O error): one line for the operator, an alert
        on the admin page; the participant is told by the caller."""
        self.alerts["log_write_failed"] += 1
        logger.error("study: a record could not be written (%s); participants are told it was not saved", exc)

    def refuse(self, reason: str, message: str, status: int = 403) -> Refused:
        self.rejected[reason] += 1
        return Refused(reason, message, status)

    # -- admission and sessions -----------------------------------------------------------
    def per_client(self, kind: str, client: str) -> None:
        """One client's own limit for `kind` (signup, recovery, invitation, admin_login): `Refused` past it."""
        if not self.clients.admit(kind, client, self.clock()):
            raise self.refuse(f"{kind}_rate_client", "Too many attempts from this connection right now. Please try "
                                                     "again in a minute.", 429)

    async def new_participant(self, invitation: str = "", client: str = "") -> NewSession:
        """Consent given: admit (rate, invitation) or raise `Refused`; then one participant record
        with the KDF hashes of the new session key and recovery code, and the texts' hash.
        The hashes are made first, in a thread (scrypt takes a moment), outside the admission lock."""
        key = secrets.token_urlsafe(24)
        recovery = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        session_hash, recovery_hash = await asyncio.to_thread(
            lambda: (kdf_hash(key, SESSION_COST), kdf_hash(recovery[RECOVERY_TAG:], RECOVERY_COST)))
        async with self._new_lock:
            access: dict[str, str] = {}
            if not self.open_to_participants:
                raise self.refuse("not_open", "This study is not open yet: the researcher has not stated who runs "
                                              "it, how to contact them and its ethics approval.", 503)
            self.per_client("signup", client)
            if self.invitations:
                self.per_client("invitation", client)  # guessing codes costs a minute per few tries
                code = keyed(self.key, invitation)
                if code not in self.invitations or code in self.used_invitations:
                    raise self.refuse("invitation", "This invitation code is not valid, or it has been used "
                                                    "already. Please check the code you were sent.")
                access["invitation"] = code
            if not self.signups.admit(self.clock()):
                raise self.refuse("signup_rate", "Too many people are starting the study right now. "
                                                 "Please try again in a minute.", 429)
            # after the last; not the count, which an erasure (`study erase`) lowers
            number = max((q.spec.seq for q in self.participants.values()), default=-1) + 1
            culture, arm = self._assign(number)
            learner = Learner(**{k: v.format(country=culture.country) for k, v in HUMAN_LEARNER.items()})
            meta = self.plan.participant_meta(culture, arm, number, "human").model_copy(update={"learner": learner})
            pid = "p-" + secrets.token_urlsafe(9)
            access.update(session=session_hash, recovery=recovery_hash, recovery_tag=recovery[:RECOVERY_TAG],
                          texts=self.texts_hash)
            if self.texts_hash not in self.texts_logged:
                access["texts_json"] = self.texts_json()
            record = ParticipantRecord(pid, number, meta.model_dump(), self.clock(), access)
            self.log.append(record)
            p = self._register(record)
            p.verified = hashlib.sha256(key.encode()).hexdigest()
            return NewSession(p, key, "-".join(recovery[i:i + 4] for i in range(0, RECOVERY_LENGTH, 4)))

    async def session_state(self, p: Participant, key: str) -> str:
        """`ok` when a browser's session key is the participant's current one and the session has not
        outlived `session_lifetime_s`; else `expired` or `none`. The KDF runs once per key and process,
        in a thread (made-up cookies must not stall everyone's pages), and only for a key of the
        shape this server makes."""
        if not p.session or not SESSION_KEY.fullmatch(key):
            return "none"
        fast = hashlib.sha256(key.encode()).hexdigest()
        if not (p.verified and same_secret(fast, p.verified)):
            if not await asyncio.to_thread(kdf_check, key, p.session):
                return "none"
            p.verified = fast
        return "ok" if self.clock() - p.since <= self.session_lifetime_s else "expired"

    def holds(self, p: Participant, key: str) -> bool:
        """`session_state` for code outside the event loop (tests, tools)."""
        return asyncio.run(self.session_state(p, key)) == "ok"

    async def recover(self, code: str, client: str = "") -> tuple[Participant, str]:
        """A recovery code moves the session to this browser: a new key, logged as its KDF hash, so the
        browser that held the old key can no longer continue. Raises `Refused`."""
        self.per_client("recovery", client)
        if not self.recoveries.admit(self.clock()):
            raise self.refuse("recovery_rate", "Too many attempts right now. Please try again in a minute.", 429)
        pid = await self._find_recovery(normalise_code(code))
        if pid is None:
            raise self.refuse("recovery_code", "This recovery code does not match any session of this study. "
                                               "Check it and try again.")
        p = self.participants[pid]
        key = secrets.token_urlsafe(24)
        session = await asyncio.to_thread(kdf_hash, key, SESSION_COST)
        now = self.clock()
        self.log.append(AccessRecord(pid, p.spec.seq, session, now))  # the log first, then the state
        p.session, p.since, p.verified = session, now, hashlib.sha256(key.encode()).hexdigest()
        return p, key

    async def _find_recovery(self, code: str) -> str | None:
        """The participant a (normalised) recovery code belongs to: by its tag, then the KDF, in a thread."""
        if len(code) == 8:  # a code from before the tag: a plain sha256 in the log
            return self.by_recovery.get(legacy_digest(code))
        if len(code) != RECOVERY_LENGTH:
            return None
        # 31**4 tags: two participants share one rarely; more than 8 would be a flood, not chance
        for pid, stored in itertools.islice(self.by_tag.get(code[:RECOVERY_TAG], []), 8):
            if await asyncio.to_thread(kdf_check, code[RECOVERY_TAG:], stored):
                return pid
        return None

    def withdraw(self, p: Participant) -> None:
        if not p.withdrawn:
            self.log.append(WithdrawalRecord(p.spec.id, p.spec.seq, self.clock()))
            p.withdrawn = True

    def step_of(self, p: Participant) -> tuple[list[EduStep], EduStep | None]:
        steps: tuple[list[EduStep], EduStep | None] = walk(p.meta, [t.text for t in p.turns],
                                                           self.scenario.answer_tries)
        return steps

    # -- writing --------------------------------------------------------------------------
    def _append_learner(self, p: Participant, text: str) -> None:
        index = len(p.turns)
        self.log.append(TurnRecord(p.spec.id, p.spec.seq, index, p.meta.learner.name, "learner", text,
                                   human=True, t=self.clock()))
        p.turns.append(Turn(index, p.meta.learner.name, "learner", text))

    async def _tutor_reply(self, p: Participant, on_text: Callable[[str], None] | None = None) -> None:
        nxt = self.policy.next_turn(p.spec, p.turns)
        assert nxt is not None, "called only while the conversation waits for its tutor"
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
            raw = clean_text(form.get(item.key, "")).strip()
            if s.phase == "free":
                raw = raw if visible(raw) else ""
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
        message = clean_text(message).strip()
        if not message:
            raise BadInput("Please write a question or a reply first.")
        if not visible(message):
            raise BadInput("Your message has no visible characters (only spaces or invisible marks), so it was not "
                           "sent. Please write a question or a reply.")
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


def private_header(header: RunHeader, run_dir: Path) -> RunHeader:
    """The study's log header without the invitation codes in clear (the header copies the scenario):
    each is replaced by its keyed hash (`keys.keyed`), which links nobody once `study.key` is gone."""
    human = (header.scenario or {}).get("human") or {}
    if not human.get("invitation_codes"):
        return header
    key = load_key(run_dir)
    scenario = {**(header.scenario or {}), "human": {**human, "invitation_codes": [
        keyed(key, c) for c in human["invitation_codes"]]}}
    return header.model_copy(update={"scenario": scenario})


def _listed(numbers: list[int]) -> str:
    """1 → "1"; 3, 7, 12 → "3, 7 and 12"."""
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


__all__ = ["SESSION_MARGIN_S", "BadInput", "NewSession", "Participant", "Refused", "StudyServer", "digest",
           "form_token", "private_header", "same_secret"]
