"""The dataset's files: one folder per config, `{split}-0000i-of-0000N.parquet` (or `.jsonl`) shards
in the layout the Hub and `datasets.load_dataset` read, with typed columns.

Same rows, same bytes: the schema is fixed here (no type inference), rows come sorted, Parquet is
written with fixed options and carries no pandas metadata and no clock (its only provenance
string names the pyarrow version, which the manifest pins with the package); JSONL keys keep
the schema's order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write

CONFIGS = ("sft", "conversations")


def _pa() -> Any:
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise InputError("dataset build needs pyarrow: pip install 'culturepark[parquet]'") from exc
    return pa


def schema(config: str) -> Any:
    pa = _pa()
    common = [("id", pa.string()), ("source", pa.string()), ("conversation_id", pa.string()),
              ("culture", pa.string()), ("country", pa.string()), ("item", pa.string()), ("item_text", pa.string()),
              ("stance_code", pa.int32()), ("stance_text", pa.string()), ("protocol", pa.string()),
              ("mode", pa.string()), ("model", pa.string())]
    if config == "sft":
        return pa.schema([*common, ("opinion_id", pa.string()), ("refiner", pa.string()), ("format", pa.string()),
                          ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))])
    return pa.schema([*common, ("item_options", pa.string()), ("stance_policy", pa.string()),
                      ("main_contact_culture", pa.string()), ("main_contact_model", pa.string()),
                      ("turns", pa.list_(pa.struct([("speaker", pa.string()), ("text", pa.string())]))),
                      ("n_turns", pa.int32()), ("words", pa.int32()), ("self_report_code", pa.int32()),
                      ("judge_verdict", pa.string())])


def shard_name(split: str, i: int, n: int, fmt: str) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.{fmt}"


def write_split(folder: Path, config: str, split: str, rows: list[dict[str, Any]], fmt: str,
                shard_rows: int) -> list[tuple[str, int]]:
    """The shards of one split: (path in the folder, rows)."""
    n = max(1, -(-len(rows) // shard_rows))
    written = []
    for i in range(n):
        part = rows[i * shard_rows:(i + 1) * shard_rows]
        rel = f"{config}/{shard_name(split, i, n, 'parquet' if fmt == 'parquet' else 'jsonl')}"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            _write_parquet(path, config, part)
        else:
            names = schema(config).names
            atomic_write(path, b"".join(orjson.dumps({k: r[k] for k in names}) + b"\n" for r in part))
        written.append((rel, len(part)))
    return written


def _write_parquet(path: Path, config: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow.parquet as pq

    pa = _pa()
    table = pa.Table.from_pylist(rows, schema=schema(config))
    pq.write_table(table, path, compression="zstd", compression_level=9, use_dictionary=True,
                   write_statistics=True, row_group_size=10_000, version="2.6", store_schema=True)
