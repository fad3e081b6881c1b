"""The `Scenario` model. Every field has a default a user of the paper would expect."""
from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, field_validator, model_validator

from culturepark.engine.chat_templates import Template

Role = Literal["delegate", "main_contact"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TierRates(_Strict):
    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)
    cached_input_per_1m: float | None = Field(None, ge=0)
    # input written to the prompt cache; unset: billed as input (provider anthropic: 1.25 times input)
    cache_write_per_1m: float | None = Field(None, ge=0)


class PriceConfig(TierRates):
    """USD per 1M tokens at the standard tier; `flex` and `batch` default to half of every rate.
    `cached_input_per_1m` unset: cached input is billed as input (no discount assumed)."""

    flex: TierRates | None = None
    batch: TierRates | None = None


class BatchSettings(_Strict):
    """`run --batch-api`: the provider's limits per batch file, how long a round gathers, how often
    a batch is polled (from 1 s, doubling up to `poll_s`)."""

    max_requests: int = Field(50_000, ge=1)
    max_mb: float = Field(190.0, gt=0)
    gather_s: float = Field(2.0, ge=0)
    poll_s: float = Field(30.0, gt=0)


class PromptCacheConfig(_Strict):
    """OpenAI's `prompt_cache_key`: one per (culture, item, role), sharded so that no key is sent
    more than `key_rpm` requests a minute (past ~15, OpenAI's requests spill to cold machines)."""

    key: bool = False
    key_rpm: float = Field(15.0, gt=0)


DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
    "anthropic": "https://api.anthropic.com/v1",
}
DEFAULT_KEY_ENVS = {"openai": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class _BackendCommon(_Strict):
    """What every kind of backend has: the model, its price and how its rate limiter charges."""

    model: str = "gpt-3.5-turbo"
    price: PriceConfig | None = None
    settle: Literal["admission", "usage"] = "admission"

    @model_validator(mode="before")
    @classmethod
    def _drop_other_kinds_defaults(cls, data: Any) -> Any:
        """Backends were one flat model until the kinds were split: its fields of the other kind
        at their defaults (in every run header, refine config and many scenario files) meant
        nothing and are dropped; one set otherwise is refused as an unknown field."""
        if isinstance(data, dict):
            other = REMOTE_ONLY if cls is EmbeddedBackendConfig else EMBEDDED_ONLY
            data = {k: v for k, v in data.items() if not (k in other and v == other[k])}
        return data


class RemoteBackendConfig(_BackendCommon):
    """A model behind an HTTP API: `openai` means any OpenAI-compatible server (OpenAI, vLLM, Ollama,
    the sim server), `gemini` Google's OpenAI endpoint, `anthropic` Anthropic's Messages API (chat
    only). `run --batch-api` sends an OpenAI-compatible one through /v1/batches."""

    provider: Literal["openai", "gemini", "anthropic"] = "openai"
    base_url: str | None = None
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_connections: int = Field(0, ge=0)
    # flex (OpenAI; Gemini where its OpenAI endpoint takes it): half price, slower, and sometimes
    # refused for lack of capacity; after `flex_fallback_after` refusals a request goes at standard
    service_tier: Literal["standard", "flex"] = "standard"
    flex_fallback_after: int | None = Field(None, ge=1)
    flex_timeout_s: float = Field(900.0, gt=0)
    prompt_cache: PromptCacheConfig = Field(default_factory=PromptCacheConfig)
    batch: BatchSettings = Field(default_factory=BatchSettings)

    @model_validator(mode="after")
    def _defaults(self) -> RemoteBackendConfig:
        if self.base_url is None:
            self.base_url = DEFAULT_BASE_URLS[self.provider]
        if self.api_key_env is None and "api_key_env" not in self.model_fields_set:
            self.api_key_env = DEFAULT_KEY_ENVS[self.provider]
        if self.provider == "anthropic" and self.api != "chat":
            raise ValueError("provider anthropic speaks the Messages API: api must be chat")
        return self

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or not v.replace("_", "").isalnum() or v.startswith("sk-")):
            raise ValueError("must be the NAME of an environment variable holding the key "
                             "(keys are never accepted in YAML)")
        return v

    @property
    def rendering(self) -> Literal["chat", "transcript"]:
        """Chat messages for chat models; a `Name: text` transcript for base models (`completions`)."""
        return "transcript" if self.api == "completions" else "chat"


class EmbeddedBackendConfig(_BackendCommon):
    """The model embedded in this process (`provider: local`), batched across conversations."""

    provider: Literal["local"]
    device: str = "auto"
    max_batch: int = Field(16, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    adapter: str | None = None  # a LoRA adapter directory applied to the embedded model
    template: Template | None = None  # chat template the local model was tuned with (from its adapter's card)
    # weights on CPU: fp16 kernels (2.3x fp32's speed at the same perplexity); fp16-int8-head
    # is 15-20% faster again at +5% perplexity (engine/backends/local/packed.py says how measured)
    weights: Literal["fp16", "fp16-int8-head", "fp32"] = "fp16"

    @property
    def rendering(self) -> Literal["chat", "transcript"]:
        """A model tuned with a chat template gets chat messages; the base model a transcript."""
        return "chat" if self.template else "transcript"


def _backend_kind(data: Any) -> str:
    provider = data.get("provider", "openai") if isinstance(data, dict) else getattr(data, "provider", "openai")
    return "embedded" if provider == "local" else "remote"


# Where generations come from: a remote HTTP API or the embedded model, told apart by `provider`
# (missing: openai). Build one from a mapping with `backend_config`.
BackendConfig = Annotated[Annotated[RemoteBackendConfig, Tag("remote")] | Annotated[EmbeddedBackendConfig,
                                                                                    Tag("embedded")],
                          Discriminator(_backend_kind)]
BACKEND_KIND_TAGS = ("remote", "embedded")  # in validation errors' locations; left out when printed
_BACKEND = TypeAdapter(BackendConfig)


def backend_config(data: Mapping[str, Any]) -> BackendConfig:
    """A backend of the kind its `provider` names, validated (raises pydantic's ValidationError)."""
    return _BACKEND.validate_python(dict(data))


# The fields of each kind, at their defaults as the flat model had them (base_url and api_key_env
# unset): what a dump of the flat model held for the other kind, so content hashes stay the same.
REMOTE_ONLY: dict[str, object] = {
    "base_url": None, "api": "chat", "api_key_env": None, "timeout_s": 60.0, "max_connections": 0,
    "service_tier": "standard", "flex_fallback_after": None, "flex_timeout_s": 900.0,
    "prompt_cache": PromptCacheConfig().model_dump(mode="json"), "batch": BatchSettings().model_dump(mode="json")}
EMBEDDED_ONLY: dict[str, object] = {"device": "auto", "max_batch": 16, "batch_wait_ms": 5.0, "adapter": None,
                                    "template": None, "weights": "fp16"}


def flat_backend_dump(data: dict[str, Any]) -> dict[str, Any]:
    """A backend's JSON dump (changed in place) as the flat model wrote it: the other kind's fields
    at their defaults added. Content hashes are taken of this form."""
    for key, default in {**REMOTE_ONLY, **EMBEDDED_ONLY}.items():
        data.setdefault(key, default)
    return data


class Sampling(_Strict):
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(168, ge=1)


class RoleConfig(_Strict):
    backend: BackendConfig | None = None
    sampling: Sampling | None = None


class Limits(_Strict):
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    burst_s: float = Field(0.5, gt=0, le=60)


class RetryConfig(_Strict):
    max_attempts: int = Field(6, ge=1, le=50)
    base_delay_s: float = Field(0.5, ge=0)
    max_delay_s: float = Field(30.0, ge=0)
    # a rejected reply (echo, unparseable) is re-asked at once, this much hotter each time, up to the cap
    reask_temperature_step: float = Field(0.2, ge=0)
    reask_temperature_max: float = Field(1.2, ge=0)
    # a 429 is retried (without counting toward max_attempts) until this long after a request's first
    rate_limit_budget_s: float = Field(1800.0, gt=0)


class ModeratorRound(_Strict):
    """One round of a moderated (v1-style) script; prompts may use {delegate}, {contact}, {item}."""

    first: Role = "delegate"
    delegate: str
    main_contact: str


class ModeratorScript(_Strict):
    rounds: list[ModeratorRound] = Field(min_length=1)


class ItemsByTopic(_Strict):
    topic: str


class OutputConfig(_Strict):
    dir: str | None = None
    fsync: Literal["never", "interval", "always"] = "interval"


class CultureEntry(_Strict):
    """A row of the culture table. Users add cultures in YAML without touching code."""

    name: str
    country_file: str | None = None
    names: list[str] = Field(min_length=1)
    adjective: str | None = None
    language: str = "English"
    country: str | None = None
    pronoun: Literal["he", "she", "they"] = "they"
    hofstede: str | None = None  # the `country` of its row in the published Hofstede scores


# Backend settings that say how to reach a model, not what it generates: left out of content hashes.
# Fields added after logs were first written, with their defaults (dotted paths): a run made before
# they existed (and not using them) keeps its content hash, so it still resumes.
ADDED_LATER: dict[str, object] = {"delegate_answers_intro": False, "style": "ours"}
BACKEND_ADDED_LATER: dict[str, object] = {
    "template": None, "service_tier": "standard", "flex_fallback_after": None, "flex_timeout_s": 900.0,
    "prompt_cache": REMOTE_ONLY["prompt_cache"], "batch": REMOTE_ONLY["batch"], "weights": "fp16",
    "price.cache_write_per_1m": None, "price.flex.cache_write_per_1m": None, "price.batch.cache_write_per_1m": None}


def without_added_defaults(data: dict[str, Any], added: Mapping[str, object]) -> dict[str, Any]:
    """`data` (changed in place) without the fields of `added` that are at their defaults — the one
    way every content hash (runs, refinements, evals) stays the same across versions that add fields."""
    for path, default in added.items():
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node and node[last] == default:
            del node[last]
    return data


TRANSPORT_KEYS = ("base_url", "api_key_env", "timeout_s", "max_connections", "price", "device",
                  "max_batch", "batch_wait_ms", "settle", "service_tier", "flex_fallback_after",
                  "flex_timeout_s", "prompt_cache", "batch")


class RunSettings(_Strict):
    """What every kind of scenario has: how a run is paced, seeded, stored and bounded.

    Except for `name` and `seed`, none of it changes what is generated, so none of it is hashed.
    """

    name: str = Field(min_length=1)
    description: str = ""
    limits: Limits = Field(default_factory=Limits)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    concurrency: int = Field(64, ge=1, le=100_000)
    seed: int = 0
    data_dir: str | None = None
    culture_table: list[CultureEntry] | str | None = None
    output: OutputConfig = Field(default_factory=OutputConfig)
    cache_from: list[str] = Field(default_factory=list)
    budget_usd: float | None = Field(None, gt=0)

    _UNHASHED: ClassVar[set[str]] = {"limits", "concurrency", "output", "retry", "description", "budget_usd",
                                     "cache_from", "data_dir"}

    def _hash_of(self, exclude: set[str], backends: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> str:
        """sha256 of the model without `exclude`; each backend dict from `backends` loses its TRANSPORT_KEYS."""
        data = without_added_defaults(self.model_dump(mode="json", exclude=self._UNHASHED | exclude), ADDED_LATER)
        for b in backends(data):
            for k in TRANSPORT_KEYS:
                b.pop(k, None)
            without_added_defaults(b, BACKEND_ADDED_LATER)
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class Scenario(RunSettings):
    kind: Literal["culturepark"] = "culturepark"
    backend: BackendConfig = Field(default_factory=RemoteBackendConfig)
    sampling: Sampling = Field(default_factory=Sampling)
    roles: dict[Role, RoleConfig] = Field(default_factory=dict)
    cultures: list[str] = Field(min_length=1)
    main_contact: str = "American"
    mode: Literal["cross", "in"] = "cross"
    # v1: moderated, the original's cross-cultural prompts; v1-in: moderated, the original's in-cultural
    # prompts (two compatriots); v2: free; or a script of your own
    version: Literal["v1", "v1-in", "v2"] | ModeratorScript = "v1"
    # v1 only: after the main contact's round-7 introduction the delegate answers it (15 turns), as the
    # protocol describes; off, the conversation ends on the introduction (14 turns) as the original's code did
    delegate_answers_intro: bool = False
    rounds: int = Field(7, ge=1, le=100)
    turns: int = Field(14, ge=1, le=200)
    items: Literal["all"] | list[str] | ItemsByTopic = "all"
    conversations_per_item: int = Field(1, ge=1)
    # control: a respondent is drawn as in sample, but the delegate is not told the answer (eval fidelity --control)
    stance_policy: Literal["sample", "mode", "mean", "control"] = "sample"
    loop_detection: bool = False

    @field_validator("items", mode="before")
    @classmethod
    def _item_ids_as_strings(cls, v: object) -> object:
        if isinstance(v, list):
            return [str(x).upper().removeprefix("Q") if isinstance(x, (str, int)) else x for x in v]
        return v

    @model_validator(mode="after")
    def _intro_answer_needs_v1(self) -> Scenario:
        if self.delegate_answers_intro and (self.version != "v1" or self.rounds < 7):
            raise ValueError("delegate_answers_intro: only for version v1 with 7 or more rounds (its round 7 "
                             "ends on the main contact's introduction)")
        return self

    def backend_for(self, role: Role) -> BackendConfig:
        rc = self.roles.get(role)
        return rc.backend if rc and rc.backend else self.backend

    def sampling_for(self, role: Role) -> Sampling:
        rc = self.roles.get(role)
        return rc.sampling if rc and rc.sampling else self.sampling

    def content_hash(self) -> str:
        """Hash of what decides the conversations' content (not limits, URLs, output paths).

        `--resume` refuses a directory whose log has another hash.
        """
        return self._hash_of(set(), lambda d: [flat_backend_dump(b) for b in (
            d["backend"], *[r["backend"] for r in d["roles"].values() if r.get("backend")])])


# -- education studies (kind: education) -----------------------------------------------------

DEFAULT_LIKERT = ("The conversation was helpful for understanding the culture.",
                  "The conversation was engaging.",
                  "The tutor felt like an authentic person from that culture.",
                  "I would use a tutor like this again.")


class Arm(_Strict):
    """One condition of the study: a tutor model. Learners are never told which arm they are in."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
    tutor: str = Field(min_length=3)  # a model spec: local:gemma3-270m[+lora:DIR], openai:MODEL, gemini:MODEL
    base_url: str | None = None
    api_key_env: str | None = None


class LearnerPersona(_Strict):
    """Who a simulated learner is: an outsider with a reason to learn ({country} is filled in)."""

    culture: str = "American"
    names: list[str] = Field(default_factory=lambda: ["Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey"],
                             min_length=1)
    reasons: list[str] = Field(default_factory=lambda: [
        "is moving to {country} for a job next year",
        "has just joined a team with several colleagues from {country}",
        "has a close friend from {country} and wants to understand them better",
    ], min_length=1)


class EducationTest(_Strict):
    """The pre/post test: the 24 VSM13 items and/or WVS items, answered as a typical person would."""

    vsm13: bool = True
    wvs_items: list[str] = Field(default_factory=list)

    @field_validator("wvs_items", mode="before")
    @classmethod
    def _ids(cls, v: object) -> object:
        return [str(x).upper().removeprefix("Q") for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _not_empty(self) -> EducationTest:
        if not self.vsm13 and not self.wvs_items:
            raise ValueError("the test needs the VSM13 items or at least one WVS item")
        return self


class Questionnaire(_Strict):
    likert: list[str] = Field(default_factory=lambda: list(DEFAULT_LIKERT), min_length=1)
    free_text: str | None = "What did you learn, and what would you change about the conversation?"


def normal_code(code: str) -> str:
    """An invitation code as compared: NFKC (full-width and decomposed forms become one), case-folded,
    NFKC again (folding can undo it), trimmed; the scenario's codes and the typed ones alike."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", code).casefold()).strip()


class HumanStudy(_Strict):
    """What participants of a study with real people read, and how the web app admits them.

    Texts may use {partner} (the tutor's name, or "the conversation partner" before one is
    assigned), {country}, {arms} (how many), {assignment} (how participants were assigned, right
    for one arm too) and {ip} (what happens to IP addresses, following `log_client_addresses`).
    A field left unset is *said* to be unset on the consent page (an honest default); a study with
    people needs a researcher, a contact and an ethics approval reference before anyone is
    admitted (`study serve` admits nobody without them unless started with `--pilot`).
    """

    title: str = Field("Learning about another culture", min_length=1, max_length=120)
    researcher: str | None = None  # who runs the study (a person or group)
    contact: str | None = None  # how participants reach the researcher
    approval: str | None = None  # the ethics board's approval reference
    duration_minutes: int | None = Field(None, ge=1, le=600)  # None: estimated from the test and the chat
    purpose: str = ("This study asks whether chatting with an AI that answers in the role of a person from "
                    "another country helps people understand that country's culture.")
    ai_disclosure: str = ("{partner} is not a real person. It is an AI: a computer program (a language model) "
                          "told to answer as a person from {country} might. It can be wrong, and it can repeat "
                          "stereotypes; it does not speak for the people of {country}.")
    # {ip}: what the server does with IP addresses, following `log_client_addresses`
    data: str = ("We do not ask for your name, e-mail or anything else that identifies you, and {ip}. Your answers "
                 "and messages are stored under a random participant number. Please do not write personal "
                 "details in the chat.")
    # None: the consent page says "not stated" (as for researcher, contact and approval)
    retention: str | None = None  # how long the records are kept, and when they are deleted
    recipients: str | None = None  # who sees individual answers (and in what form results are published)
    data_controller: str | None = None  # who is responsible for the data (data protection law)
    complaints: str = ("If you are unhappy with how this study is run, contact the researcher, the ethics board "
                       "named above, or your country's data protection authority.")
    risks: str = ("The risks are small: the AI may say something wrong, stereotyped or upsetting, and answering "
                  "takes some of your time. You can stop at any moment.")
    min_age: int = Field(18, ge=0, le=120)  # participants confirm they are at least this old (0: not asked)
    withdrawal: str = ("Taking part is voluntary. You can stop at any time by closing the page. To withdraw, "
                       "use \"Withdraw from the study\" at the bottom of any page, now or after the end: your "
                       "answers are then marked as withdrawn and left out of every analysis and export. With "
                       "your recovery code you can also withdraw later, from another device.")
    consent: str = ("I have read this, I understand that my conversation partner is an AI, and I agree to take "
                    "part.")  # the statement the participant ticks
    debriefing: str = ("Thank you for taking part. {assignment}; we compare how much answers moved towards "
                       "what surveys of people in {country} report. The conversation partner was an AI, not a "
                       "person: what it said may be wrong or stereotyped, and it is no substitute for meeting "
                       "people from {country}.")
    signups_per_minute: int = Field(30, ge=1, le=100_000)  # new participants over any 60 s; more are refused
    invitation_codes: list[str] = Field(default_factory=list)  # a closed study: each code admits one person
    log_client_addresses: bool = False  # the HTTP access log (with IP addresses) is off unless turned on

    @field_validator("invitation_codes")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        codes = [c.strip() for c in v]
        normal = [normal_code(c) for c in codes]
        if any(not c for c in normal) or len(set(normal)) != len(normal):
            raise ValueError("invitation codes must be non-empty and unique (compared as the study compares "
                             "them: Unicode NFKC, case folded, spaces around removed)")
        return codes

    def missing(self) -> list[str]:
        """The fields a study with people should set before anyone is invited."""
        return [k for k in ("researcher", "contact", "approval") if getattr(self, k) is None]


class EducationScenario(RunSettings):
    """A learning study: learners talk with a tutor of one arm, then take a test (`kind: education`)."""

    kind: Literal["education"]
    cultures: list[str] = Field(min_length=1)
    arms: list[Arm] = Field(min_length=1)
    learners_per_arm: int = Field(5, ge=1, le=100_000)  # per culture and arm
    learning_turns: int = Field(10, ge=1, le=100)  # questions the learner asks
    test: EducationTest = Field(default_factory=EducationTest)
    questionnaire: Questionnaire = Field(default_factory=Questionnaire)
    learner: LearnerPersona = Field(default_factory=LearnerPersona)
    learner_backend: BackendConfig = Field(default_factory=RemoteBackendConfig)  # the simulated learner
    sampling: Sampling = Field(default_factory=Sampling)  # learning conversation
    answer_temperature: float = Field(0.7, ge=0, le=2)  # test and questionnaire answers
    answer_tries: int = Field(3, ge=1, le=10)  # an unparseable answer is asked again, then counted invalid
    max_reply_chars: int = Field(2000, ge=50)  # human study: a longer message is refused
    human: HumanStudy = Field(default_factory=HumanStudy)  # human study: texts and admission (`study serve`)

    @model_validator(mode="after")
    def _unique_arms(self) -> EducationScenario:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique (got {names})")
        return self

    def content_hash(self) -> str:
        """As for `Scenario`; an arm's base_url and api_key_env are transport keys too. The human
        study's texts and admission settings may be corrected while a study runs (each participant's
        record keeps the hash of the texts they agreed to), so they are not part of it."""
        return self._hash_of({"max_reply_chars", "human"},
                             lambda d: [flat_backend_dump(d["learner_backend"]), *d["arms"]])


class DirectScenario(Scenario):
    """The paper's direct-generation baseline (`kind: direct`): per culture and item, one request
    asks the delegate's persona for `reasons` reasons behind its seed stance — no conversation. The
    run is a run like any other, so `refine`, `export` and `eval diversity` take it as they are."""

    kind: Literal["direct"]  # type: ignore[assignment]
    reasons: int = Field(5, ge=1, le=50)
    # ours: the delegate's persona gives its reasons in the first person; paper: the original's
    # "chatbot" asked in a Question/Answer frame for 10 numbered reasons (agents/direct.py). Not in
    # the hash at its default, so files written before the field keep theirs.
    style: Literal["ours", "paper"] = "ours"

    @model_validator(mode="after")
    def _paper_asks_ten(self) -> DirectScenario:
        """The paper asked for 10 reasons: the paper style's count unless `reasons` is given."""
        if self.style == "paper" and "reasons" not in self.model_fields_set:
            self.reasons = 10
        return self


AnyScenario = Scenario | EducationScenario | DirectScenario
