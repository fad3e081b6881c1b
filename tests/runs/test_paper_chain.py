"""`culturepark paper` end to end on the sim server, with a script that plays a GPT-4-class refiner
(opinions listed, verdicts given) and answers the evals: the base model and its fine-tunes differently."""
import json

import orjson
import pytest
import yaml

from tests.conftest import run_cli

SCRIPT = [
    {"pattern": r"List every distinct opinion that (\w+)",
     "reply": "- I think family duty shapes how we see this question.\n"
              "- I believe my community would answer the same way, for good reasons."},
    {"pattern": r"Opinion: ", "reply": "Entail."},
    {"pattern": r"have a boss", "model": "^ft:", "reply": "1"},  # tuned: PDI moves
    {"pattern": r"Answer with a number from 1 to 5", "model": "^ft:", "reply": "3"},
    {"pattern": r"Answer with a number from 1 to 5", "reply": "4"},
    {"pattern": r"Answer yes or no", "model": "^ft:", "reply": "Yes."},
    {"pattern": r"Answer yes or no", "reply": "Hard to say."},  # the base model never commits
]


@pytest.fixture
def chain_url(tmp_path, sim_process):
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump(SCRIPT))
    return sim_process("--seed", "3", "--script", str(script), "--finetune-polls", "3")


def _args(url, out, data):
    return ["paper", "--culture", "Chinese", "German", "--out", str(out), "--base-url", url, "--model", "sim-model",
            "--limit", "8", "--tpm", "10000000", "--seeds", "2", "--moderation-limit", "8", "--poll-s", "0.01", "--data-dir", str(data)]


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_the_papers_chain_runs_every_step_and_resumes_for_free(tmp_path, chain_url, shared_data):
    out = tmp_path / "chain"
    res = run_cli(*_args(chain_url, out, shared_data), "--json", timeout=600)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    s = r["steps"]
    for v in ("v1", "v2"):
        assert s["conversations"][v]["done"] == 8 and s["conversations"][v]["failed"] == 0
        # the refine preset extracts per utterance of the delegate (cross-cultural runs): two opinions each
        log = [orjson.loads(x) for x in (out / f"conversations-{v}" / "log.jsonl").read_bytes().splitlines()]
        said = sum(x.get("type") == "turn" and x.get("role") == "delegate" for x in log)
        assert said >= 8 and s["refine"][v]["extracted"] == 2 * said and s["refine"][v]["kept"] >= 8
    assert json.loads((out / "refined-v1" / "log.jsonl").read_text().splitlines()[0])[
        "backends"]["refiner"]["model"] == "gpt-4"  # the preset's GPT-4-class refiner
    # v1's and v2's kept opinions are merged per item before the 20 passes: an item gets at most 20
    # examples in all (not 20 per version), one per merged kept opinion
    kept: dict[tuple, int] = {}
    for v in ("v1", "v2"):
        for o in (orjson.loads(x) for x in (out / f"refined-{v}" / "opinions.jsonl").read_bytes().splitlines()):
            if o["kept"]:
                kept[(o["culture"], o["item_id"])] = kept.get((o["culture"], o["item_id"]), 0) + 1
    assert sum(kept.values()) > 20  # enough that per-version passes would have given more
    per_question: dict[tuple, int] = {}
    for culture in ("Chinese", "German"):
        for x in (orjson.loads(x) for x in (out / "sft" / culture / "openai_chat.jsonl").read_bytes().splitlines()):
            key = (culture, x["messages"][1]["content"])
            per_question[key] = per_question.get(key, 0) + 1
    for culture in ("Chinese", "German"):
        counts = sorted(n for (c, _), n in per_question.items() if c == culture)
        with_opinions = [min(n, 20) for (c, _), n in kept.items() if c == culture]
        # items with kept opinions: one example each, 20 at most; items without: 20 bare codes
        assert counts == sorted(with_opinions + [20] * (len(counts) - len(with_opinions)))
    assert sum(x["examples"] for x in s["sft"].values()) == sum(per_question.values())
    assert json.loads((out / "sft" / "Chinese" / "format.json").read_text())["merged_versions"] == ["v1", "v2"]
    for culture in ("Chinese", "German"):
        rows = [orjson.loads(x) for x in (out / "sft" / culture / "openai_chat.jsonl").read_bytes().splitlines()]
        assert rows and all(culture in x["messages"][0]["content"] for x in rows)  # one culture per model
        assert s["train"][culture]["status"] == "succeeded" and s["train"][culture]["model_spec"].startswith("openai:ft:")
    table = {row["culture"]: row for row in r["table"]}
    china = table["Chinese"]
    assert china["hofstede_c50_base"]["n"] == 2 and china["hofstede_c50_base"] != china["hofstede_c50_tuned"]
    assert china["hofstede_centred_tuned"]["mean"] is not None
    mod = china["moderation"]["chinese_gender_bias"]
    assert mod["base"]["coverage"]["mean"] == 0.0 and mod["base"]["macro_f1"]["mean"] == 0.0  # unparseable = wrong
    assert mod["tuned"]["coverage"]["mean"] == 1.0
    html = (out / "report" / "index.html").read_text()
    assert "the paper's layout" in html and "chinese_gender_bias" in html and "paper.png" in html
    assert (out / "report" / "paper.png").read_bytes()[:4] == b"\x89PNG"

    again = run_cli(*_args(chain_url, out, shared_data), "--json", timeout=600)
    assert again.returncode == 0, again.stderr
    a = json.loads(again.stdout)
    assert a["table"] == r["table"]  # every step resumed from its directory
    assert all(t["requests"] == 0 for who in a["steps"]["eval"].values() for t in who.values())


def test_the_chains_dry_run_estimates_every_step_and_sends_nothing(tmp_path, shared_data):
    res = run_cli("paper", "--culture", "Chinese", "--out", str(tmp_path / "c"), "--limit", "10", "--dry-run",
                  "--json", "--data-dir", str(shared_data))
    assert res.returncode == 0, res.stderr
    e = json.loads(res.stdout)
    assert set(e["steps"]) == {"conversations-v1", "conversations-v2", "refine", "train", "eval"}
    assert e["steps"]["conversations-v1"]["conversations"] == 10 and e["requests"] > 0
    assert e["steps"]["refine"]["cost_usd_est"] > 0 and e["not_estimated"] and not (tmp_path / "c").exists()


def test_the_chain_tunes_a_model_fine_tunable_today_and_each_trainer_its_own_epochs(tmp_path):
    """The default tune model is one providers fine-tune today; the retired one is refused before
    anything is spent; LoRA keeps its preset's 6 epochs (the original's) unless --epochs says otherwise."""
    from culturepark.engine.errors import InputError
    from culturepark.runs.paper_chain import TRAINING_PRICES, preflight
    from culturepark.runs.paper_settings import PaperChain

    chain = PaperChain(cultures=["Chinese"], out=tmp_path / "c")
    assert chain.tune_model == "gpt-4o-mini-2024-07-18" in TRAINING_PRICES and chain.train_epochs() == 3
    assert PaperChain(cultures=["Chinese"], out=tmp_path, trainer="lora").train_epochs() == 6
    assert PaperChain(cultures=["Chinese"], out=tmp_path, trainer="lora", epochs=2).train_epochs() == 2
    retired = PaperChain(cultures=["Chinese"], out=tmp_path / "c", tune_model="gpt-3.5-turbo-0613")
    with pytest.raises(InputError, match="no longer fine-tunes"):
        preflight(retired)
    assert not (tmp_path / "c").exists()  # nothing written
    PaperChain(cultures=["Chinese"], out=tmp_path, tune_model="gpt-3.5-turbo-0613", trainer="lora").check_tune_model()


@pytest.mark.slow  # the whole paper chain end to end
def test_the_chain_runs_cross_and_in_cultural_conversations_and_merges_their_opinions(tmp_path, chain_url,
                                                                                        shared_data):
    out = tmp_path / "chain"
    res = run_cli(*_args(chain_url, out, shared_data), "--versions", "v1", "--modes", "cross", "in", "--json", timeout=600)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)["steps"]
    assert set(s["conversations"]) == set(s["refine"]) == {"v1", "v1-in"}
    for key, mode in (("v1", "cross"), ("v1-in", "in")):
        rows = [orjson.loads(x) for x in (out / f"conversations-{key}" / "conversations.jsonl").read_bytes()
                .splitlines()]
        assert rows and {r["meta"]["mode"] for r in rows} == {mode}
    speakers = {o["speaker"] for o in (orjson.loads(x) for x in (out / "refined-v1-in" / "opinions.jsonl")
                                       .read_bytes().splitlines())}
    assert speakers == {"delegate", "main_contact"}  # both compatriots of an in-cultural run
    fmt = json.loads((out / "sft" / "Chinese" / "format.json").read_text())
    assert fmt["merged_versions"] == ["v1", "v1-in"] and fmt["examples"] > 0
