"""The CLI as a user meets it: exit codes, one-line errors, nothing written on bad input."""
import json
import os
import signal
import subprocess
import sys

import orjson
import pytest
import yaml

from tests.conftest import run_cli, run_cli_here, scenario_dict, wait_for


def _scenario(tmp_path, url, **kw):
    data = scenario_dict(**kw)
    data["backend"]["base_url"] = url
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


@pytest.fixture
def url(sim_process):
    return sim_process("--seed", "4")


def test_run_then_replay_and_export(tmp_path, tiny_data, url):
    sc = _scenario(tmp_path, url)
    out = tmp_path / "out"
    res = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["done"] == 4 and summary["turns"] == 16 and summary["failed"] == 0
    # stderr is a pipe here, not a terminal: progress comes as plain lines, the last one at the end
    assert "progress: 4/4 conversations (4 done, 0 failed this session), 16 turns" in res.stderr
    rows = [orjson.loads(x) for x in (out / "conversations.jsonl").read_bytes().splitlines()]
    assert rows[0]["meta"]["culture"] == "Chinese" and len(rows[0]["turns"]) == 4
    rep = run_cli("replay", str(out))
    assert rep.returncode == 0 and "=== Chinese:Q27:0 [done]" in rep.stdout and "Wei: " in rep.stdout
    exp = run_cli("export", str(out), "--json")
    assert json.loads(exp.stdout)["turns"] == 16


def test_datasets_can_load_the_output(tmp_path, tiny_data, url):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    assert run_cli("run", str(_scenario(tmp_path, url)), "--out", str(out), "--data-dir", str(tiny_data)).returncode == 0
    ds = datasets.load_dataset("json", data_files=str(out / "conversations.jsonl"), split="train")
    assert len(ds) == 4


BAD_YAML_CASES = {
    "malformed YAML": ("name: x\ncultures: [Chinese\n", "invalid YAML"),
    "unknown field": ("name: x\ncultures: [Chinese]\ncolour: red\n", "colour: unknown field"),
    "wrong type": ("name: x\ncultures: [Chinese]\nseed: many\n", "seed: Input should be a valid integer"),
    "unknown culture": ("name: x\ncultures: [Martian]\n", "unknown culture 'Martian'"),
    "unknown item": ("name: x\ncultures: [Chinese]\nitems: ['999']\n", "item '999' is not in"),
}


@pytest.mark.parametrize("case", list(BAD_YAML_CASES))
def test_bad_scenarios_exit_2_with_one_line_and_write_nothing(tmp_path, tiny_data, case):
    text, expected = BAD_YAML_CASES[case]
    sc = tmp_path / "bad.yaml"
    sc.write_text(text)
    out = tmp_path / "out"
    res = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data))
    assert res.returncode == 2
    assert expected in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()
    val = run_cli("validate", str(sc), "--data-dir", str(tiny_data))
    assert val.returncode == 2 and expected in val.stderr


def test_missing_api_key_for_a_remote_backend(tmp_path, tiny_data):
    data = scenario_dict()
    data["backend"] = {"provider": "openai", "model": "gpt-4o-mini", "api_key_env": "CP_TEST_KEY_UNSET"}
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "CP_TEST_KEY_UNSET"}
    res = subprocess.run([sys.executable, "-m", "culturepark.cli", "run", str(sc), "--out", str(tmp_path / "o"),
                          "--data-dir", str(tiny_data)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "CP_TEST_KEY_UNSET is missing or empty" in res.stderr
    assert not (tmp_path / "o").exists()


def test_unreachable_base_url_fails_fast(tmp_path, tiny_data):
    sc = _scenario(tmp_path, "http://127.0.0.1:9/v1")  # discard port: nothing listens
    res = run_cli("run", str(sc), "--out", str(tmp_path / "o"), "--data-dir", str(tiny_data), timeout=30)
    assert res.returncode == 2 and "cannot reach http://127.0.0.1:9/v1" in res.stderr
    assert not (tmp_path / "o").exists()


def test_out_dir_rules(tmp_path, tiny_data, url):
    sc = _scenario(tmp_path, url)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    res = run_cli("run", str(sc), "--out", str(full), "--data-dir", str(tiny_data))
    assert res.returncode == 2 and "not empty" in res.stderr and _listing(full) == ["keep.txt"]

    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with permissions that ignore file modes")
        res = run_cli("run", str(sc), "--out", str(locked / "sub"), "--data-dir", str(tiny_data))
        assert res.returncode == 2 and "not writable" in res.stderr
    finally:
        locked.chmod(0o700)

    res = run_cli("run", str(sc), "--out", str(full), "--resume", "--data-dir", str(tiny_data))
    assert res.returncode == 2 and "not empty" in res.stderr and _listing(full) == ["keep.txt"]  # not a run


def test_resume_refuses_a_different_scenario(tmp_path, tiny_data, url):
    out = tmp_path / "out"
    assert run_cli("run", str(_scenario(tmp_path, url)), "--out", str(out), "--data-dir", str(tiny_data)).returncode == 0
    before = (out / "log.jsonl").read_bytes()
    other = _scenario(tmp_path, url, seed=99)
    res = run_cli("run", str(other), "--out", str(out), "--resume", "--data-dir", str(tiny_data))
    assert res.returncode == 2 and "different scenario" in res.stderr
    assert (out / "log.jsonl").read_bytes() == before


def test_corrupt_log_line_is_refused_with_its_position(tmp_path, tiny_data, url):
    out = tmp_path / "out"
    sc = _scenario(tmp_path, url)
    assert run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data)).returncode == 0
    lines = (out / "log.jsonl").read_bytes().splitlines(keepends=True)
    lines[3] = b"{not json\n"
    (out / "log.jsonl").write_bytes(b"".join(lines))
    res = run_cli("run", str(sc), "--out", str(out), "--resume", "--data-dir", str(tiny_data))
    assert res.returncode == 2 and "log.jsonl:4: corrupt record" in res.stderr


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_data, sim_process):
    slow = sim_process("--seed", "4", "--latency-ms", "30")
    sc = _scenario(tmp_path, slow, items=["27", "31", "158"], conversations_per_item=3, turns=6, concurrency=4)
    ref = tmp_path / "ref"
    assert run_cli("run", str(sc), "--out", str(ref), "--data-dir", str(tiny_data)).returncode == 0

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "culturepark.cli", "run", str(sc), "--out", str(out),
                             "--data-dir", str(tiny_data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = out / "log.jsonl"
    wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") >= 40)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (out / "conversations.jsonl").exists()  # it really died mid-run
    res = run_cli("run", str(sc), "--out", str(out), "--resume", "--data-dir", str(tiny_data), "--json")
    assert res.returncode == 0, res.stderr
    assert (out / "conversations.jsonl").read_bytes() == (ref / "conversations.jsonl").read_bytes()
    turns = [orjson.loads(x) for x in log.read_bytes().splitlines() if b'"type":"turn"' in x]
    keys = [(t["conversation_id"], t["index"]) for t in turns]
    assert len(keys) == len(set(keys)) == 18 * 6


def test_second_run_on_the_same_dir_is_refused_while_the_first_holds_it(tmp_path, tiny_data, url):
    from culturepark.engine.log import RunDirLock

    sc = _scenario(tmp_path, url)
    out = tmp_path / "out"
    assert run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--limit", "1").returncode == 0
    before = (out / "log.jsonl").read_bytes()
    with RunDirLock(out):  # what a live run holds for its whole life (released by the kernel on kill -9)
        second = run_cli("run", str(sc), "--out", str(out), "--resume", "--data-dir", str(tiny_data))
    assert second.returncode == 2 and "in use by a running run" in second.stderr
    assert (out / "log.jsonl").read_bytes() == before  # nothing interleaved
    third = run_cli("run", str(sc), "--out", str(out), "--resume", "--data-dir", str(tiny_data))
    assert third.returncode == 0  # free again once the holder is gone


def test_fake_key_never_appears_in_files_or_output(tmp_path, tiny_data, url):
    key = "sk-culturepark-test-SECRET-0123456789"
    data = scenario_dict()
    data["backend"].update(base_url=url, api_key_env="CP_FAKE_KEY")
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    res = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json",
                  env={"CP_FAKE_KEY": key})
    assert res.returncode == 0, res.stderr
    assert key not in res.stdout + res.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_failed_conversations_exit_1_and_retry_failed_completes_them(tmp_path, tiny_data, sim_process):
    flaky = sim_process("--seed", "4", "--faults", '[{"kind": "status", "status": 502, "times": 12}]')
    sc = _scenario(tmp_path, flaky)
    out = tmp_path / "out"
    first = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json",
                    "--concurrency", "1")
    assert first.returncode == 1 and json.loads(first.stdout)["failures_by_reason"] == {"http_502": 4}
    again = run_cli("run", str(sc), "--out", str(out), "--data-dir", str(tiny_data), "--json",
                    "--resume", "--retry-failed")
    assert again.returncode == 0 and json.loads(again.stdout)["done"] == 4


def test_scenarios_lists_bundled_ones():
    res = run_cli("scenarios")
    assert res.returncode == 0 and "quickstart" in res.stdout and "paper-v1" in res.stdout


def test_dry_run_estimates_without_sending_or_writing(tmp_path, tiny_data):
    sc = _scenario(tmp_path, "http://127.0.0.1:9/v1", turns=4)  # nothing listens there: nothing is sent
    res = run_cli("run", str(sc), "--dry-run", "--json", "--data-dir", str(tiny_data), "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    est = json.loads(res.stdout)
    assert est["conversations"] == 4 and est["requests"] == 16
    assert est["completion_tokens_max"] == 16 * 40 and est["prompt_tokens_est"] > 0
    assert est["cost_usd_max"] is None  # sim-model has no known price
    assert not (tmp_path / "o").exists()


def test_gemini_provider_speaks_openai_compatible_http_with_its_own_key(tmp_path, tiny_data, url):
    data = scenario_dict()
    data["backend"] = {"provider": "gemini", "model": "gemini-2.0-flash", "base_url": url}  # local stand-in
    sc = tmp_path / "g.yaml"
    sc.write_text(yaml.safe_dump(data))
    res = run_cli("run", str(sc), "--out", str(tmp_path / "o"), "--data-dir", str(tiny_data), "--json",
                  env={"GEMINI_API_KEY": "gm-test-key"})
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["done"] == 4 and summary["cost_usd"] is not None  # gemini-2.0-flash has a price
    header = orjson.loads((tmp_path / "o" / "log.jsonl").read_bytes().splitlines()[0])
    assert header["backends"]["delegate"]["auth"] == "env key" and "gm-test-key" not in json.dumps(header)


def test_the_local_quickstart_pointed_at_a_server_has_the_same_shape(tmp_path, tiny_data, url):
    out = tmp_path / "o"
    res = run_cli("run", "quickstart", "--base-url", url, "--out", str(out), "--data-dir", str(tiny_data),
                  "--limit", "3", "--json")
    assert res.returncode == 0, res.stderr
    rows = [orjson.loads(x) for x in (out / "conversations.jsonl").read_bytes().splitlines()]
    assert len(rows) == 3 and all(len(r["turns"]) == 6 for r in rows)
    assert [t["speaker"] for t in rows[0]["turns"]] == ["Wei", "Lily"] * 3
    header = orjson.loads((out / "log.jsonl").read_bytes().splitlines()[0])
    assert header["backends"]["delegate"]["api"] == "completions"  # base-model transcript rendering


def test_cache_from_an_earlier_run_answers_identical_requests_without_the_network(tmp_path, tiny_data, url):
    first = tmp_path / "first"
    assert run_cli_here("run", str(_scenario(tmp_path, url)), "--out", str(first), "--data-dir",
                        str(tiny_data)).returncode == 0
    sc = _scenario(tmp_path, "http://127.0.0.1:9/v1", cache_from=[str(first)])  # nothing listens on port 9
    res = run_cli_here("run", str(sc), "--out", str(tmp_path / "second"), "--data-dir", str(tiny_data), "--json",
                       "--base-url", "http://127.0.0.1:9/v1")
    # the preflight refuses an unreachable server even when a cache could answer: point it at the live one
    assert res.returncode == 2
    sc = _scenario(tmp_path, url, cache_from=[str(first)])
    res = run_cli_here("run", str(sc), "--out", str(tmp_path / "second"), "--data-dir", str(tiny_data), "--json")
    summary = json.loads(res.stdout)
    assert res.returncode == 0 and summary["cached_turns"] == summary["turns"] == 16
    assert summary["endpoints"][0]["requests"] == 0 and summary["endpoints"][0]["cache_hits"] == 16
    a = (first / "conversations.jsonl").read_bytes()
    b = (tmp_path / "second" / "conversations.jsonl").read_bytes()
    assert a == b


def test_disk_full_stops_cleanly_and_the_run_resumes(tmp_path, tiny_data, url):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG), as a full disk refuses them."""
    import resource

    sc = _scenario(tmp_path, url, concurrency=1)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run_cli("run", str(sc), "--out", str(ref), "--data-dir", str(tiny_data)).returncode == 0
    limit = (ref / "log.jsonl").stat().st_size // 2

    def cap_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run([sys.executable, "-m", "culturepark.cli", "run", str(sc), "--out", str(out),
                           "--data-dir", str(tiny_data)], capture_output=True, text=True, timeout=120,
                          preexec_fn=cap_file_size)
    assert full.returncode == 1 and "cannot append to" in full.stderr and "--resume" in full.stderr
    assert "Traceback" not in full.stderr
    data = (out / "log.jsonl").read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n")  # everything before the error is intact
    again = run_cli("run", str(sc), "--out", str(out), "--resume", "--data-dir", str(tiny_data))
    assert again.returncode == 0, again.stderr
    assert (out / "conversations.jsonl").read_bytes() == (ref / "conversations.jsonl").read_bytes()


def test_an_out_dir_that_cannot_be_created_exits_2_even_as_root(tmp_path, tiny_data, url):
    """/sys refuses new entries to every user, root included (file modes cannot show this as root)."""
    res = run_cli("run", str(_scenario(tmp_path, url)), "--out", "/sys/culturepark-test", "--data-dir", str(tiny_data))
    assert res.returncode == 2 and "--out /sys/culturepark-test: cannot create" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_fork_runs_exactly_its_sources_conversations_also_when_resumed(tmp_path, tiny_data, url):
    """A fork of a `--limit 6` run of a 12-conversation plan holds those 6, no others (a fork used to
    run the rest of the plan from scratch: on a paid API, an unasked-for bill); so does its resume."""
    sc = _scenario(tmp_path, url, conversations_per_item=3)  # 2 cultures × 2 items × 3 = 12 planned
    src = tmp_path / "src"
    assert run_cli("run", str(sc), "--out", str(src), "--data-dir", str(tiny_data), "--limit", "6").returncode == 0
    source_ids = {json.loads(x)["id"] for x in (src / "conversations.jsonl").read_text().splitlines()}
    assert len(source_ids) == 6
    out = tmp_path / "fork"
    res = run_cli("run", "--fork", str(src), "--at", "2", "--set", "main_contact=German", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["conversations"] == 6
    logged = {r["conversation_id"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()[1:])}
    assert logged == source_ids  # every record of the fork's log: the source's conversations only
    rows = [json.loads(x) for x in (out / "conversations.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == source_ids and all(r["status"] == "done" for r in rows)
    header = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    forked = tmp_path / "forked.yaml"  # the fork's own scenario, to continue it with `run --resume`
    forked.write_text(yaml.safe_dump(header["scenario"]))
    again = run_cli("run", str(forked), "--out", str(out), "--resume", "--data-dir", str(tiny_data), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["conversations"] == 6
    assert {r["conversation_id"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()[1:])} == source_ids


def test_a_fork_to_a_server_that_does_not_answer_writes_nothing(tmp_path, tiny_data, url):
    src = tmp_path / "src"
    sc = _scenario(tmp_path, url)
    assert run_cli("run", str(sc), "--out", str(src), "--data-dir", str(tiny_data), "--limit", "1").returncode == 0
    out = tmp_path / "fork"
    res = run_cli("run", "--fork", str(src), "--at", "2", "--set", "backend.base_url=http://127.0.0.1:9/v1",
                  "--out", str(out))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out.exists()  # the fork's session checks the server before its header (a fork once wrote first)


def test_a_fork_keeps_the_first_k_turns_and_continues_under_the_changed_scenario(tmp_path, tiny_data, url):
    sc = _scenario(tmp_path, url, version="v1")
    src = tmp_path / "src"
    assert run_cli_here("run", str(sc), "--out", str(src), "--data-dir", str(tiny_data)).returncode == 0
    out = tmp_path / "fork"
    res = run_cli_here("run", "--fork", str(src), "--at", "4", "--set", "main_contact=German", "--set",
                       "sampling.temperature=0.9", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["done"] == 4 and s["cached_turns"] == 16  # 4 conversations × 4 kept turns
    header = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert header["details"]["fork"] == {"source": str(src), "source_hash": json.loads(
        (src / "log.jsonl").read_text().splitlines()[0])["scenario_hash"], "at": 4,
        "set": {"main_contact": "German", "sampling.temperature": 0.9}}
    assert header["scenario"]["main_contact"] == "German"
    before = {r["id"]: r for r in map(json.loads, (src / "conversations.jsonl").read_text().splitlines())}
    for row in map(json.loads, (out / "conversations.jsonl").read_text().splitlines()):
        old = before[row["id"]]
        assert row["turns"][:4] == old["turns"][:4] and len(row["turns"]) == 14  # the first 4 identical
        assert row["turns"][4:] != old["turns"][4:]  # the rest new
        assert row["meta"]["participants"]["main_contact"]["culture"] == "German"
        assert row["meta"]["stance_code"] == old["meta"]["stance_code"]  # same respondents
    bad = run_cli_here("run", "--fork", str(src), "--at", "4", "--set", "colour=red", "--out", str(tmp_path / "b"))
    assert bad.returncode == 2 and "colour" in bad.stderr and not (tmp_path / "b").exists()
    both = run_cli_here("eval", "compare-runs", str(src), str(out), "--out", str(tmp_path / "cmp"), "--json")
    assert both.returncode == 0, both.stderr
    r = json.loads(both.stdout)
    assert r["fidelity"]["A"]["self_report"]["conversations"] == r["fidelity"]["B"]["self_report"]["conversations"] == 4
    assert r["diversity"]["B_over_A"]["new"] == 4 * 7 and r["diversity"]["A_over_B"]["reference"] == 4 * 7
