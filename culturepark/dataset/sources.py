"""What a build reads: each RUN_OR_REFINE_DIR as a run (its conversations) and, where there is
one, its refinement (SFT examples with their provenance), plus the digests the manifest pins.

A refine directory names its source run in its header; a run directory's refinement is found
beside it at `RUN/refined` (refine's default output). Everything is checked before anything is
written: a directory that is neither, a run with no CulturePark conversations, a refinement whose
SFT file no longer matches its opinions, the same run given twice — each is bad input (exit 2).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from culturepark.agents.meta import ConversationMeta, read_meta
from culturepark.dataset.models import SourceEntry
from culturepark.engine.errors import InputError
from culturepark.engine.export import conversation_rows, ordered_conversations
from culturepark.engine.files import file_sha256
from culturepark.engine.log import LOG_NAME, LogReader, log_files, read_header
from culturepark.engine.records import RunHeader, TurnRecord
from culturepark.trainers.refine.config import RefineConfig
from culturepark.trainers.refine.pipeline import Example, refined_examples
from culturepark.trainers.summaries import REFINE_SUMMARY, RefineSummary

REFINE_FILES = (LOG_NAME, "opinions.jsonl", REFINE_SUMMARY, "sft/openai_chat.jsonl")


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation of a run as the dataset sees it (failed ones too: the gates count them)."""

    id: str
    status: str
    turns: list[tuple[str, str]]  # (speaker, text)
    meta: ConversationMeta | None  # None: unfinished (a partial run's conversation has no meta yet)


@dataclass
class Source:
    entry: SourceEntry
    run_dir: Path
    refine_dir: Path | None
    conversations: list[Conversation]
    refine_config: RefineConfig | None
    refine_summary: RefineSummary | None
    run_cost_usd: float | None
    refine_cost_usd: float | None
    examples_total: int  # the refinement's SFT examples before the gates (0 without one)
    local_endpoint: bool  # a model was served on this machine (the simulator, or a local server)

    def examples(self, keep: set[str]) -> list[Example]:
        """The refinement's SFT examples over the kept conversations (none without a refinement)."""
        if self.refine_dir is None or self.refine_config is None:
            return []
        return refined_examples(self.run_dir, self.refine_dir, self.refine_config, lambda cid: cid in keep)


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def files_digest(root: Path, names: list[str]) -> str:
    """One sha256 over (name, file sha256) pairs: what the manifest pins of an input directory."""
    h = hashlib.sha256()
    for name in names:
        h.update(orjson.dumps([name, file_sha256(root / name)]))
    return h.hexdigest()


def run_digest(run_dir: Path) -> str:
    return files_digest(run_dir, [str(p.relative_to(run_dir)) for p in log_files(run_dir)])


def refine_digest(refine_dir: Path) -> str:
    return files_digest(refine_dir, list(REFINE_FILES))


def _header(path: Path) -> RunHeader | None:
    return read_header(path / LOG_NAME) if (path / LOG_NAME).exists() else None


def locate(path: Path) -> tuple[Path, Path | None]:
    """(run directory, refine directory or None) for one RUN_OR_REFINE_DIR."""
    if not path.is_dir():
        raise InputError(f"dataset build: {path}: no such directory")
    header = _header(path)
    if header is None:
        raise InputError(f"dataset build: {path}: no {LOG_NAME} (give a run directory or a refine directory)")
    if header.stage == "refine":
        source = header.details.get("source")
        run = Path(str(source)) if source else None
        if run is None or _header(run) is None:
            raise InputError(f"dataset build: {path}: its source run {source} is not here")
        return run, path
    if header.stage != "run":
        raise InputError(f"dataset build: {path}: a {header.stage} directory, not a run or a refinement")
    beside = path / "refined"
    return path, beside if (beside / REFINE_SUMMARY).exists() else None


def _conversations(run_dir: Path) -> list[Conversation]:
    out = []
    with ordered_conversations(run_dir) as run:
        for row in conversation_rows(run.conversations()):
            meta = read_meta(row["meta"], row["id"]) if row["meta"] else None
            if row["status"] == "withdrawn":
                continue
            if meta is None and row["status"] != "done":  # unfinished: no end record, no meta yet
                out.append(Conversation(row["id"], row["status"], [], None))
                continue
            if not isinstance(meta, ConversationMeta):
                raise InputError(f"dataset build: {run_dir}: conversation {row['id']} is no CulturePark "
                                 "conversation (an education study?)")
            out.append(Conversation(row["id"], row["status"], [(str(t["speaker"]), str(t["text"]))
                                                               for t in row["turns"]], meta))
    if not out:
        raise InputError(f"dataset build: {run_dir}: no conversations")
    return out


def _requests(run_dir: Path) -> tuple[str, float | None]:
    """The run's prompts hash (sha256 over every turn's request hash, by conversation and turn: the
    same prompts give the same hash whatever order the scheduler sent them in) and its cost."""
    hashes, cost, priced = [], 0.0, False
    for rec in LogReader(run_dir).records():
        if isinstance(rec, TurnRecord):
            hashes.append((rec.conversation_id, rec.index, rec.request_hash))
            if rec.cost_usd is not None:
                cost, priced = cost + rec.cost_usd + (rec.rejected_cost_usd or 0.0), True
    return hashlib.sha256(orjson.dumps(sorted(hashes))).hexdigest(), round(cost, 6) if priced else None


def _check_export(run_dir: Path, refine_dir: Path, config: RefineConfig) -> int:
    """The refinement's SFT file must be what its opinions give (else it was edited or is partial);
    returns how many examples it holds."""
    sft = refine_dir / "sft" / "openai_chat.jsonl"
    if not sft.exists():
        raise InputError(f"dataset build: {refine_dir}: no sft/openai_chat.jsonl (an unfinished refinement?)")
    written = [orjson.loads(line)["messages"] for line in sft.read_bytes().splitlines() if line.strip()]
    if written != [e.messages for e in refined_examples(run_dir, refine_dir, config)]:
        raise InputError(f"dataset build: {sft}: does not match the refinement's opinions.jsonl "
                         "(edited after refine? run refine again)")
    return len(written)


def load(path: Path, name: str) -> Source:
    run_dir, refine_dir = locate(path)
    header = _header(run_dir)
    assert header is not None
    conversations = _conversations(run_dir)
    prompts, run_cost = _requests(run_dir)
    models = {role: f"{b.get('kind', '?')}:{b.get('model', '?')}" for role, b in sorted(header.backends.items())}
    entry = SourceEntry(
        name=name, run_dir=str(run_dir.resolve()), run_name=header.run_name, scenario_hash=header.scenario_hash,
        run_digest=run_digest(run_dir), started_at=_iso(header.started_at),
        protocol=sorted({c.meta.version for c in conversations if c.meta}),
        modes=sorted({c.meta.mode for c in conversations if c.meta}),
        models=models, prompts_hash=prompts, conversations=len(conversations))
    config = summary = refine_cost = None
    total = 0
    if refine_dir is not None:
        rh = _header(refine_dir)
        if rh is None or not (refine_dir / REFINE_SUMMARY).exists():
            raise InputError(f"dataset build: {refine_dir}: no {REFINE_SUMMARY} (an unfinished refinement?)")
        try:
            config = RefineConfig.model_validate(rh.details.get("config") or {})
        except ValueError as exc:
            raise InputError(f"dataset build: {refine_dir}: its header's refine config does not read: "
                             f"{str(exc).splitlines()[0]}") from exc
        summary = RefineSummary.read(refine_dir / REFINE_SUMMARY)
        total = _check_export(run_dir, refine_dir, config)
        refiner = rh.backends.get("refiner", {})
        entry = entry.model_copy(update={
            "refine_dir": str(refine_dir.resolve()), "refine_hash": rh.scenario_hash,
            "refine_digest": refine_digest(refine_dir), "refine_started_at": _iso(rh.started_at),
            "refiner": f"{refiner.get('kind', '?')}:{refiner.get('model', '?')}",
            "refine_format": config.export.format})
        refine_cost = _requests(refine_dir)[1]
    local = any(_local(b.get("base_url")) for b in header.backends.values())
    return Source(entry, run_dir, refine_dir, conversations, config, summary, run_cost, refine_cost, total, local)


def _local(url: object) -> bool:
    from urllib.parse import urlparse

    return isinstance(url, str) and urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


def load_all(paths: list[Path]) -> list[Source]:
    """Every input, named by its directory (a repeated name gets -2, -3 in the order given)."""
    seen_runs: dict[Path, Path] = {}
    names: dict[str, int] = {}
    sources = []
    for path in paths:
        run_dir, _ = locate(path)
        key = run_dir.resolve()
        if key in seen_runs:
            raise InputError(f"dataset build: {path} and {seen_runs[key]} are the same run ({run_dir})")
        seen_runs[key] = path
        base = run_dir.resolve().name
        names[base] = names.get(base, 0) + 1
        sources.append(load(path, base if names[base] == 1 else f"{base}-{names[base]}"))
    return sources
