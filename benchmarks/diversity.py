"""`culturepark eval diversity`: the paper's diversity gain of new data over seed data.

gain = mean over new samples of the distance to the *nearest* reference sample: Euclidean
distance between the embeddings, as the paper (`diversity_gain`), and cosine distance beside
it (`diversity_gain_cosine`). Each distinct text is embedded once (the original re-embedded
both texts for every pair), and the nearest-neighbour search is one matrix product per block.

A run directory is read as the texts it generated (`run_texts`): a conversation run's delegate
turns, a direct run's reasons one per line; a direct run's `conversations.jsonl` is read the same
way. Each row names the unit of its texts (`new_texts`, `reference_texts`) where it is one of these.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import orjson

from culturepark.benchmarks.results import CompareRunsDiversity, DiversityRow
from culturepark.benchmarks.run_texts import UNITS, run_texts, texts_of_row
from culturepark.engine.embeddings import Embedder, embed_unique
from culturepark.engine.errors import InputError


def texts_of(path: Path, field: str | None = None) -> list[str]:
    """Texts of a JSONL file: `field`, else `text`, the last assistant message of `messages`,
    or every turn of a `conversations.jsonl` row (a direct row: its reasons); or of a run directory."""
    return texts_and_unit(path, field)[0]


def texts_and_unit(path: Path, field: str | None = None) -> tuple[list[str], str | None]:
    """`texts_of` and the unit of the texts where it is a run's (`run_texts.UNITS`), else None."""
    if path.is_dir():  # `field` names a JSONL file's key; a run directory is read by its kind
        kind, texts = run_texts(path)
        return [t for t in texts if t.strip()], UNITS[kind]
    if not path.exists():
        raise InputError(f"diversity: {path} not found")
    out: list[str] = []
    direct = False
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"diversity: {path}:{n}: not JSON") from exc
        if field:
            if field not in row:
                raise InputError(f"diversity: {path}:{n}: no field {field!r}")
            out.append(str(row[field]))
        elif "messages" in row:
            out.append(next(m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"))
        elif "turns" in row:
            direct = direct or (row.get("meta") or {}).get("version") == "direct"
            out.extend(texts_of_row(row))
        elif "text" in row:
            out.append(str(row["text"]))
        else:
            raise InputError(f"diversity: {path}:{n}: no text, messages or turns (use --field)")
    return [t for t in out if t.strip()], UNITS["direct"] if direct else None


def nearest_distances(new: np.ndarray, ref: np.ndarray, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per new vector, the Euclidean and the cosine distance to its nearest reference vector
    (|a − b|² = |a|² + |b|² − 2a·b, so one product per block serves both; no unit norm assumed)."""
    euclid = np.empty(len(new), dtype=np.float64)
    cosine = np.empty(len(new), dtype=np.float64)
    ref64 = ref.astype(np.float64)  # float64: |a|² + |b|² − 2a·b cancels for near neighbours
    ref_sq = (ref64 ** 2).sum(axis=1)
    ref_norm = np.sqrt(ref_sq)
    for i in range(0, len(new), block):
        part = new[i:i + block].astype(np.float64)
        dots = part @ ref64.T
        sq = (part ** 2).sum(axis=1)
        euclid[i:i + block] = np.sqrt(np.clip((sq[:, None] + ref_sq[None, :] - 2 * dots).min(axis=1), 0.0, None))
        norms = np.sqrt(sq)[:, None] * ref_norm[None, :]
        cosine[i:i + block] = 1.0 - (dots / np.where(norms > 0, norms, 1.0)).max(axis=1)
    return euclid, np.clip(cosine, 0.0, 2.0)


def _row(new: np.ndarray, ref: np.ndarray, new_texts: list[str], ref_texts: list[str], embedder_name: str,
         new_file: Path, ref_file: Path, units: tuple[str | None, str | None] = (None, None)) -> DiversityRow:
    d, cos = nearest_distances(new, ref)
    named = {k: u for k, u in zip(("new_texts", "reference_texts"), units) if u is not None}
    return DiversityRow(task="diversity", distance="euclidean (the paper's); cosine beside it", **named,
                        diversity_gain=round(float(d.mean()), 4), std=round(float(d.std()), 4),
                        median=round(float(np.median(d)), 4), diversity_gain_cosine=round(float(cos.mean()), 4),
                        std_cosine=round(float(cos.std()), 4), new=len(new_texts), reference=len(ref_texts),
                        distinct_texts_embedded=len(set(new_texts + ref_texts)), embeddings=embedder_name,
                        new_file=str(new_file), reference_file=str(ref_file))


async def _embed(embedder: Embedder, groups: list[list[str]]) -> list[np.ndarray]:
    """Every distinct text of every group embedded once (and the embedder closed); vectors per group."""
    if not all(groups):
        raise InputError("diversity: every file needs at least one text")
    try:
        vecs = await embed_unique(embedder, [t for g in groups for t in g])
    finally:
        await embedder.aclose()
    bounds = np.cumsum([0] + [len(g) for g in groups])
    return [vecs[a:b] for a, b in itertools.pairwise(bounds)]


async def diversity_gains(new_paths: list[Path], ref_path: Path, embedder: Embedder,
                          field: str | None = None) -> list[DiversityRow]:
    """One row per new file against the same reference (e.g. CulturePark data and the direct-generation
    baseline against the seed data): every distinct text of all files is embedded once."""
    news = [texts_and_unit(p, field) for p in new_paths]
    ref, ref_unit = texts_and_unit(ref_path, field)
    *new_vecs, ref_vecs = await _embed(embedder, [*(t for t, _ in news), ref])
    return [_row(v, ref_vecs, texts, ref, embedder.name, path, ref_path, (unit, ref_unit))
            for path, (texts, unit), v in zip(new_paths, news, new_vecs)]


async def gains_both_ways(a_path: Path, b_path: Path, embedder: Embedder,
                          units: tuple[str | None, str | None] = (None, None)) -> CompareRunsDiversity:
    """B's diversity over A and A's over B, from one embedding of both (`eval compare-runs`);
    `units` names what A's and B's texts are (recorded in each row)."""
    a, b = texts_of(a_path), texts_of(b_path)
    va, vb = await _embed(embedder, [a, b])
    ua, ub = units
    return CompareRunsDiversity(B_over_A=_row(vb, va, b, a, embedder.name, b_path, a_path, (ub, ua)),
                                A_over_B=_row(va, vb, a, b, embedder.name, a_path, b_path, (ua, ub)))
