"""Refinement end to end on the sim server with a script that answers each prompt meaningfully."""
import json

import orjson
import pytest
import yaml

from tests.conftest import run_cli_here as run_cli  # in this process: the MiniLM loads once a session
from tests.conftest import sim_run, sim_stats

# Each extraction returns six opinions designed to exercise one path each.
SCRIPT = [
    {"pattern": r"List every distinct opinion that (\w+)",
     "reply": "- \\1: I think making my parents proud is one of my main goals because they sacrificed a lot for me.\n"
              "- I believe making my parents proud is one of my main goals since they sacrificed so much for me.\n"
              "- \\1 believes that elders deserve respect in every family and every village.\n"
              "- Science is making our lives worse and more dangerous every year.\n"
              "- The weather in my city is often rainy in the spring months.\n"
              "- Yes indeed."},
    {"pattern": r"Rewrite it so that it agrees", "reply": "I think science and technology make our lives healthier and longer."},
    {"pattern": r"Opinion: Science is making", "reply": "Contradict."},
    {"pattern": r"Opinion: The weather", "reply": "irrelevant"},
    {"pattern": r"Opinion: Yes indeed", "reply": "ENTAILMENT!"},
    {"pattern": r"Opinion: ", "reply": "Entail, because it matches the stance."},
]


@pytest.fixture
def source_run(tmp_path, tiny_data, sim_process):
    return sim_run(tmp_path, tiny_data, sim_process("--seed", "4"))


@pytest.fixture
def refine_url(tmp_path, sim_process):
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump(SCRIPT))
    return sim_process("--seed", "1", "--script", str(script))


def _jsonl(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_refine_counts_add_up_rewrites_are_reverified_and_duplicates_collapse(tmp_path, source_run, refine_url):
    out = tmp_path / "refined"
    res = run_cli("refine", str(source_run), "--out", str(out), "--base-url", refine_url, "--model", "sim-model",
                  "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    n = 4  # source conversations
    assert s["conversations"] == n and s["extracted"] == 6 * n and s["accounted"]
    assert s["refiner_is_generator"] and "notice: the refiner is the model that generated" in res.stderr
    assert (s["entail"], s["contradict"], s["irrelevant"]) == (4 * n, n, n)
    assert s["rewritten"] == s["rewritten_entail"] == n
    assert s["too_short"] == n and s["deduplicated_removed"] == n and s["kept"] == 3 * n == s["exported"]

    ops = _jsonl(out / "opinions.jsonl")
    assert len(ops) == 6 * n
    for o in ops:  # every opinion ends kept or with exactly one reason
        assert o["kept"] != bool(o["drop_reason"])
    rewritten = [o for o in ops if o["rewritten"]]
    assert all(o["verdict"] == "contradict" and o["verdict_after_rewrite"] == "entail" and o["kept"]
               and o["text"].startswith("I think science") for o in rewritten)
    # the log shows the re-verification was asked about the rewritten text, not the old one
    log = (out / "log.jsonl").read_text()
    assert log.count('"speaker":"reverify"') == n
    assert not any(o["text"].startswith(("Wei:", "Maximilian:")) for o in ops)  # speaker prefix stripped
    assert any(o["text"].startswith("I believe that elders") for o in ops if o["kept"])  # first person
    dups = [o for o in ops if o["drop_reason"] == "duplicate"]
    assert all(any(k["cluster"] == d["cluster"] and k["kept"] for k in ops) for d in dups)

    check = s["openai_format_check"]
    assert check["valid"] and check["examples"] == 3 * n and check["tokens_total"] > 0
    rows = _jsonl(out / "sft" / "openai_chat.jsonl")
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    text = _jsonl(out / "sft" / "text.jsonl")
    assert text[0]["text"].startswith("<start_of_turn>user\n") and text[0]["text"].endswith("<end_of_turn>\n")

    datasets = pytest.importorskip("datasets")
    for name in ("openai_chat.jsonl", "text.jsonl"):
        ds = datasets.load_dataset("json", data_files=str(out / "sft" / name), split="train")
        assert len(ds) == 3 * n


def test_a_killed_refinement_resumes_without_paying_again(tmp_path, source_run, refine_url):
    ref = tmp_path / "ref"
    full = run_cli("refine", str(source_run), "--out", str(ref), "--base-url", refine_url, "--model", "sim-model",
                   "--json")
    total = json.loads(full.stdout)["requests"]
    out = tmp_path / "out"
    assert run_cli("refine", str(source_run), "--out", str(out), "--base-url", refine_url, "--model", "sim-model"
                   ).returncode == 0
    lines = (out / "log.jsonl").read_bytes().splitlines(keepends=True)
    kept = lines[: len(lines) // 2]  # what a kill halfway leaves behind
    (out / "log.jsonl").write_bytes(b"".join(kept) + b'{"type":"tu')  # and a torn last line
    done_calls = sum(b'"type":"turn"' in x for x in kept)
    res = run_cli("refine", str(source_run), "--out", str(out), "--base-url", refine_url, "--model", "sim-model",
                  "--resume", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["requests"] == total - done_calls
    assert (out / "opinions.jsonl").read_bytes() == (ref / "opinions.jsonl").read_bytes()


def test_unparseable_extractions_are_retried_then_counted(tmp_path, source_run, sim_process):
    script = tmp_path / "bad.yaml"
    script.write_text(yaml.safe_dump([{"pattern": "between Maximilian", "reply": "I cannot help with that."}, *SCRIPT]))
    url = sim_process("--seed", "1", "--script", str(script))
    cfg = tmp_path / "refine.yaml"
    cfg.write_text(yaml.safe_dump({"retry": {"max_attempts": 2, "base_delay_s": 0.01}}))
    res = run_cli("refine", str(source_run), "--out", str(tmp_path / "o"), "--base-url", url, "--model", "sim-model",
                  "--scenario", str(cfg), "--json")
    assert res.returncode == 1
    s = json.loads(res.stdout)
    assert s["extract_failed"] == 2 and s["extract_failures_by_reason"] == {"unparseable_opinions": 2}
    assert s["conversations"] == 4 and s["extracted"] == 12 and s["accounted"]


def test_an_extraction_cut_by_max_tokens_drops_its_last_line_and_never_verifies_it(tmp_path, source_run, refine_url):
    cfg = tmp_path / "refine.yaml"
    cfg.write_text(yaml.safe_dump({"extract_max_tokens": 80}))  # the sim cuts the reply inside its 4th line
    out = tmp_path / "o"
    res = run_cli("refine", str(source_run), "--out", str(out), "--base-url", refine_url, "--model", "sim-refiner",
                  "--scenario", str(cfg), "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    n = 4
    assert s["extracted"] == 4 * n and s["cut_by_max_tokens"] == n and s["accounted"]
    assert not s["refiner_is_generator"] and "notice: the refiner" not in res.stderr  # another model refined
    cut = [o for o in _jsonl(out / "opinions.jsonl") if o["drop_reason"] == "cut_by_max_tokens"]
    assert all(o["opinion_id"].endswith("|3") and o["verdict"] is None for o in cut)
    assert all("Science is making our lives worse and more dangerous every year.".startswith(o["text"])
               and o["text"] != "Science is making our lives worse and more dangerous every year." for o in cut)
    log = (out / "log.jsonl").read_text()
    assert log.count('"speaker":"verify"') == 3 * n  # the cut line was never sent for verification


def test_bad_refine_input_exits_2(tmp_path, source_run):
    cfg = tmp_path / "refine.yaml"
    cfg.write_text("dedup: {method: spectral}\n")
    res = run_cli("refine", str(source_run), "--scenario", str(cfg))
    assert res.returncode == 2 and "dedup.method" in res.stderr and not (source_run / "refined").exists()
    res = run_cli("refine", str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "not a run directory" in res.stderr


def test_remote_embeddings_ride_out_429s_and_resets_and_a_killed_dedup_pays_no_vector_twice(
        tmp_path, source_run, refine_url, sim_process):
    import signal
    import subprocess
    import sys

    from tests.conftest import wait_for

    faults = [{"kind": "status", "status": 429, "retry_after": 0.05, "times": 2}, {"kind": "reset", "times": 2}]
    emb_url = sim_process("--seed", "2", "--latency-ms", "400", "--faults", json.dumps(faults))
    cfg = tmp_path / "refine.yaml"
    cfg.write_text(yaml.safe_dump({"retry": {"max_attempts": 10, "base_delay_s": 0.01, "max_delay_s": 0.05},
                                   "dedup": {"embeddings": "openai", "embeddings_base_url": emb_url,
                                             "embeddings_batch_size": 1}}))
    args = ["refine", str(source_run), "--base-url", refine_url, "--model", "sim-model", "--scenario", str(cfg),
            "--json"]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    distinct = json.loads(ref.stdout)["texts_embedded_now"]
    stats = sim_stats(emb_url)
    assert stats["faults"] == {"status": 2, "reset": 2} and stats["rate_limited"] == 2  # the faults did fire
    assert stats["embedded_texts"] == distinct >= 3  # each distinct text embedded once, whatever failed

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "culturepark.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / "embeddings.jsonl"
    wait_for(lambda: cache.exists() and cache.read_bytes().count(b"\n") >= 1, timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = cache.read_bytes()
    cached = sum(len(orjson.loads(line)["keys"]) for line in data[: data.rfind(b"\n") + 1].splitlines())
    assert 1 <= cached < distinct  # killed in the middle of de-duplication
    again = run_cli(*args, "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["texts_embedded_now"] == distinct - cached  # nothing paid twice
    assert (out / "opinions.jsonl").read_bytes() == (tmp_path / "ref" / "opinions.jsonl").read_bytes()


def test_paper_preset_extracts_both_compatriots_and_exports_the_original_format(tmp_path, tiny_data, sim_process,
                                                                                  refine_url):
    run = sim_run(tmp_path, tiny_data, sim_process("--seed", "4"), mode="in")
    out = tmp_path / "refined"
    res = run_cli("refine", str(run), "--out", str(out), "--preset", "paper", "--base-url", refine_url, "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    n = 4
    # one extraction per utterance of either compatriot (the original's), six opinions each
    said = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    utterances = sum(r.get("type") == "turn" and r.get("role") in ("delegate", "main_contact") for r in said)
    assert utterances > 2 * n and s["extract_per"] == "utterance" and s["verify"] is True
    assert s["extract_speakers"] == "both" and s["extracted"] == 6 * utterances and s["accounted"]
    assert s["dedup"]["method"] == "kmeans" and s["dedup"]["keep"] == "longest"
    assert not s["refiner_is_generator"]  # the preset's GPT-4-class refiner, not the generator
    assert json.loads((out / "log.jsonl").read_text().splitlines()[0])["backends"]["refiner"]["model"] == "gpt-4"
    ops = _jsonl(out / "opinions.jsonl")
    assert {o["speaker"] for o in ops} == {"delegate", "main_contact"}
    assert s["export_format"] == "paper" and s["kept"] == s["exported"]  # 20 passes cover every kept opinion
    assert json.loads((out / "sft" / "format.json").read_text())["prompt_style"] == "paper"
    codes = {(o["culture"], o["item_id"]): o["stance_code"] for o in ops}
    for row in _jsonl(out / "sft" / "openai_chat.jsonl"):
        system, user, answer = (m["content"] for m in row["messages"])
        culture = system.split()[3]
        assert system == f"You are {system.split()[2]} {culture} chatbot who knows {culture} culture very well."
        assert user.startswith("Answer with a number from ") and "Options: " in user and "exactly one" in user
        item = "27" if "parents proud" in user else "158"
        assert answer.startswith(f"{codes[(culture, item)]}. ") and len(answer) > 10


def test_the_ablation_switches_generate_then_verify_then_diversify(tmp_path, source_run, refine_url):
    """The paper's Generate / +Verify / +Diversify rows from one set of conversations: --no-verify
    asks nothing but the extractions, --no-dedup keeps near-duplicates; each summary says which."""
    args = ["refine", str(source_run), "--base-url", refine_url, "--model", "sim-model", "--json"]
    n = 4
    gen = json.loads(run_cli(*args, "--no-verify", "--no-dedup", "--out", str(tmp_path / "g")).stdout)
    assert gen["verify"] is False and gen["dedup"]["enabled"] is False and gen["requests"] == n  # extractions only
    assert gen["extracted"] == 6 * n and gen["entail"] == gen["contradict"] == gen["rewritten"] == 0
    assert gen["too_short"] == n and gen["deduplicated_removed"] == 0 and gen["kept"] == 5 * n and gen["accounted"]
    assert '"speaker":"verify"' not in (tmp_path / "g" / "log.jsonl").read_text()
    ver = json.loads(run_cli(*args, "--no-dedup", "--out", str(tmp_path / "v")).stdout)
    assert ver["verify"] is True and ver["entail"] == 4 * n and ver["deduplicated_removed"] == 0 and ver["kept"] == 4 * n
    div = json.loads(run_cli(*args, "--out", str(tmp_path / "d")).stdout)
    assert div["deduplicated_removed"] == n and div["kept"] == 3 * n  # the default: every step on
