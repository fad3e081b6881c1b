"""`culturepark dataset build`: runs and their refinements → a folder `datasets.load_dataset` reads.

The order of work is the failure table: every input is read and checked (sources, evaluations,
gates, held-out items) before anything is written; the folder is then built beside its target
and renamed into place, so a failed build leaves the old folder (or none) and a reader never
sees half of one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from culturepark.agents.meta import ConversationMeta
from culturepark.dataset import card, gates
from culturepark.dataset.models import (
    HELDOUT_ITEMS,
    MANIFEST,
    SPLITS,
    TRAINED_ITEMS,
    BuildSettings,
    FileEntry,
    Manifest,
    Package,
)
from culturepark.dataset.shards import CONFIGS, write_split
from culturepark.dataset.sources import Conversation, Source, load_all
from culturepark.dataset.splits import assign, heldout_items
from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write, atomic_write_json, file_sha256
from culturepark.trainers.refine.pipeline import Example
from culturepark.trainers.refine.postprocess import word_count


@dataclass(frozen=True)
class Kept:
    """A conversation the gates kept (finished, so its meta is known)."""

    source: Source
    conv: Conversation
    meta: ConversationMeta
    seen: gates.Verdicts


@dataclass
class Built:
    out: Path
    manifest: Manifest


def package() -> Package:
    """The package's version and, in a git checkout, its commit ("-dirty" with uncommitted changes)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v: str | None = version("culturepark")
    except PackageNotFoundError:
        v = None
    root = Path(__file__).resolve().parent.parent.parent
    commit = None
    if (root / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10)
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            if head.returncode == 0:
                commit = head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
        except OSError:
            commit = None
    return Package(name="culturepark", version=v, commit=commit)


def _base(meta: ConversationMeta, source: Source, conv_id: str) -> dict[str, Any]:
    d = meta.participants.delegate
    return {"source": source.entry.name, "conversation_id": conv_id, "culture": meta.culture,
            "country": meta.country, "item": meta.item_id, "item_text": meta.item_text,
            "stance_code": meta.stance_code, "stance_text": meta.stance_text, "protocol": meta.version,
            "mode": meta.mode, "model": d.model or source.entry.models.get("delegate", "")}


def _conversation_row(k: Kept) -> dict[str, Any]:
    conv, m, source, seen = k.conv, k.meta, k.source, k.seen
    judge = (seen.judge or {}).get(conv.id)
    return {"id": f"{source.entry.name}/{conv.id}", **_base(m, source, conv.id), "item_options": m.item_options,
            "stance_policy": m.stance_policy, "main_contact_culture": m.participants.main_contact.culture,
            "main_contact_model": m.participants.main_contact.model or source.entry.models.get("main_contact", ""),
            "turns": [{"speaker": s, "text": t} for s, t in conv.turns], "n_turns": len(conv.turns),
            "words": sum(word_count(t) for _, t in conv.turns),
            "self_report_code": (seen.self_report or {}).get(conv.id),
            "judge_verdict": None if judge is None else str(judge)}


def _example_row(e: Example, k: int, source: Source) -> dict[str, Any]:
    return {"id": f"{source.entry.name}/{e.source}/{k}", **_base(e.meta, source, e.source), "opinion_id": e.opinion,
            "refiner": source.entry.refiner or "", "format": source.entry.refine_format or "",
            "messages": e.messages}


def _order(row: dict[str, Any]) -> tuple[str, int, str, str, str]:
    """Rows by culture, item, source and conversation; a conversation's examples keep the refinement's
    order (the sort is stable and they were appended in it)."""
    item = row["item"]
    return (row["culture"], int(item) if item.isdigit() else 1 << 30, item, row["source"], row["conversation_id"])


def build(paths: list[Path], out: Path, settings: BuildSettings, evals: list[Path]) -> Built:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise InputError(f"dataset build: --out {out}: exists and is no dataset folder (choose another)")
    sources = load_all(paths)
    evidence = gates.find_evidence(sources, evals)
    gates.check_gates(settings.gates, sources, evidence)

    conv_reasons: list[str | None] = []
    kept: dict[str, Kept] = {}
    for s in sources:
        found = evidence.fidelity.get(s.entry.name)
        seen = gates.verdicts(found[1] if found else None)
        for c in s.conversations:
            reason = gates.conversation_reason(c, settings.gates, seen)
            conv_reasons.append(reason)
            if reason is None and c.meta is not None:
                kept[f"{s.entry.name}/{c.id}"] = Kept(s, c, c.meta, seen)
    if not kept:
        why = {k: v for k, v in gates.tally(conv_reasons, gates.CONVERSATION_REASONS).items() if v}
        raise InputError(f"dataset build: every conversation was dropped by the gates ({why})")
    held = heldout_items(settings, (k.meta.item_id for k in kept.values()))
    split = assign([(uid, k.meta.culture, k.meta.item_id) for uid, k in kept.items()], settings, set(held))

    rows: dict[str, dict[str, list[dict[str, Any]]]] = {cfg: {sp: [] for sp in SPLITS} for cfg in CONFIGS}
    for uid, k in kept.items():
        rows["conversations"][split[uid]].append(_conversation_row(k))
    example_reasons: list[str | None] = []
    dropped_with_conversation = 0
    for s in sources:
        ids = {c.id for c in s.conversations if f"{s.entry.name}/{c.id}" in kept}
        examples = s.examples(ids)
        dropped_with_conversation += max(0, s.examples_total - len(examples))  # paper: bare codes may fill in
        per_conv: Counter[str] = Counter()
        for e in examples:
            reason = gates.example_reason(e, settings.gates)
            example_reasons.append(reason)
            if reason is None:
                rows["sft"][split[f"{s.entry.name}/{e.source}"]].append(_example_row(e, per_conv[e.source], s))
            per_conv[e.source] += 1
    configs = [cfg for cfg in CONFIGS if any(rows[cfg][sp] for sp in SPLITS)]
    main = configs[0]
    trained = sorted({r["item"] for r in rows[main]["train"]}, key=lambda q: (len(q), q))
    everything = sorted({k.meta.item_id for k in kept.values()}, key=lambda q: (len(q), q))
    drops: dict[str, dict[str, int]] = {"conversations": gates.tally(conv_reasons, gates.CONVERSATION_REASONS),
             "examples": {"of_dropped_conversations": dropped_with_conversation,
                          **gates.tally(example_reasons, gates.EXAMPLE_REASONS)}}
    dates = sorted(d for s in sources for d in (s.entry.started_at, s.entry.refine_started_at) if d)
    manifest = Manifest(
        package=package(), settings=settings, dates={"first_input_started": dates[0] if dates else None,
                                                     "last_input_started": dates[-1] if dates else None},
        sources=[s.entry for s in sources], heldout_items=held, trained_items=trained,
        items_outside_train=[q for q in everything if q not in trained and q not in held],
        rows={cfg: {sp: len(rows[cfg][sp]) for sp in SPLITS} for cfg in configs}, drops=drops,
        evaluations=evidence.files(), files={})
    return Built(out, _write(out, configs, rows, manifest, sources, evidence, settings))


def _write(out: Path, configs: list[str], rows: dict[str, dict[str, list[dict[str, Any]]]], manifest: Manifest,
           sources: list[Source], evidence: gates.Evidence, settings: BuildSettings) -> Manifest:
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files: dict[str, FileEntry] = {}
        for cfg in configs:
            for sp in (sp for sp in SPLITS if rows[cfg][sp]):  # an empty split has no shard (datasets refuses one)
                for rel, n in write_split(tmp, cfg, sp, sorted(rows[cfg][sp], key=_order), settings.format,
                                          settings.shard_rows):
                    files[rel] = FileEntry(sha256=file_sha256(tmp / rel), bytes=(tmp / rel).stat().st_size, rows=n)
        fmt = _sft_format(sources)
        if "sft" in configs and fmt is not None:  # what `train lora` reads beside an SFT file (its prompt style)
            atomic_write_json(tmp / "sft" / "format.json", {**fmt, "examples": sum(manifest.rows["sft"].values())})
            files["sft/format.json"] = FileEntry(sha256=file_sha256(tmp / "sft" / "format.json"),
                                                 bytes=(tmp / "sft" / "format.json").stat().st_size)
        atomic_write(tmp / HELDOUT_ITEMS, "".join(f"{q}\n" for q in manifest.heldout_items).encode())
        atomic_write(tmp / TRAINED_ITEMS, "".join(f"{q}\n" for q in manifest.trained_items).encode())
        text = card.render(card.facts(manifest, configs, rows, sources, evidence))
        atomic_write(tmp / "README.md", text.encode())
        for name in ("README.md", HELDOUT_ITEMS, TRAINED_ITEMS):
            files[name] = FileEntry(sha256=file_sha256(tmp / name), bytes=(tmp / name).stat().st_size)
        manifest = manifest.model_copy(update={"files": dict(sorted(files.items()))})
        manifest.write(tmp / MANIFEST)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _sft_format(sources: list[Source]) -> dict[str, str] | None:
    """The SFT export's format, prompt style and template, as refine records them in `sft/format.json`,
    when every refinement exported alike (None otherwise: `train lora --prompt-style` then says it)."""
    kinds = {(c.export.format, c.export.template) for s in sources if (c := s.refine_config) is not None}
    if len(kinds) != 1:
        return None
    fmt, template = kinds.pop()
    return {"format": fmt, "prompt_style": "paper" if fmt == "paper" else "persona", "template": str(template)}


def _swap(tmp: Path, out: Path) -> None:
    """The new folder in place of the old in two renames (the old one is removed after)."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
