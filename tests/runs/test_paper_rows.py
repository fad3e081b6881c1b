"""The chain's rows beside base and tuned (`--baseline SPEC …`, `--direct`, `--ablation`) on the sim
server, `paper --explain`, and the direct baseline in the paper's style (`kind: direct, style: paper`)."""
import json

import orjson
import pytest
import yaml

from culturepark.agents.direct import paper_reasons_request, reasons_request
from culturepark.agents.meta import ConversationMeta
from culturepark.runs.paper_explain import SETTINGS, explain
from culturepark.runs.paper_settings import PaperChain
from culturepark.scenarios.loader import parse_scenario
from culturepark.trainers.summaries import RefineSummary
from tests.conftest import run_cli, run_cli_here, scenario_dict

SCRIPT = [
    {"pattern": r"List every distinct opinion that (\w+)",
     "reply": "- I think family duty shapes how we see this question.\n"
              "- I believe my community would answer the same way, for good reasons."},
    {"pattern": r"Opinion: I believe my community", "reply": "Irrelevant."},  # verification drops one of two
    {"pattern": r"Opinion: ", "reply": "Entail."},
    {"pattern": r"Answer yes or no", "model": "^gpt-4$", "reply": "No."},  # the GPT-4 baseline commits
    {"pattern": r"Answer yes or no", "reply": "Hard to say."},  # every other model never does
    {"pattern": r"Please list 10 reasons to support the answer and number them",
     "reply": "1. Family comes first for us.\n2. Our elders taught us this.\n3. Religion shapes this view."},
]


@pytest.fixture
def rows_url(tmp_path, sim_process):
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump(SCRIPT))
    return sim_process("--seed", "3", "--script", str(script), "--finetune-polls", "1")


def _lines(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


@pytest.mark.slow  # the whole paper chain end to end
def test_the_chain_adds_baseline_direct_and_ablation_rows_from_one_set_of_conversations(tmp_path, rows_url,
                                                                                         shared_data):
    out = tmp_path / "chain"
    res = run_cli("paper", "--culture", "Chinese", "--out", str(out), "--base-url", rows_url, "--model", "sim-model",
                  "--versions", "v1", "--limit", "10", "--tpm", "10000000", "--seeds", "1", "--moderation-limit", "4",
                  "--poll-s", "0.01", "--data-dir", str(shared_data),
                  "--baseline", "openai:gpt-4", "gemini:gemini-2.0-flash", "--direct", "--ablation", "--json",
                  timeout=600)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    rows = {row["name"]: row for row in r["rows"]}
    assert list(rows) == ["base", "baseline openai:gpt-4", "baseline gemini:gemini-2.0-flash", "tuned", "direct",
                          "generate", "verify", "diversify"]
    assert all(row["mode"]["mode"] == "paper" and row["mode"]["what"] for row in r["rows"])
    assert r["modes"]["moderation parse"]["mode"] == "ours" and r["modes"]["direct style"]["mode"] == "paper"
    # baselines are evaluated as they are, on every task: only the GPT-4 baseline's answers are readable
    covered = {name: row["cultures"]["Chinese"]["moderation"]["chinese_gender_bias"]["coverage"]["mean"]
               for name, row in rows.items() if name == "base" or name.startswith("baseline")}
    assert covered["baseline openai:gpt-4"] == 1.0 and covered["base"] == covered["baseline gemini:gemini-2.0-flash"] == 0
    assert rows["baseline openai:gpt-4"]["specs"] == {"Chinese": "openai:gpt-4"}
    baselines = [tasks for who, tasks in r["steps"]["eval"].items() if who.startswith("baseline-")]
    assert len(baselines) == 2 and all(len(t) == 2 for t in baselines)  # Hofstede and the moderation set each
    # the ablation refines the chain's own conversations three ways; each trained row has its own model
    s = r["steps"]
    assert set(s["conversations"]) == {"v1", "direct"}
    gen, ver, full = (RefineSummary.read(out / d / "refine_summary.json")
                      for d in ("refined-v1-generate", "refined-v1-verify", "refined-v1"))
    assert gen.conversations == ver.conversations == full.conversations == 10
    assert gen.verify is False and gen.dedup["enabled"] is False and ver.verify and ver.dedup["enabled"] is False
    assert gen.kept == gen.extracted and 0 < ver.kept < gen.kept and full.kept <= ver.kept  # each step drops more
    specs = {name: rows[name]["specs"]["Chinese"] for name in ("tuned", "direct", "generate", "verify", "diversify")}
    assert len({specs[n] for n in ("tuned", "direct", "generate", "verify")}) == 4
    assert all(specs[n].startswith("openai:ft:") for n in specs) and specs["diversify"] == specs["tuned"]
    assert s["sft"]["generate-Chinese"]["examples"] > 0 and s["train"]["direct-Chinese"]["status"] == "succeeded"
    # the direct row: 10 generations, 2 opinions each, 1 of 2 verified: the 10 examples OpenAI takes at least
    # the direct row's run asked in the original's frame, and says so in its header
    header = _lines(out / "conversations-direct" / "log.jsonl")[0]
    assert (header["scenario"]["kind"], header["scenario"]["style"], header["scenario"]["reasons"]) == \
        ("direct", "paper", 10)
    said = [x["text"] for x in _lines(out / "conversations-direct" / "log.jsonl") if x.get("type") == "turn"]
    assert len(said) == 10 and all(t.startswith("1. Family comes first") for t in said)
    html = (out / "report" / "index.html").read_text()
    assert "Every row" in html and "baseline openai:gpt-4" in html and "paper_rows.png" in html
    assert "ablation +Verify" in html and "Modes of the chain" in html
    assert (out / "report" / "paper_rows.png").read_bytes()[:4] == b"\x89PNG"


def test_a_row_with_fewer_examples_than_openai_takes_is_reported_untrained_and_the_chain_goes_on(tmp_path):
    """OpenAI refuses a file of fewer than 10 examples: a small row (a small --limit) is left untrained
    and reported so, before any upload, and the other rows go on."""
    from culturepark.benchmarks.results import SftStep
    from culturepark.runs.paper_chain import train

    chain = PaperChain(cultures=["Chinese"], out=tmp_path, base_url="http://127.0.0.1:9/v1")  # never called
    said: list[str] = []
    steps = train(chain, {"Chinese": SftStep(file=str(tmp_path / "none.jsonl"), examples=9)}, said.append, "direct")
    assert steps["Chinese"].status == "too_few_examples" and steps["Chinese"].model_spec is None
    assert said == ["train direct Chinese: 9 examples, OpenAI needs 10: not trained"]
    assert not (tmp_path / "train-direct").exists()


def test_explain_prints_every_setting_with_the_papers_value_ours_and_why_they_differ(tmp_path):
    res = run_cli_here("paper", "--explain")  # like --help: no --culture, no --out
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == len(SETTINGS) + 2 and lines[-1].endswith("settings differ from the paper's (≠)")
    marked = [x for x in lines[1:-1] if x.startswith("≠")]
    assert f"{len(marked)} of {len(SETTINGS)}" in lines[-1]
    assert any("gpt-3.5-turbo-0613" in x and "gpt-4o-mini-2024-07-18" in x and "no longer fine-tunes" in x
               for x in marked)
    data = json.loads(run_cli_here("paper", "--explain", "--json").stdout)["settings"]
    assert [d["setting"] for d in data] == [s.name for s in SETTINGS]
    assert all(bool(d["why"]) == d["differs"] for d in data)  # a reason exactly where ours differs
    by = {d["setting"]: d for d in data}
    assert by["modes"]["differs"] and by["refiner"]["ours"] == "gpt-4" and not by["de-duplication"]["differs"]
    # the flags given are the chain explained: each switch makes its row the paper's
    given = json.loads(run_cli_here("paper", "--explain", "--json", "--modes", "cross", "in", "--direct", "--ablation",
                                    "--baseline", "openai:gpt-4", "--refiner", "gpt-4o").stdout)["settings"]
    by = {d["setting"]: d for d in given}
    assert not by["modes"]["differs"] and not by["direct generation"]["differs"] and not by["ablation"]["differs"]
    assert by["baselines"]["ours"] == "openai:gpt-4" and by["refiner"]["ours"] == "gpt-4o" and by["refiner"]["differs"]
    assert not list(tmp_path.iterdir())  # nothing run, nothing written
    assert run_cli_here("paper", "--out", str(tmp_path / "o")).returncode == 2  # without --explain: still required


def test_the_explain_table_reads_ours_from_the_objects_the_chain_runs_with(monkeypatch, tmp_path):
    from culturepark.runs import paper_chain
    chain = PaperChain(cultures=["Chinese"], out=tmp_path)
    monkeypatch.setattr(paper_chain, "MODERATION_PARSE", "paper")
    monkeypatch.setattr(paper_chain, "HOFSTEDE_C", 0.0)
    by = {d["setting"]: d for d in explain(chain)}
    assert not by["moderation parse"]["differs"] and by["Hofstede constant C"]["ours"] == "0"
    assert by["LoRA epochs / lr / r / alpha"]["ours"].startswith("6 / ")  # the preset's own, not the OpenAI job's 3
    assert explain(PaperChain(cultures=["Chinese"], out=tmp_path, epochs=2))[11]["ours"].startswith("2 / ")


def _meta(**kw):
    base = {"culture": "Chinese", "country": "China", "country_file": "China.csv", "mode": "cross",
            "version": "direct", "item_id": "27", "item_topic": "T",
            "item_text": "One of my main goals in life has been to make my parents proud",
            "item_options": "1. Strongly agree 2. agree", "stance_code": 2, "stance_text": "agree",
            "stance_policy": "sample", "stance_respondents": 4,
            "participants": {"delegate": {"name": "Wei", "person": "a Chinese man", "culture": "Chinese",
                                          "culture_phrase": "Chinese culture", "possessive": "his"},
                             "main_contact": {"name": "Amy", "person": "an American woman", "culture": "American",
                                              "culture_phrase": "American culture", "possessive": "her"}}}
    return ConversationMeta.model_validate({**base, **kw})


def test_the_paper_style_asks_a_culture_chatbot_for_ten_numbered_reasons_in_a_question_answer_frame():
    req = paper_reasons_request(_meta(), 10, "chat", 480, 0.7)
    assert req.messages == [
        {"role": "system", "content": "You are an Chinese people chatbot that know Chinese people very well."},
        {"role": "user", "content": "Question: How do you think about \"One of my main goals in life has been to "
                                    "make my parents proud\"?\nAnswer: agree\nPlease list 10 reasons to support the "
                                    "answer and number them"}]
    asked = paper_reasons_request(_meta(item_text="Do you trust people?"), 10, "chat", 480, 0.7)
    assert asked.messages[1]["content"].startswith("Question: Do you trust people?\nAnswer:")  # a question as it is
    ours = reasons_request(_meta(), 5, "chat", 240, 0.7)
    assert ours.messages[0]["content"].startswith("You are Wei, a Chinese man") and "5 different reasons" in \
        ours.messages[1]["content"]


def test_direct_style_paper_asks_ten_by_default_and_old_direct_files_keep_their_hash():
    old = parse_scenario(scenario_dict(kind="direct"))
    assert (old.style, old.reasons) == ("ours", 5)
    assert parse_scenario(scenario_dict(kind="direct", style="ours")).content_hash() == old.content_hash()
    paper = parse_scenario(scenario_dict(kind="direct", style="paper"))
    assert paper.reasons == 10 and paper.content_hash() != old.content_hash()
    assert parse_scenario(scenario_dict(kind="direct", style="paper", reasons=3)).reasons == 3


def test_the_dry_run_counts_every_row_it_would_add(tmp_path, shared_data):
    from culturepark.runs.paper_chain import estimate_chain

    def est(**flags):
        return estimate_chain(PaperChain(cultures=["Chinese", "German"], out=tmp_path / "c", limit=10,
                                         data_dir=shared_data, **flags))
    plain, rows = est(), est(baselines=["openai:gpt-4", "gemini:gemini-2.0-flash"], direct=True, ablation=True)
    assert set(rows["steps"]) - set(plain["steps"]) == {"refine-ablation", "conversations-direct", "refine-direct"}
    assert rows["steps"]["conversations-direct"]["requests"] == 10  # one request per culture and item
    assert rows["steps"]["train"]["models"] == 2 * 4 and plain["steps"]["train"]["models"] == 2  # tuned, direct, 2 ablations
    per_model = 24 * 2 * 3  # Hofstede's 24 items, both cultures, 3 seeds
    moderation = (plain["steps"]["eval"]["requests"] - 3 * per_model) // 2  # base's and the tuned models' share
    # base + 2 baselines answer everything; tuned, direct and 2 ablation rows have a model per culture
    assert rows["steps"]["eval"]["requests"] == (3 + 4 * 2) * per_model + (3 + 4) * moderation
    assert rows["steps"]["refine-ablation"]["requests"] > rows["steps"]["refine"]["requests"]  # extraction twice
    assert not (tmp_path / "c").exists()
