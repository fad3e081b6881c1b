"""Every fault the sim server can inject, through the CLI as a user meets it.

Each case: the first conversation's request fails on every attempt (the fault fires exactly
`max_attempts` times), so that conversation ends `failed` with the fault's reason, the other
conversations finish, the run exits 1, no broken reply became a turn, and `--resume
--retry-failed` later completes the failed one once the fault has stopped.
"""
import json

import orjson
import pytest
import yaml

from tests.conftest import run_cli, scenario_dict

ATTEMPTS = 3

# case -> (fault, expected failure reason prefix)
FAULTS = {
    "429 storm with Retry-After": ({"kind": "status", "status": 429, "retry_after": 0.2}, "http_429"),
    "429 storm without Retry-After": ({"kind": "status", "status": 429}, "http_429"),
    "500": ({"kind": "status", "status": 500}, "http_500"),
    "502": ({"kind": "status", "status": 502}, "http_502"),
    "503 with Retry-After": ({"kind": "status", "status": 503, "retry_after": 0.1}, "http_503"),
    "read timeout": ({"kind": "slow", "delay_s": 3.0}, "timeout"),
    "connection reset mid-body": ({"kind": "reset"}, "truncated_body"),
    "truncated JSON body": ({"kind": "truncated"}, "truncated_body"),
    "malformed JSON body": ({"kind": "malformed"}, "malformed_body"),
    "200 with empty content": ({"kind": "empty"}, "empty_reply"),
    "finish_reason length with empty text": ({"kind": "length_empty"}, "empty_reply_length"),
}


def _scenario(tmp_path, url):
    data = scenario_dict(concurrency=1, items=["27"])  # 2 conversations, one request at a time
    data["backend"].update(base_url=url, timeout_s=0.5)
    data["retry"] = {"max_attempts": ATTEMPTS, "base_delay_s": 0.02, "max_delay_s": 0.05}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("case", list(FAULTS), ids=list(FAULTS))
def test_fault_fails_one_conversation_then_retry_failed_completes_it(tmp_path, tiny_data, sim_process, case):
    fault, reason = FAULTS[case]
    url = sim_process("--seed", "4", "--faults", json.dumps([{**fault, "times": ATTEMPTS}]))
    sc = _scenario(tmp_path, url)
    out = tmp_path / "out"
    first = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json")
    assert first.returncode == 1, first.stderr
    summary = json.loads(first.stdout)
    assert summary["done"] == 1 and summary["failed"] == 1
    assert list(summary["failures_by_reason"]) == [reason]
    endpoint = summary["endpoints"][0]
    assert endpoint["retries"] == ATTEMPTS - 1  # backoff between attempts, then given up
    if fault.get("status") == 429:
        assert endpoint["rate_limited"] == ATTEMPTS  # each 429 paused the whole endpoint

    records = [orjson.loads(x) for x in (out / "log.jsonl").read_bytes().splitlines()]
    turns = [r for r in records if r["type"] == "turn"]
    assert all(t["text"].strip() for t in turns)  # no empty or broken reply became a turn
    ends = {r["conversation_id"]: r for r in records if r["type"] == "end"}
    failed = [e for e in ends.values() if e["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["reason"].startswith(reason)
    assert not any(t["conversation_id"] == failed[0]["conversation_id"] for t in turns)

    again = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json",
                    "--resume", "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["done"] == 2
    rows = [orjson.loads(x) for x in (out / "conversations.jsonl").read_bytes().splitlines()]
    assert [r["status"] for r in rows] == ["done", "done"] and all(len(r["turns"]) == 4 for r in rows)


def test_wrong_usage_is_estimated_not_trusted(tmp_path, tiny_data, sim_process):
    url = sim_process("--seed", "4", "--faults", json.dumps([{"kind": "bad_usage", "times": 2}]))
    out = tmp_path / "out"
    res = run_cli("run", str(_scenario(tmp_path, url)), "--out", str(out), "--data-dir", str(tiny_data), "--json")
    assert res.returncode == 0, res.stderr
    turns = [orjson.loads(x) for x in (out / "log.jsonl").read_bytes().splitlines() if b'"type":"turn"' in x]
    for t in turns:
        assert t["usage"]["prompt_tokens"] > 0 and isinstance(t["usage"]["completion_tokens"], int)
