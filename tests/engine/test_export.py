"""The streaming export: bucket by bucket in `seq` order, the same bytes as assembling the whole run
in memory — also when records come out of order, across shards, with retries and duplicates."""
from __future__ import annotations

import random

import orjson

from culturepark.engine.export import assemble, conversation_rows, export_run, one_conversation, ordered_conversations
from culturepark.engine.log import RunLog, new_shard_path
from culturepark.engine.records import EndRecord, RunHeader, StopRecord, TurnRecord, Usage


def _messy_run(run_dir, conversations=60, seed=3):
    """Interleaved conversations, a retried failure, a duplicate turn, a stop, a shard, a torn line."""
    rng = random.Random(seed)
    run_dir.mkdir()
    records = []
    for seq in rng.sample(range(conversations), conversations):  # not in seq order
        cid = f"c{seq:03d}"
        n = rng.randint(1, 4)
        turns = [TurnRecord(cid, seq, i, "A" if i % 2 == 0 else "B", "x", f"{cid} says {i}",
                            Usage(10 + i, 5), cost_usd=0.001, t=1000.0 + seq + i) for i in range(n)]
        if seq % 7 == 0:  # failed first, retried later (its newer records come after)
            records += [*turns[:1], EndRecord(cid, seq, "failed", "http_500", {"seq": seq}, 3, t=2000.0)]
            records += [*turns[1:], EndRecord(cid, seq, "done", None, {"seq": seq}, t=3000.0 + seq)]
        elif seq % 11 == 0:  # never ended: incomplete
            records += turns
        else:
            records += [*turns, EndRecord(cid, seq, "done", None, {"seq": seq}, t=1500.0 + seq)]
        if seq % 13 == 0:
            records.append(turns[0])  # a duplicate (written twice by a resumed run)
    records.insert(len(records) // 2, StopRecord("budget_reached", t=2500.0))
    log = RunLog(run_dir / "log.jsonl").open()
    log.append(RunHeader(run_name="messy", scenario_hash="h", started_at=900.0))
    cut = len(records) * 2 // 3
    for rec in records[:cut]:
        log.append(rec)
    log.close()
    shard = RunLog(new_shard_path(run_dir)).open()
    for rec in records[cut:]:
        shard.append(rec)
    shard.close()
    with open(shard.path, "ab") as fh:
        fh.write(b'{"type":"turn","conv')  # torn
    return run_dir


def _rows_in_memory(run_dir) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in conversation_rows(assemble(run_dir)))


def test_buckets_give_the_bytes_of_the_whole_run_in_memory(tmp_path):
    run = _messy_run(tmp_path / "r")
    expected = _rows_in_memory(run)
    for width in (1, 2, 7, 4096):  # one conversation per bucket … everything in one
        with ordered_conversations(run, bucket_seqs=width) as ordered:
            got = b"".join(orjson.dumps(r) + b"\n" for r in conversation_rows(ordered.conversations()))
            assert ordered.torn_bytes == len(b'{"type":"turn","conv') and ordered.stop_reasons == ["budget_reached"]
        assert got == expected, width
    before = sorted(p.name for p in tmp_path.rglob("*"))
    summary = export_run(run)
    assert (run / "conversations.jsonl").read_bytes() == expected
    in_memory = assemble(run)
    assert summary.duplicate_turns_dropped == in_memory.duplicate_turns > 0
    assert summary.done + summary.incomplete == 60 and summary.failed == 0 and summary.stops == ["budget_reached"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([*before, "conversations.jsonl", "summary.json"])


def test_one_conversation_is_read_out_of_any_run(tmp_path):
    run = _messy_run(tmp_path / "r")
    conv, torn = one_conversation(run, "c007")
    whole = dict(assemble(run).conversations)["c007"]
    assert conv is not None and conv.status == whole.status == "done" and torn > 0
    assert [t.text for t in conv.ordered_turns()] == [t.text for t in whole.ordered_turns()]
    assert one_conversation(run, "nobody")[0] is None


def test_parquet_export_has_the_rows_of_the_jsonl_and_datasets_loads_it(tmp_path):
    datasets = __import__("pytest").importorskip("datasets")
    run = _messy_run(tmp_path / "r")
    rows = [orjson.loads(line) for line in _rows_in_memory(run).splitlines()]
    summary = export_run(run, "parquet")
    assert not (run / "conversations.jsonl").exists() and summary.conversations == len(rows) == 60
    ds = datasets.load_dataset("parquet", data_files=str(run / "conversations.parquet"), split="train")
    assert ds["id"] == [r["id"] for r in rows] and ds["status"] == [r["status"] for r in rows]
    assert ds["turns"] == [r["turns"] for r in rows] and ds["reason"] == [r.get("reason") for r in rows]
    assert [orjson.loads(m) for m in ds["meta"]] == [r["meta"] for r in rows]
