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
