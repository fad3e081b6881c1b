import os

import orjson
import pytest

from culturepark.engine.log import (CorruptLogError, LogError, LogWriteError, RunDirLock, RunLog,
                                    read_log, recover)


def _write(path, records, tail=b""):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + tail)


HEADER = {"type": "run", "run_name": "t"}


def test_torn_last_line_is_reported_and_cut_on_recover(tmp_path):
    log = tmp_path / "log.jsonl"
    _write(log, [HEADER, {"type": "turn", "conversation_id": "a", "index": 0}], tail=b'{"type": "tu')
    contents = read_log(log)
    assert contents.torn_bytes == len(b'{"type": "tu') and len(contents.records) == 1
    assert log.stat().st_size > 0 and log.read_bytes().endswith(b'"tu')  # read_log changes nothing
    recovered = recover(log)
    assert recovered.torn_bytes and log.read_bytes().endswith(b"}\n")
    assert read_log(log).torn_bytes == 0


def test_corrupt_line_in_the_middle_is_refused_with_its_line_number(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(orjson.dumps(HEADER) + b"\n" + b"garbage\n" + orjson.dumps({"type": "end"}) + b"\n")
    with pytest.raises(CorruptLogError, match=r"log.jsonl:2"):
        read_log(log)


def test_each_record_is_one_complete_line(tmp_path):
    log = RunLog(tmp_path / "log.jsonl", fsync="always").open()
    for i in range(100):
        log.append({"type": "turn", "index": i, "text": "x" * i})
    log.close()
    lines = (tmp_path / "log.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["index"] for line in lines] == list(range(100))


def test_write_error_raises_log_write_error_and_keeps_earlier_records(tmp_path):
    log = RunLog(tmp_path / "log.jsonl", fsync="never").open()
    log.append(HEADER)
    os.close(log._fd)
    log._fd = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    with pytest.raises(LogWriteError, match="No space left"):
        log.append({"type": "turn"})
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

    _write(tmp_path / "log.jsonl", [HEADER, {"type": "turn", "conversation_id": "a", "index": 0}])
    first, second = new_shard_path(tmp_path), new_shard_path(tmp_path)
    assert (first.name, second.name) == ("0001.jsonl", "0002.jsonl")  # a name is reserved at once
    _write(first, [{"type": "turn", "conversation_id": "a", "index": 1}], tail=b'{"type":"tu')
    _write(second, [{"type": "turn", "conversation_id": "b", "index": 0}])
    contents = read_log(tmp_path)
    assert contents.header == HEADER
    assert [(r["conversation_id"], r["index"]) for r in contents.records] == [("a", 0), ("a", 1), ("b", 0)]
    assert contents.torn_bytes == len(b'{"type":"tu')
    recover(tmp_path)
    assert first.read_bytes().endswith(b"}\n") and read_log(tmp_path).torn_bytes == 0
    assert shard_paths(tmp_path) == [first, second]


def test_resume_state_and_export_do_not_depend_on_the_order_logs_are_read(tmp_path):
    from culturepark.engine.export import assemble, conversation_rows
    from culturepark.engine.scheduler import ResumeState

    turn = lambda i: {"type": "turn", "conversation_id": "a", "seq": 0, "index": i,  # noqa: E731
                      "speaker": "x", "role": "delegate", "text": f"t{i}"}
    done = {"type": "end", "conversation_id": "a", "seq": 0, "status": "done"}
    failed = {"type": "end", "conversation_id": "a", "seq": 0, "status": "failed", "reason": "http_500"}
    # a retried conversation whose later (done) records sit in a file read before the earlier ones
    state = ResumeState.from_records([turn(2), done, turn(0), turn(1), failed])
    assert [t.index for t in state.turns["a"]] == [0, 1, 2] and state.ended["a"] == "done"
    gap = ResumeState.from_records([turn(0), turn(2)])
    assert [t.index for t in gap.turns["a"]] == [0]  # only the contiguous prefix continues
    _write(tmp_path / "log.jsonl", [HEADER, done, turn(0), failed])
    rows = list(conversation_rows(assemble(tmp_path)))
    assert rows[0]["status"] == "done"
