"""`culturepark refine`: finished conversations → verified, de-duplicated SFT data.

Two engine passes share one run directory and one log, so a refinement killed halfway
resumes without paying again for calls that finished:
  1. extract — one request per source conversation (the delegate's opinions, a list);
  2. verify  — one small pipeline per opinion: verify → (contradict) rewrite → re-verify
     the *rewritten* text. An opinion whose calls fail is dropped with that reason; it
     never takes other opinions down with it.
Then, locally: first person, too-short filter, near-duplicate removal, export. Every
extracted opinion ends `kept` or with exactly one `drop_reason` in `opinions.jsonl`.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, JsonValue

from culturepark.agents import paper_format
from culturepark.agents.meta import ConversationMeta, read_meta
from culturepark.engine.embeddings import Embedder, embed_unique
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import InputError, LogWriteError, RequestFailed
from culturepark.engine.export import assemble, conversation_rows, ordered_conversations
from culturepark.engine.files import atomic_write_json, atomic_write_jsonl
from culturepark.engine.log import LOG_NAME, RunLog, read_header
from culturepark.engine.records import EndRecord, RunHeader, TurnRecord
from culturepark.engine.scheduler import ConversationSpec, ResumeState, Scheduler, SchedulerConfig, Turn, TurnRequest
from culturepark.engine.stage import Stage
from culturepark.scenarios.endpoints import make_embedder, make_endpoints
from culturepark.scenarios.loader import scenario_of
from culturepark.scenarios.schema import BackendConfig, DirectScenario, RemoteBackendConfig, Scenario
from culturepark.trainers.refine import prompts
from culturepark.trainers.refine.config import RefineConfig
from culturepark.trainers.refine.dedup import cluster, representatives
from culturepark.trainers.refine.postprocess import first_person, word_count
from culturepark.trainers.sft import check_openai_chat, write_sft
from culturepark.trainers.summaries import REFINE_SUMMARY, RefineSummary

ROLE = "refiner"
QUESTION_VARIANTS = [
    "{question}",
    "What is your opinion on this? {question}",
    "As someone from {culture_phrase}, how do you see this? {question}",
    "Please share your view, with your reasons: {question}",
    "{question} Tell me what you think and why.",
]


@dataclass(slots=True)
class Source:
    id: str
    meta: ConversationMeta
    transcript: str
    names: list[str]
    # (speaker name, text) in order: what per-utterance extraction reads
    utterances: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Opinion:
    id: str
    source: Source
    extracted_text: str
    text: str = ""
    verdict: str | None = None
    rewritten: str | None = None
    verdict_after_rewrite: str | None = None
    cluster: str | None = None
    kept: bool = False
    drop_reason: str | None = None
    speaker: str = "delegate"  # the role whose opinion this is

    def record(self) -> dict[str, Any]:
        m = self.source.meta
        return {"opinion_id": self.id, "conversation_id": self.source.id, "speaker": self.speaker,
                "culture": m.culture, "stance_code": m.stance_code,
                "item_id": m.item_id, "stance_text": m.stance_text,
                "extracted_text": self.extracted_text, "text": self.text, "verdict": self.verdict,
                "rewritten": self.rewritten, "verdict_after_rewrite": self.verdict_after_rewrite,
                "cluster": self.cluster, "kept": self.kept, "drop_reason": self.drop_reason}


def load_sources(run_dir: Path) -> tuple[list[Source], str]:
    """Finished conversations of a run (from its log, so a partial run works too) and their hash.
    The log is read in streaming order (`ordered_conversations`); only finished transcripts are kept."""
    if not (run_dir / LOG_NAME).exists():
        raise InputError(f"refine: no {LOG_NAME} in {run_dir} (not a run directory)")
    sources, digest = [], hashlib.sha256()
    with ordered_conversations(run_dir) as run:
        for row in conversation_rows(run.conversations()):
            meta = read_meta(row["meta"], row["id"])
            if row["status"] != "done" or not isinstance(meta, ConversationMeta):
                continue
            names = [meta.participants.delegate.name, meta.participants.main_contact.name, "Moderator"]
            transcript = "\n".join(f"{t['speaker']}: {t['text']}" for t in row["turns"])
            sources.append(Source(row["id"], meta, transcript, names,
                                  [(str(t["speaker"]), str(t["text"])) for t in row["turns"]]))
            digest.update(orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
    return sources, digest.hexdigest()[:16]


class RefineCall(BaseModel):
    """The meta of refinement's own conversations: one extraction, or one opinion's verification."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    stage: Literal["extract", "verify"]
    source: str  # the source conversation's id
    speaker: str | None = None  # extract: whose opinions (delegate, or main_contact of an in-cultural run)
    utterance: int | None = None  # extract per utterance: which turn of the conversation

    def meta(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class RefinePolicy:
    """`TurnPolicy` for both passes; a pure function of (spec, turns) like every policy."""

    def __init__(self, config: RefineConfig, rendering: prompts.Rendering, sources: dict[str, Source]) -> None:
        self.config = config
        self.rendering = rendering
        self.sources = sources
        self.opinions: dict[str, str] = {}  # opinion id -> text, filled after the extract pass

    def next_turn(self, conv: ConversationSpec, turns: Sequence[Turn]) -> TurnRequest | None:
        call = RefineCall.model_validate(conv.meta)
        src = self.sources[call.source]
        c, r = self.config, self.rendering
        if call.stage == "extract":
            if turns:
                return None
            transcript = src.transcript if call.utterance is None else \
                "{}: {}".format(*src.utterances[call.utterance])
            req = prompts.extract_request(src.meta, transcript, r, c.extract_max_tokens, call.speaker or "delegate",
                                          utterance=call.utterance is not None)
            return TurnRequest("extract", ROLE, req, self._valid_opinions(src))
        opinion = self.opinions[conv.id]
        if not turns:
            return TurnRequest("verify", ROLE, prompts.verify_request(src.meta, opinion, r, c.verify_max_tokens),
                               _valid_verdict)
        if len(turns) == 1:
            if not c.rewrite or prompts.parse_verdict(turns[0].text) != "contradict":
                return None
            req = prompts.rewrite_request(src.meta, opinion, r, c.rewrite_max_tokens, c.rewrite_temperature,
                                          seed=c.seed)
            return TurnRequest("rewrite", ROLE, req, self._valid_rewrite(src, opinion))
        if len(turns) == 2:
            rewritten = prompts.parse_rewrite(turns[1].text, src.names) or ""
            return TurnRequest("reverify", ROLE,
                               prompts.verify_request(src.meta, rewritten, r, c.verify_max_tokens), _valid_verdict)
        return None

    def _valid_opinions(self, src: Source) -> Callable[[str], str | None]:
        def check(text: str) -> str | None:
            parsed = prompts.parse_opinions(text, self.rendering, src.names)
            return None if parsed is not None else "unparseable_opinions"
        return check

    @staticmethod
    def _valid_rewrite(src: Source, opinion: str) -> Callable[[str], str | None]:
        def check(text: str) -> str | None:
            new = prompts.parse_rewrite(text, src.names)
            if not new:
                return "empty_rewrite"
            return "rewrite_unchanged" if new.strip().lower() == opinion.strip().lower() else None
        return check


def _valid_verdict(text: str) -> str | None:
    return None if prompts.parse_verdict(text) else "unparseable_verdict"


Turns = dict[str, list[TurnRecord]]
Ends = dict[str, EndRecord]


def _collect(run_dir: Path) -> tuple[Turns, Ends]:
    """Turns (in order) and final end record per conversation id, read back from the log."""
    convs = assemble(run_dir).conversations
    return ({cid: c.ordered_turns() for cid, c in convs}, {cid: c.end for cid, c in convs if c.end is not None})


EMBEDDINGS_CACHE = "embeddings.jsonl"


def _embedder(config: RefineConfig, backend: BackendConfig, out: Path) -> Embedder:
    """Remote embeddings share the refiner's limits and retries; paid-for vectors are kept in `out`."""
    d = config.dedup
    served = backend.base_url if isinstance(backend, RemoteBackendConfig) else None
    return make_embedder(d.embeddings, d.embeddings_base_url or served, d.embeddings_model,
                         d.embeddings_api_key_env, d.embeddings_dimensions, config.limits, config.retry,
                         out / EMBEDDINGS_CACHE, d.embeddings_batch_size)


@dataclass
class RefineResult:
    out: Path
    summary: RefineSummary | None  # None when the refinement stopped (`error` says why)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        s = self.summary
        return 0 if not self.error and s is not None and s.extract_failed == 0 and s.call_failed == 0 else 1

    def to_json(self) -> dict[str, JsonValue]:
        """What `refine --json` prints: the summary, or the error that stopped it."""
        return self.summary.to_json() if self.summary is not None else {"error": self.error}


def source_backend(run_dir: Path) -> BackendConfig | None:
    """The delegate's backend of the source run (None: its header records no conversation scenario)."""
    log = Path(run_dir) / LOG_NAME
    scenario = scenario_of(read_header(log) if log.exists() else None, str(log))
    return scenario.backend_for("delegate") if isinstance(scenario, Scenario | DirectScenario) else None


async def refine_async(run_dir: Path, out: Path, config: RefineConfig, resume: bool = False,
                       retry_failed: bool = False, say: Callable[[str], None] | None = None,
                       check_reachability: bool = True) -> RefineResult:
    say = say or (lambda _m: None)
    run_dir, out = Path(run_dir), Path(out)
    sources, source_hash = load_sources(run_dir)
    generator = source_backend(run_dir)
    backend = config.backend or generator
    if backend is None:
        raise InputError(f"refine: {run_dir} names no backend; give one with --scenario or --base-url/--model")
    self_refined = generator is not None and (backend.provider, backend.model) == (generator.provider, generator.model)
    if self_refined:
        say(f"notice: the refiner is the model that generated the conversations ({backend.provider}:{backend.model}); "
            "the paper refined with a GPT-4-class model (--model or the refine config's backend)")
    config = config.model_copy(update={"backend": backend})
    endpoints = make_endpoints({ROLE: backend}, config.limits, config.retry, config.seed, say=say,
                               concurrency=config.concurrency)
    by_id = {s.id: s for s in sources}
    policy = RefinePolicy(config, backend.rendering, by_id)
    t0 = time.monotonic()
    async with Stage.in_dir(endpoints, out, resume, config.content_hash(source_hash), say=say,
                            what="refine config/source", check=check_reachability) as stage:
        log = stage.start(RunHeader(
            stage="refine", started_at=time.time(), backends={ROLE: endpoints[ROLE].backend.describe()},
            details={"source": str(run_dir), "source_hash": source_hash, "config": config.model_dump(mode="json")}))
        try:
            opinions, extract_failed = await _calls(policy, endpoints, log, stage.resume_state, out, retry_failed)
        except LogWriteError as exc:
            return RefineResult(out, None, str(exc))
        finally:
            log.close()
        try:
            summary = await _finish(out, config, sources, opinions, extract_failed)  # still holding the lock
        except RequestFailed as exc:  # embeddings gave up: the calls so far are kept, --resume goes on
            error = f"de-duplication: embeddings failed: {exc}"
            return RefineResult(out, None, error)
    summary.requests = endpoints[ROLE].stats.requests
    summary.elapsed_s = round(time.monotonic() - t0, 2)
    summary.refiner_is_generator = self_refined
    summary.write(out / REFINE_SUMMARY)
    return RefineResult(out, summary)


async def _finish(out: Path, config: RefineConfig, sources: list[Source], opinions: list[Opinion],
                  extract_failed: Counter[str]) -> RefineSummary:
    """The local steps after the calls: verdicts, post-processing, de-duplication, SFT export."""
    turns, ends = _collect(out)
    _verdicts(opinions, turns, ends, config)
    _postprocess(opinions, config)
    assert config.backend is not None
    embedder_name, embedded = await _dedup(opinions, config, config.backend, out)
    if config.export.format == "paper":
        examples, beyond = _paper_examples(sources, opinions, config.export.paper_passes)
    else:
        examples, beyond = _examples(opinions, config), 0
    paths = write_sft(out / "sft", examples, config.export.template)
    atomic_write_json(out / "sft" / "format.json", {
        "format": config.export.format, "prompt_style": "paper" if config.export.format == "paper" else "persona",
        "template": config.export.template, "examples": len(examples)})
    summary = RefineSummary(
        **_summary(sources, opinions, extract_failed, len(examples)), export_format=config.export.format,
        opinions_beyond_paper_passes=beyond, extract_speakers=config.extract_speakers, embeddings=embedder_name,
        dedup=config.dedup.model_dump(mode="json"), openai_format_check=check_openai_chat(paths["openai_chat"]),
        first_person=config.first_person, texts_embedded_now=embedded,
        verify=config.verify, extract_per=config.extract_per)
    atomic_write_jsonl(out / "opinions.jsonl", (o.record() for o in opinions))
    return summary


async def _calls(policy: RefinePolicy, endpoints: dict[str, Endpoint], log: RunLog, resume: ResumeState | None,
                 out: Path, retry_failed: bool) -> tuple[list[Opinion], Counter[str]]:
    """The two engine passes: extract per source conversation, then verify/rewrite per opinion."""
    sched_cfg = SchedulerConfig(concurrency=policy.config.concurrency)
    sources = list(policy.sources.values())
    extract_specs = [ConversationSpec(_extract_id(s.id, role, u), i,
                                      RefineCall(stage="extract", source=s.id, speaker=role, utterance=u).meta())
                     for i, (s, role, u) in enumerate(_extractions(sources, policy.config))]
    await Scheduler(policy, endpoints, log, sched_cfg).run(extract_specs, resume, retry_failed)
    turns, ends = _collect(out)
    opinions, extract_failed = _opinions(_extractions(sources, policy.config), turns, ends, policy.rendering)
    policy.opinions = {o.id: o.extracted_text for o in opinions}
    if not policy.config.verify:  # the "Generate" ablation: no verification calls at all
        return opinions, extract_failed
    verify_specs = [ConversationSpec(o.id, i, RefineCall(stage="verify", source=o.source.id).meta())
                    for i, o in enumerate(opinions) if not o.drop_reason]
    await Scheduler(policy, endpoints, log, sched_cfg).run(verify_specs, resume, retry_failed)
    return opinions, extract_failed


def _extractions(sources: list[Source], config: RefineConfig) -> list[tuple[Source, str, int | None]]:
    """(source, speaker, utterance) to extract: the delegate, and with `extract_speakers: both` the
    compatriot of an in-cultural run too (who shares the stance, so their opinions are data); per
    conversation (utterance None) or, with `extract_per: utterance`, per turn that speaker said."""
    both = config.extract_speakers == "both"
    out: list[tuple[Source, str, int | None]] = []
    for s in sources:
        for role in (("delegate", "main_contact") if both and s.meta.mode == "in" else ("delegate",)):
            if config.extract_per == "conversation":
                out.append((s, role, None))
                continue
            name = s.meta.participant(role).name
            out += [(s, role, k) for k, (who, _) in enumerate(s.utterances) if who == name]
    return out


def _extract_id(source_id: str, role: str, utterance: int | None = None) -> str:
    base = f"extract|{source_id}" if role == "delegate" else f"extract|{source_id}|{role}"
    return base if utterance is None else f"{base}|u{utterance}"


def _opinions(extractions: list[tuple[Source, str, int | None]], turns: Turns, ends: Ends,
              rendering: prompts.Rendering) -> tuple[list[Opinion], Counter[str]]:
    opinions: list[Opinion] = []
    failed: Counter[str] = Counter()
    for s, role, u in extractions:
        cid = _extract_id(s.id, role, u)
        end = ends.get(cid)
        if end is None or end.status != "done":
            failed[(end.reason if end else None) or "not_run"] += 1
            continue
        answer = turns[cid][0]
        texts = prompts.parse_opinions(answer.text, rendering, s.names) or []
        # an answer stopped by max_tokens ends in a line cut short: it is dropped, counted, never verified
        cut = len(texts) - 1 if answer.finish_reason == "length" else None
        prefix = (f"verify|{s.id}|" if role == "delegate" else f"verify|{s.id}|{role}|") + \
            ("" if u is None else f"u{u}|")
        opinions += [Opinion(f"{prefix}{j}", s, t, text=t, speaker=role,
                             drop_reason="cut_by_max_tokens" if j == cut else None)
                     for j, t in enumerate(texts)]
    return opinions, failed


def _verdicts(opinions: list[Opinion], turns: Turns, ends: Ends, config: RefineConfig) -> None:
    if not config.verify:  # nothing was asked: every extracted opinion goes on as extracted
        return
    for o in opinions:
        if o.drop_reason:  # dropped before any verification call
            continue
        end = ends.get(o.id)
        ts = turns.get(o.id, [])
        if ts:
            o.verdict = prompts.parse_verdict(ts[0].text)
        if len(ts) >= 2:
            o.rewritten = prompts.parse_rewrite(ts[1].text, o.source.names)
        if len(ts) >= 3:
            o.verdict_after_rewrite = prompts.parse_verdict(ts[2].text)
        if end is None or end.status != "done":
            stage = ["verify", "rewrite", "reverify"][min(len(ts), 2)]
            o.drop_reason = f"{stage}_failed:{(end.reason if end else None) or 'not_run'}"
        elif o.verdict == "irrelevant":
            o.drop_reason = "irrelevant"
        elif o.verdict == "contradict":
            if o.rewritten is None:
                o.drop_reason = "contradict"
            elif o.verdict_after_rewrite != "entail" and config.keep_rewritten_only_if_entail:
                o.drop_reason = f"rewrite_{o.verdict_after_rewrite}"
            else:
                o.text = o.rewritten


def _postprocess(opinions: list[Opinion], config: RefineConfig) -> None:
    for o in opinions:
        if o.drop_reason:
            continue
        if config.first_person == "rule":
            o.text = first_person(o.text, o.source.names[:2])
        if word_count(o.text) < config.min_words:
            o.drop_reason = "too_short"


async def _dedup(opinions: list[Opinion], config: RefineConfig, backend: BackendConfig,
                 out: Path) -> tuple[str | None, int | None]:
    """Cluster near-duplicates per group and keep each cluster's central member. Returns the
    embedder's name and how many texts it sent to a provider now (None: local, nothing sent)."""
    live = [o for o in opinions if not o.drop_reason]
    if not config.dedup.enabled or not live:
        for o in live:
            o.kept = True
        return None, None
    embedder = _embedder(config, backend, out)
    try:
        vecs = await embed_unique(embedder, [o.text for o in live])
    finally:
        await embedder.aclose()
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, o in enumerate(live):
        m = o.source.meta
        key = (m.culture,) + ((m.item_id,) if config.dedup.scope == "culture_item" else ())
        groups.setdefault(key, []).append(i)
    for key, idx in groups.items():
        sub = vecs[np.asarray(idx)]
        labels = cluster(sub, config.dedup, config.seed)
        reps = representatives(sub, labels, [len(live[i].text) for i in idx] if config.dedup.keep == "longest"
                               else None)
        for j, i in enumerate(idx):
            o = live[i]
            o.cluster = f"{'/'.join(str(k) for k in key)}#{int(labels[j])}"
            if reps[int(labels[j])] == j:
                o.kept = True
            else:
                o.drop_reason = "duplicate"
    return embedder.name, getattr(embedder, "embedded_texts", None)


@dataclass(frozen=True, slots=True)
class Example:
    """One SFT example and where it came from: the conversation whose kept opinion it teaches (the
    paper format's bare-code answer for an item with no kept opinion has no opinion: `opinion` None).
    The export writes `messages`; `culturepark dataset build` also keeps the provenance."""

    messages: list[dict[str, str]]
    meta: ConversationMeta
    source: str  # the conversation id (for a bare-code answer: the first conversation of the item)
    opinion: str | None


def _examples(opinions: list[Opinion], config: RefineConfig) -> list[list[dict[str, str]]]:
    return [e.messages for e in _example_rows(opinions, config)]


def _example_rows(opinions: list[Opinion], config: RefineConfig) -> list[Example]:
    e = config.export
    passes = e.augment_passes if e.augment else 1
    out = []
    for o in opinions:
        if not o.kept:
            continue
        m = o.source.meta
        person = m.participants.delegate
        for p in range(passes):
            question = QUESTION_VARIANTS[p % len(QUESTION_VARIANTS)].format(
                question=m.item_question or m.item_text, culture_phrase=person.culture_phrase)
            msgs = []
            if e.system_prompt:
                msgs.append({"role": "system", "content": e.system_prompt.format(
                    person=person.person, culture_phrase=person.culture_phrase, culture=m.culture)})
            msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": o.text}]
            out.append(Example(msgs, m, o.source.id, o.id))
    return out


def _paper_examples(sources: list[Source], opinions: list[Opinion], passes: int
                    ) -> tuple[list[list[dict[str, str]]], int]:
    rows, beyond = _paper_example_rows(sources, opinions, passes)
    return [e.messages for e in rows], beyond


def _paper_example_rows(sources: list[Source], opinions: list[Opinion], passes: int) -> tuple[list[Example], int]:
    """The original's training set: per (culture, item), pass t answers with the t-th kept opinion
    ("<code>. <opinion>", the code of that opinion's conversation); an item none of whose opinions
    was kept is answered with its bare code (the most common stance code among its conversations)
    in every pass. Returns the examples and how many kept opinions fell beyond the last pass."""
    groups: dict[tuple[str, str], tuple[Source, Counter[int], list[Opinion]]] = {}
    for s in sources:
        groups.setdefault((s.meta.culture, s.meta.item_id), (s, Counter(), []))[1][s.meta.stance_code] += 1
    for o in opinions:
        if o.kept:
            groups[(o.source.meta.culture, o.source.meta.item_id)][2].append(o)
    out: list[Example] = []
    for t in range(passes):
        for first, codes, kept in groups.values():
            meta = first.meta
            if kept and t >= len(kept):
                continue
            reply = (paper_format.answer(kept[t].source.meta.stance_code, kept[t].text) if kept
                     else paper_format.answer(min(codes, key=lambda c: (-codes[c], c))))
            messages = [{"role": "system", "content": paper_format.chatbot_system(meta.culture)},
                        {"role": "user", "content": paper_format.multiple_choice(paper_format.item_from_meta(meta))},
                        {"role": "assistant", "content": reply}]
            out.append(Example(messages, kept[t].source.meta, kept[t].source.id, kept[t].id) if kept
                       else Example(messages, meta, first.id, None))
    return out, sum(max(0, len(kept) - passes) for _, _, kept in groups.values())


def merged_paper_examples(refinements: list[tuple[Path, Path]], passes: int) -> list[list[dict[str, str]]]:
    """The original's training set over several refinements at once (the chain's v1 and v2): their
    kept opinions merged per (culture, item) first, then `passes` passes over the merged lists, so an
    item gets at most `passes` examples (not `passes` per version). `refinements`: (run_dir, refine_dir)."""
    sources: list[Source] = []
    kept: list[Opinion] = []
    for run_dir, refine_dir in refinements:
        found, _hash = load_sources(Path(run_dir))
        by_id = {s.id: s for s in found}  # conversation ids repeat across runs: matched within each
        sources += found
        for line in (Path(refine_dir) / "opinions.jsonl").read_bytes().splitlines():
            rec = orjson.loads(line)
            if rec.get("kept") and rec["conversation_id"] in by_id:
                kept.append(Opinion(rec["opinion_id"], by_id[rec["conversation_id"]], rec["extracted_text"],
                                    text=rec["text"], kept=True))
    return _paper_examples(sources, kept, passes)[0]


def refined_examples(run_dir: Path, refine_dir: Path, config: RefineConfig,
                     keep: Callable[[str], bool] = lambda _id: True) -> list[Example]:
    """A finished refinement's SFT examples with their provenance, rebuilt from its kept opinions by
    the export it ran with, over the source conversations `keep` accepts (all of them: the examples
    of `sft/openai_chat.jsonl`, in its order). `culturepark dataset build` gates conversations with
    `keep`, so a dropped conversation takes its examples (and, in the paper format, its share of an
    item's bare-code answer) with it."""
    found, _hash = load_sources(Path(run_dir))
    sources = [s for s in found if keep(s.id)]
    by_id = {s.id: s for s in sources}
    kept: list[Opinion] = []
    for line in (Path(refine_dir) / "opinions.jsonl").read_bytes().splitlines():
        rec = orjson.loads(line)
        if rec.get("kept") and rec["conversation_id"] in by_id:
            kept.append(Opinion(rec["opinion_id"], by_id[rec["conversation_id"]], rec["extracted_text"],
                                text=rec["text"], kept=True, speaker=rec.get("speaker") or "delegate"))
    if config.export.format == "paper":
        return _paper_example_rows(sources, kept, config.export.paper_passes)[0]
    return _example_rows(kept, config)


def _summary(sources: list[Source], opinions: list[Opinion], extract_failed: Counter[str],
             exported: int) -> dict[str, Any]:
    """The counts of a refinement, every extracted opinion accounted for (the head of `RefineSummary`)."""
    drops = Counter(o.drop_reason for o in opinions if o.drop_reason)
    call_failed = sum(v for k, v in drops.items() if "_failed:" in k)
    s: dict[str, Any] = {
        "conversations": len(sources),
        "extract_failed": sum(extract_failed.values()),
        "extract_failures_by_reason": dict(extract_failed),
        "extracted": len(opinions),
        "entail": sum(o.verdict == "entail" for o in opinions),
        "contradict": sum(o.verdict == "contradict" for o in opinions),
        "irrelevant": sum(o.verdict == "irrelevant" for o in opinions),
        "rewritten": sum(o.rewritten is not None for o in opinions),
        "rewritten_entail": sum(o.verdict_after_rewrite == "entail" for o in opinions),
        "call_failed": call_failed,
        "too_short": drops.get("too_short", 0),
        "cut_by_max_tokens": drops.get("cut_by_max_tokens", 0),
        "deduplicated_removed": drops.get("duplicate", 0),
        "kept": sum(o.kept for o in opinions),
        "exported": exported,
        "drop_reasons": dict(drops),
    }
    s["accounted"] = s["kept"] + sum(drops.values()) == s["extracted"]
    return s
