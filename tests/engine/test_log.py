import os

import orjson
import pytest

from culturepark.engine.errors import CorruptLogError, LogError, LogWriteError
from culturepark.engine.log import RunDirLock, RunLog, read_log, recover
from culturepark.engine.records import EndRecord, RunHeader, TurnRecord


def _write(path, records, tail=b""):
    lines = [orjson.dumps(r.model_dump(mode="json") if isinstance(r, RunHeader) else r) for r in records]
    path.write_bytes(b"".join(line + b"\n" for line in lines) + tail)


def turn(conv: str, index: int) -> TurnRecord:
    return TurnRecord(conv, 0, index, "x", "delegate", f"t{index}")


HEADER = RunHeader(run_name="t", started_at=1.0)


def test_torn_last_line_is_reported_and_cut_on_recover(tmp_path):
    log = tmp_path / "log.jsonl"
    _write(log, [HEADER, turn("a", 0)], tail=b'{"type": "tu')
    contents = read_log(log)
    assert contents.torn_bytes == len(b'{"type": "tu') and len(contents.records) == 1
    assert log.stat().st_size > 0 and log.read_bytes().endswith(b'"tu')  # read_log changes nothing
    recovered = recover(log)
    assert recovered.torn_bytes and log.read_bytes().endswith(b"}\n")
    assert read_log(log).torn_bytes == 0


def test_corrupt_line_in_the_middle_is_refused_with_its_line_number(tmp_path):
    log = tmp_path / "log.jsonl"
    _write(log, [HEADER], tail=b"garbage\n" + orjson.dumps(EndRecord("a", 0, "done")) + b"\n")
    with pytest.raises(CorruptLogError, match=r"log.jsonl:2"):
        read_log(log)


def test_a_json_line_that_is_no_record_of_its_type_is_refused_with_line_and_field(tmp_path):
    log = tmp_path / "log.jsonl"
    _write(log, [HEADER, turn("a", 0), {"type": "turn", "conversation_id": "a", "index": "one"}])
    with pytest.raises(CorruptLogError, match=r"log.jsonl:3: not a valid 'turn' record \(seq: Field required"):
        read_log(log)
    _write(log, [HEADER, {"type": "vote", "conversation_id": "a"}])
    with pytest.raises(CorruptLogError, match=r"log.jsonl:2: not a valid 'vote' record"):
        read_log(log)


def test_each_record_is_one_complete_line(tmp_path):
    log = RunLog(tmp_path / "log.jsonl", fsync="always").open()
    for i in range(100):
        log.append(TurnRecord("a", 0, i, "x", "delegate", "x" * i))
    log.close()
    lines = (tmp_path / "log.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["index"] for line in lines] == list(range(100))


def test_write_error_raises_log_write_error_and_keeps_earlier_records(tmp_path):
    log = RunLog(tmp_path / "log.jsonl", fsync="never").open()
    log.append(HEADER)
    os.close(log._fd)
    log._fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    with pytest.raises(LogWriteError, match="No space left"):
        log.append(turn("a", 0))
    log.close()
    assert read_log(tmp_path / "log.jsonl").header == HEADER


def test_second_lock_on_a_run_dir_is_refused(tmp_path):
    first = RunDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(LogError, match="in use"):
            RunDirLock(tmp_path).acquire()
    finally:
        first.release()
    RunDirLock(tmp_path).acquire()  # free again once released


def test_a_run_dir_reads_its_shards_after_the_main_log_and_recover_cuts_each_torn_line(tmp_path):
    from culturepark.engine.log import new_shard_path, shard_paths

    _write(tmp_path / "log.jsonl", [HEADER, turn("a", 0)])
    first, second = new_shard_path(tmp_path), new_shard_path(tmp_path)
    assert (first.name, second.name) == ("0001.jsonl", "0002.jsonl")  # a name is reserved at once
    _write(first, [turn("a", 1)], tail=b'{"type":"tu')
    _write(second, [turn("b", 0)])
    contents = read_log(tmp_path)
    assert contents.header == HEADER
    assert [(r.conversation_id, r.index) for r in contents.records] == [("a", 0), ("a", 1), ("b", 0)]
    assert contents.torn_bytes == len(b'{"type":"tu')
    recover(tmp_path)
    assert first.read_bytes().endswith(b"}\n") and read_log(tmp_path).torn_bytes == 0
    assert shard_paths(tmp_path) == [first, second]


def test_resume_state_and_export_do_not_depend_on_the_order_logs_are_read(tmp_path):
    from culturepark.engine.export import assemble, conversation_rows
    from culturepark.engine.resume import ResumeState

    done = EndRecord("a", 0, "done")
    failed = EndRecord("a", 0, "failed", "http_500")
    # a retried conversation whose later (done) records sit in a file read before the earlier ones
    state = ResumeState.from_records([turn("a", 2), done, turn("a", 0), turn("a", 1), failed, turn("b", 0)])
    assert state.status("a") == "done" and "a" not in state.turns  # a done conversation needs no turns
    assert state.status("b") is None and [t.index for t in state.turns["b"]] == [0] and len(state.ended) == 1
    assert "a" in state.ended and "b" not in state.ended  # the study server asks who ended this way
    retried = ResumeState.from_records([failed, turn("a", 0), turn("a", 1)])
    assert retried.status("a") == "failed" and [t.index for t in retried.turns["a"]] == [0, 1]
    gap = ResumeState.from_records([turn("a", 0), turn("a", 2)])
    assert [t.index for t in gap.turns["a"]] == [0]  # only the contiguous prefix continues
    _write(tmp_path / "log.jsonl", [HEADER, done, turn("a", 0), failed])
    rows = list(conversation_rows(assemble(tmp_path)))
    assert rows[0]["status"] == "done"
