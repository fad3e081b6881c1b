"""Every fault the sim server can inject, through the CLI as a user meets it.

Each case: the first conversation's request fails on every attempt (the fault fires exactly
`max_attempts` times), so that conversation ends `failed` with the fault's reason, the other
conversations finish, the run exits 1, no broken reply became a turn, and `--resume
--retry-failed` later completes the failed one once the fault has stopped.

A 429 is not such a fault: it is retried past `max_attempts`, and fails a conversation only once
`retry.rate_limit_budget_s` is spent (its own table below).
"""
import json

import orjson
import pytest
import yaml

from tests.conftest import run_cli_here as run_cli  # in this process: ~1 s of start-up saved per call
from tests.conftest import scenario_dict, sim_stats

ATTEMPTS = 3

# case -> (fault, expected failure reason prefix)
FAULTS = {
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


def _scenario(tmp_path, url, **retry):
    data = scenario_dict(concurrency=1, items=["27"])  # 2 conversations, one request at a time
    data["backend"].update(base_url=url, timeout_s=0.5)
    data["retry"] = {"max_attempts": ATTEMPTS, "base_delay_s": 0.02, "max_delay_s": 0.05, **retry}
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


# 429 storms, with and without the server saying when to come back
STORMS = {
    "with Retry-After": {"kind": "status", "status": 429, "retry_after": 0.05},
    "without Retry-After": {"kind": "status", "status": 429},
}


@pytest.mark.parametrize("case", list(STORMS), ids=list(STORMS))
def test_a_429_storm_longer_than_max_attempts_is_ridden_out(tmp_path, tiny_data, sim_process, case):
    storm = 4 * ATTEMPTS
    url = sim_process("--seed", "4", "--faults", json.dumps([{**STORMS[case], "times": storm}]))
    res = run_cli("run", str(_scenario(tmp_path, url)), "--out", str(tmp_path / "out"),
                  "--data-dir", str(tiny_data), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["done"] == 2 and summary["failed"] == 0
    endpoint = summary["endpoints"][0]
    assert endpoint["rate_limited"] == storm and endpoint["retries"] == storm  # each paused the endpoint


@pytest.mark.parametrize("case", list(STORMS), ids=list(STORMS))
def test_a_429_storm_past_the_budget_fails_then_retry_failed_completes(tmp_path, tiny_data, sim_process, case):
    url = sim_process("--seed", "4", "--faults", json.dumps([STORMS[case]]))  # refuses everything
    sc = _scenario(tmp_path, url, rate_limit_budget_s=0.4)
    out = tmp_path / "out"
    first = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json")
    assert first.returncode == 1, first.stderr
    summary = json.loads(first.stdout)
    assert summary["done"] == 0 and summary["failed"] == 2
    assert list(summary["failures_by_reason"]) == ["http_429"]
    assert summary["endpoints"][0]["rate_limited"] > 2 * ATTEMPTS  # each request went past max_attempts
    again = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json",
                    "--resume", "--retry-failed", "--base-url", sim_process("--seed", "4"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["done"] == 2


def test_wrong_usage_is_estimated_not_trusted(tmp_path, tiny_data, sim_process):
    url = sim_process("--seed", "4", "--faults", json.dumps([{"kind": "bad_usage", "times": 2}]))
    out = tmp_path / "out"
    res = run_cli("run", str(_scenario(tmp_path, url)), "--out", str(out), "--data-dir", str(tiny_data), "--json")
    assert res.returncode == 0, res.stderr
    turns = [orjson.loads(x) for x in (out / "log.jsonl").read_bytes().splitlines() if b'"type":"turn"' in x]
    for t in turns:
        assert t["usage"]["prompt_tokens"] > 0 and isinstance(t["usage"]["completion_tokens"], int)


# An account-level refusal arriving mid-run: (fault kind, the provider's words the user must see)
ACCOUNT = {
    "revoked key (401)": ("revoked_key", "Incorrect API key provided"),
    "unknown model (404)": ("unknown_model", "does not exist or you do not have access to it"),
    "exhausted quota (429 insufficient_quota)": ("quota_exhausted", "You exceeded your current quota"),
}
AFTER = 9  # requests answered before the refusal starts


@pytest.mark.parametrize("case", list(ACCOUNT), ids=list(ACCOUNT))
def test_an_account_refusal_stops_the_run_fails_nobody_and_resume_finishes_it(tmp_path, tiny_data, sim_process,
                                                                               case):
    kind, words = ACCOUNT[case]
    data = scenario_dict(concurrency=3, conversations_per_item=3)  # 12 conversations of 4 turns
    data["retry"] = {"max_attempts": 4, "base_delay_s": 0.02, "max_delay_s": 0.05}
    ref_url = sim_process("--seed", "5")
    data["backend"]["base_url"] = ref_url
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(data))
    reference = tmp_path / "ref"
    assert run_cli("run", str(sc), "--out", str(reference), "--data-dir", str(tiny_data)).returncode == 0

    bad_url = sim_process("--seed", "5", "--faults", json.dumps([{"kind": kind, "after": AFTER}]))
    out = tmp_path / "out"
    first = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json",
                    "--base-url", bad_url)
    assert first.returncode == 1 and words in first.stderr
    summary = json.loads(first.stdout)
    assert summary["failed"] == 0 and summary["failures_by_reason"] == {}  # nobody failed for it
    assert summary["done"] < 12 and summary["stops"] and summary["stops"][0].startswith("account_error:")
    refused = sim_stats(bad_url)["requests"] - AFTER
    assert 1 <= refused <= 3  # within one request per in-flight slot, never retried
    records = [orjson.loads(x) for x in (out / "log.jsonl").read_bytes().splitlines()]
    assert not [r for r in records if r["type"] == "end" and r["status"] == "failed"]

    again = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json", "--resume",
                    "--base-url", ref_url)  # the key, model or quota fixed
    assert again.returncode == 0, again.stderr
    assert (out / "conversations.jsonl").read_bytes() == (reference / "conversations.jsonl").read_bytes()
