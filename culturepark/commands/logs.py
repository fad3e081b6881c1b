"""`culturepark replay` and `culturepark export`: read a (partial) run's log back."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from culturepark.commands.options import shared
from culturepark.console import print_json
from culturepark.engine.export import conversation_rows, export_run, one_conversation, ordered_conversations


def register(sub: Any) -> None:
    rp = sub.add_parser("replay", help="print the conversations of a run (also a partial one)")
    rp.add_argument("run_dir")
    rp.add_argument("--id")
    shared(rp, "--limit", help="print at most N conversations")
    shared(rp, "--json", help="one JSON line per conversation")
    rp.set_defaults(func=replay)

    e = sub.add_parser("export", help="write conversations.jsonl and summary.json from a log")
    e.add_argument("run_dir")
    e.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl",
                   help="parquet: conversations.parquet (datasets loads it), written a row group at a time")
    shared(e, "--json", help="print the summary as JSON")
    e.set_defaults(func=export)


def _print_conversation(row: dict[str, Any]) -> None:
    from culturepark.agents.meta import ConversationMeta, read_meta  # not at import: `--help` loads no agents

    meta = read_meta(row["meta"], row["id"])
    conv = meta if isinstance(meta, ConversationMeta) else None
    stance = f" — stance: {conv.stance_text}" if conv and conv.stance_text else ""
    print(f"=== {row['id']} [{row['status']}{': ' + row['reason'] if row.get('reason') else ''}]{stance}")
    if conv and conv.item_text:
        print(f"    item Q{conv.item_id}: {conv.item_text}")
    for t in row["turns"]:
        print(f"{t['speaker']}: {t['text']}")
    print()


def replay(args: argparse.Namespace) -> int:
    if args.id:  # one streaming pass, nothing kept but that conversation
        conv, torn = one_conversation(Path(args.run_dir), args.id)
        rows = conversation_rows([(args.id, conv)] if conv else [])
        _show(rows, args)
    else:
        with ordered_conversations(Path(args.run_dir)) as run:
            _show(conversation_rows(run.conversations()), args)
            torn = run.torn_bytes
    if torn:
        print(f"(the log ends in a torn line of {torn} bytes; --resume discards it)", file=sys.stderr)
    return 0


def _show(rows: Iterator[dict[str, Any]], args: argparse.Namespace) -> None:
    for shown, row in enumerate(rows):
        if args.limit is not None and shown >= args.limit:
            break
        print_json(row) if args.json else _print_conversation(row)


def export(args: argparse.Namespace) -> int:
    summary = export_run(Path(args.run_dir), args.format)
    if args.json:
        print_json(summary.to_json())
    else:
        print(f"wrote {args.run_dir}/conversations.{args.format} and summary.json "
              f"({summary.conversations} conversations, {summary.turns} turns)")
    return 0
