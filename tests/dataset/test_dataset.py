"""`culturepark dataset build/verify` on a refined run of the sim server: the folder loads with
`datasets` offline, held-out items stay in test, two builds are the same bytes, verify catches a
changed byte, and every drop of the quality gates is counted."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from culturepark.agents.meta import ConversationMeta
from culturepark.agents.protocol import repeats_itself
from culturepark.benchmarks.results import FidelityRecord, FidelityResult, JudgeRates, JudgeRecord, StanceJudge
from culturepark.dataset.gates import Verdicts, conversation_reason
from culturepark.dataset.models import Gates
from culturepark.dataset.sources import Conversation
from culturepark.trainers.refine.postprocess import word_count
from tests.conftest import REPO, run_cli_here, sim_run, write_tiny_data
from tests.trainers.test_refine import SCRIPT

ITEMS = ["27", "31", "158"]
PER_ITEM = 3  # conversations per culture x item
CONVERSATIONS = 2 * len(ITEMS) * PER_ITEM
EXAMPLES = 4  # per conversation: the script's six opinions less one irrelevant and one too short (no dedup)


@contextlib.contextmanager
def _sim(*args: str) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "culturepark.cli", "sim-server", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("listening on "), line
        yield line.split()[-1]
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (2 cultures x 3 items x 3 conversations) and its refinement at RUN/refined."""
    root = tmp_path_factory.mktemp("ds")
    data = write_tiny_data(root / "data")
    script = root / "script.yaml"
    script.write_text(yaml.safe_dump(SCRIPT))
    with _sim("--seed", "4") as url, _sim("--seed", "1", "--script", str(script)) as refine_url:
        out = sim_run(root, data, url, items=ITEMS, conversations_per_item=PER_ITEM)
        res = run_cli_here("refine", str(out), "--base-url", refine_url, "--model", "sim-model", "--no-dedup",
                           "--json")
        assert res.returncode == 0, res.stderr
        res = run_cli_here("refine", str(out), "--out", str(root / "refined-paper"), "--base-url", refine_url,
                           "--model", "sim-model", "--export-format", "paper", "--json")
        assert res.returncode == 0, res.stderr
    return out


def build(run: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    res = run_cli_here("dataset", "build", str(run), "--out", str(out), *flags)
    assert res.returncode == 0, res.stderr
    return res


def manifest(out: Path) -> dict:
    return orjson.loads((out / "manifest.json").read_bytes())


def rows(out: Path, config: str, split: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for p in sorted((out / config).glob(f"{split}-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_the_folder_loads_offline_with_named_splits_and_typed_features(run, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "ds"
    build(run, out)
    m = manifest(out)
    sft = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))  # the card's default config
    assert set(sft) == {"train", "validation", "test"}
    assert {sp: len(sft[sp]) for sp in sft} == m["rows"]["sft"]
    assert sum(m["rows"]["sft"].values()) == EXAMPLES * CONVERSATIONS
    f = sft["train"].features
    assert f["stance_code"].dtype == "int32" and f["culture"].dtype == "string"
    assert list(f["messages"].feature) == ["role", "content"]
    assert sft["train"][0]["messages"][-1]["role"] == "assistant"
    convs = datasets.load_dataset(str(out), "conversations", cache_dir=str(tmp_path / "cache"))
    assert sum(len(convs[sp]) for sp in convs) == CONVERSATIONS
    assert convs["train"].features["turns"].feature["speaker"].dtype == "string"
    # a conversation and every example made from it share a split: nothing of a test conversation is trained on
    where = {c["conversation_id"]: sp for sp in convs for c in convs[sp]}
    assert all(where[e["conversation_id"]] == sp for sp in sft for e in sft[sp])
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nlicense: other\n") and "config_name: sft" in readme and "default: true" in readme


def test_held_out_items_are_in_test_only_and_written_for_eval_wvs(run, tmp_path):
    out = tmp_path / "ds"
    build(run, out, "--holdout-items", "1", "--seed", "3")
    held = (out / "heldout_items.txt").read_text().split()
    trained = (out / "trained_items.txt").read_text().split()
    assert len(held) == 1 and held[0] in ITEMS and not set(held) & set(trained)
    for config in ("sft", "conversations"):
        for split in ("train", "validation"):
            assert not [r for r in rows(out, config, split) if r["item"] in held]
        assert len([r for r in rows(out, config, "test") if r["item"] in held]) >= 2 * PER_ITEM
    assert set(trained) == {r["item"] for r in rows(out, "sft", "train")}
    # the file is what `eval wvs --trained-items` takes: bare ids, one a line
    from culturepark.cli import build_parser
    args = build_parser().parse_args(["eval", "wvs", "--model", "openai:m", "--culture", "Chinese",
                                      "--trained-items", *trained])
    assert args.trained_items == trained
    named = tmp_path / "named"
    build(run, named, "--holdout-items", "Q31", "Q158")
    assert (named / "heldout_items.txt").read_text() == "31\n158\n"


@pytest.mark.parametrize("bad,says", [(["--holdout-items", "3"], "at least one must stay"),
                                      (["--holdout-items", "Q999"], "Q999 not in the data"),
                                      (["--min-self-report", "0.5"], "no eval fidelity result")])
def test_a_build_that_cannot_be_done_writes_nothing(run, tmp_path, bad, says):
    res = run_cli_here("dataset", "build", str(run), "--out", str(tmp_path / "ds"), *bad)
    assert res.returncode == 2 and says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_two_builds_of_the_same_inputs_are_the_same_bytes(run, tmp_path):
    for fmt in ("parquet", "jsonl"):
        a, b = tmp_path / f"a-{fmt}", tmp_path / f"b-{fmt}"
        build(run, a, "--holdout-items", "1", "--format", fmt)
        build(run, b, "--holdout-items", "1", "--format", fmt)
        files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
        assert any(f.endswith(f".{fmt}") for f in files)
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_verify_passes_then_names_the_changed_byte_the_stray_file_and_the_changed_source(run, tmp_path):
    source = tmp_path / "run"
    shutil.copytree(run, source)  # its refinement comes along at run/refined
    out = tmp_path / "ds"
    build(source, out)
    ok = run_cli_here("dataset", "verify", str(out))
    assert ok.returncode == 0 and "1 source(s) match" in ok.stdout, ok.stderr

    shard = out / "sft" / "train-00000-of-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    bad = run_cli_here("dataset", "verify", str(out))
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "sft/train-00000-of-00001.parquet: changed" in bad.stderr
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert run_cli_here("dataset", "verify", str(out)).returncode == 0

    (out / "sft" / "extra.parquet").write_bytes(b"x")
    assert "sft/extra.parquet: not in the manifest" in run_cli_here("dataset", "verify", str(out)).stderr
    (out / "sft" / "extra.parquet").unlink()
    with open(source / "log.jsonl", "ab") as fh:
        fh.write(b"\n")
    assert "the run's log changed" in run_cli_here("dataset", "verify", str(out)).stderr
    source.rename(tmp_path / "moved")  # published without its sources: the folder still checks on its own
    alone = run_cli_here("dataset", "verify", str(out))
    assert alone.returncode == 0 and "0 source(s) match" in alone.stdout and "is not here" in alone.stderr
    missing = run_cli_here("dataset", "verify", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no manifest.json" in missing.stderr


def _fidelity(run: Path, out: Path, source: str | None = None) -> tuple[int, int, int]:
    """A fidelity result for `run`: the first third of its conversations re-answered their stance,
    the next third answered one step off, then one unparseable, and the rest never asked. The judge
    read every conversation: 'unclear' on every other one, else the stance. Returns
    (exact, off, unparseable)."""
    convs = [orjson.loads(x) for x in (run / "conversations.jsonl").read_bytes().splitlines()]
    n = len(convs) // 3
    records = []
    for i, c in enumerate(convs[: 2 * n + 1]):
        stance = c["meta"]["stance_code"]
        after = stance if i < n else (None if i == 2 * n else (stance - 1 if stance > 1 else stance + 1))
        records.append(FidelityRecord(id=c["id"], culture=c["meta"]["culture"], item=c["meta"]["item_id"],
                                      stance=stance, after=after))
    rates = JudgeRates(conversations=len(convs), unclear=0, unparseable=0, exact=1.0, within_one=1.0,
                       unclear_rate=0.0)
    judge = StanceJudge(model_spec="openai:judge", source=str(run), requests=len(convs), overall=rates,
                        by_culture={}, by_item={}, per_conversation=[
                            JudgeRecord(id=c["id"], culture=c["meta"]["culture"], item=c["meta"]["item_id"],
                                        stance=c["meta"]["stance_code"],
                                        verdict="unclear" if i % 2 else c["meta"]["stance_code"])
                            for i, c in enumerate(convs)])
    base = FidelityResult.model_validate(orjson.loads((REPO / "tests/fixtures/results_v1/fidelity.json").read_bytes()))
    base.model_copy(update={"source": source or str(run), "per_conversation": records, "judge": judge}).write(
        out / "fidelity" / "fidelity.json")
    return n, n, 1


def _first_ids(run: Path, n: int) -> set[str]:
    return {orjson.loads(x)["id"] for x in (run / "conversations.jsonl").read_bytes().splitlines()[:n]}


def test_every_drop_of_the_gates_is_counted_in_the_manifest_and_the_card(run, tmp_path):
    exact, off, unparseable = _fidelity(run, tmp_path / "evals")
    everything = tmp_path / "all"
    build(run, everything)
    kept_ids = _first_ids(run, exact)
    short = sum(word_count(r["messages"][-1]["content"]) < 15 for sp in ("train", "validation", "test")
                for r in rows(everything, "sft", sp) if r["conversation_id"] in kept_ids)
    assert 0 < short < EXAMPLES * exact
    out = tmp_path / "gated"
    build(run, out, "--evals", str(tmp_path / "evals"), "--min-self-report", "1.0", "--min-answer-words", "15")
    m = manifest(out)
    conv = m["drops"]["conversations"]
    assert (conv["self_report_below"], conv["self_report_unparseable"]) == (off, unparseable)
    assert conv["self_report_missing"] == CONVERSATIONS - exact - off - unparseable
    kept = sum(m["rows"]["conversations"].values())
    assert kept == exact and kept + sum(conv.values()) == CONVERSATIONS
    ex = m["drops"]["examples"]
    assert ex["of_dropped_conversations"] == EXAMPLES * (CONVERSATIONS - exact)
    assert ex["answer_too_short"] == short
    assert sum(m["rows"]["sft"].values()) == EXAMPLES * exact - ex["answer_too_short"]
    assert m["evaluations"]["fidelity"] == [str(tmp_path / "evals" / "fidelity" / "fidelity.json")]
    card = (out / "README.md").read_text()
    assert f"| conversations | self_report_below | {off} |" in card and "| openai:judge |" in card
    # a result written from another working directory names the run by a relative path: matched by name and ids
    _fidelity(run, tmp_path / "evals-relative", source=run.name)
    again = tmp_path / "relative"
    build(run, again, "--evals", str(tmp_path / "evals-relative"), "--min-self-report", "1.0", "--min-answer-words", "15")
    assert manifest(again)["drops"] == m["drops"]

    judged = tmp_path / "judged"
    build(run, judged, "--evals", str(tmp_path / "evals"), "--judge-fidelity", "1.0")
    jm = manifest(judged)
    assert jm["drops"]["conversations"]["judge_unclear"] == CONVERSATIONS // 2
    assert sum(jm["rows"]["conversations"].values()) == CONVERSATIONS - CONVERSATIONS // 2
    assert {r["judge_verdict"] for sp in ("train", "validation", "test") for r in rows(judged, "conversations", sp)
            } != {None}


def _conversation(texts: list[str], status: str = "done") -> Conversation:
    person = {"name": "Wei", "culture": "Chinese", "person": "a Chinese person", "culture_phrase": "Chinese culture",
              "possessive": "his"}
    meta = ConversationMeta.model_validate({
        "culture": "Chinese", "country": "China", "country_file": "China", "mode": "cross", "version": "v2",
        "item_id": "27", "item_text": "x", "item_options": "1. a 2. b 3. c 4. d", "stance_code": 2,
        "stance_text": "b", "stance_policy": "sample", "stance_respondents": 1,
        "participants": {"delegate": person, "main_contact": {**person, "name": "Ann"}}})
    return Conversation("c", status, [("Wei" if i % 2 == 0 else "Ann", t) for i, t in enumerate(texts)], meta)


@pytest.mark.parametrize("texts,status,gates,reason", [
    (["a b", "c d", "e f", "g h"], "done", Gates(), None),
    (["a b", "c d", "e f", "g h"], "failed", Gates(), "failed"),
    (["a b", "c d", "A b.", "c  d", "more"], "done", Gates(), "looping"),
    (["a b", "c d", "A b.", "c  d", "more"], "done", Gates(keep_looping=True), None),
    (["a b", "c d", "e f", "g h"], "done", Gates(min_words=9), "too_few_words"),
    (["a b", "c d", "e f", "g h"], "done", Gates(max_words=7), "too_many_words"),
    (["a b", "c d", "e f", "g h"], "done", Gates(min_self_report=0.5), "self_report_missing"),
])
def test_each_conversation_gate_names_its_reason(texts, status, gates, reason):
    assert conversation_reason(_conversation(texts, status), gates, Verdicts(None, None)) == reason


def test_self_report_scores_by_distance_on_the_items_scale():
    conv = _conversation(["a b", "c d"])  # stance 2 on a 1-4 scale
    for code, threshold, reason in [(2, 1.0, None), (3, 1.0, "self_report_below"), (3, 0.6, None),
                                    (4, 0.6, "self_report_below"), (None, 0.0, "self_report_unparseable")]:
        assert conversation_reason(conv, Gates(min_self_report=threshold), Verdicts({"c": code}, None)) == reason
    assert conversation_reason(conv, Gates(judge_fidelity=0.0), Verdicts(None, {"c": "unclear"})) == "judge_unclear"
    assert repeats_itself(["x", "y", "x", "y"]) and not repeats_itself(["x", "y", "x", "z"])


def test_a_refine_directory_is_an_input_too_and_its_paper_examples_keep_their_conversation(run, tmp_path):
    refined = run.parent / "refined-paper"  # its header names the run
    out = tmp_path / "ds"
    build(refined, out)
    m = manifest(out)
    exported = orjson.loads((refined / "refine_summary.json").read_bytes())["exported"]
    assert sum(m["rows"]["sft"].values()) == exported and m["sources"][0]["refine_format"] == "paper"
    assert m["sources"][0]["refine_dir"] == str(refined.resolve())
    examples = [r for sp in ("train", "validation", "test") for r in rows(out, "sft", sp)]
    taught = [r for r in examples if r["opinion_id"] is not None]
    assert taught and all(r["messages"][-1]["content"].startswith(f"{r['stance_code']}. ") for r in taught)
    assert all(r["messages"][0]["content"].startswith(f"You are a {r['culture']} chatbot") for r in examples)
    # `train lora` reads the prompt style beside the SFT file, as it does in a refine directory
    fmt = orjson.loads((out / "sft" / "format.json").read_bytes())
    assert fmt["prompt_style"] == "paper" and fmt["examples"] == exported and "sft/format.json" in m["files"]

    edited = tmp_path / "edited"
    shutil.copytree(refined, edited)
    sft = edited / "sft" / "openai_chat.jsonl"
    sft.write_bytes(sft.read_bytes().replace(b"chatbot", b"robot", 1))
    res = run_cli_here("dataset", "build", str(edited), "--out", str(tmp_path / "no"))
    assert res.returncode == 2 and "does not match the refinement's opinions.jsonl" in res.stderr
    assert not (tmp_path / "no").exists()
