"""The eval path for every task on the sim server, with scripted answers whose scores we know."""
import json

import pytest
import yaml

from culturepark.benchmarks.hofstede import centred_distances, indices, parse_answer
from culturepark.benchmarks.moderation import f1_scores, parse_yes_no
from tests.conftest import REPO, run_cli_here, sim_run

DATA = REPO.parent / "shared" / "data"
PUBLISHED_CHINA = {"pdi": 80, "idv": 20, "mas": 66, "uai": 30, "lto": 87, "ivr": 24}


def test_vsm13_formulas_on_hand_computed_means():
    m = dict.fromkeys(range(1, 25), 3.0)
    m.update({7: 4.0, 2: 2.0, 20: 3.5, 23: 3.0, 4: 1.0, 1: 2.0, 9: 2.5, 6: 2.0, 5: 2.0, 3: 2.5, 8: 3.0, 10: 2.0,
              18: 4.0, 15: 3.0, 21: 2.0, 24: 3.0, 13: 2.0, 14: 3.0, 19: 3.0, 22: 2.0, 12: 4.0, 11: 2.0, 17: 2.0, 16: 3.0})
    got = indices(m)
    assert got["pdi"] == 35 * 2 + 25 * 0.5 == 82.5
    assert got["idv"] == 35 * -1 + 35 * 0.5 == -17.5
    assert got["mas"] == 35 * -0.5 + 35 * 1 == 17.5  # the original used 25 for the second term
    assert got["uai"] == 40 * 1 + 25 * -1 == 15
    assert got["lto"] == 40 * -1 + 25 * 1 == -15
    assert got["ivr"] == 35 * 2 + 40 * -1 == 30
    m[1] = None
    assert indices(m)["idv"] is None and indices(m)["pdi"] == 82.5


def test_centred_distance_ignores_the_constant():
    human = {"A": {"pdi": 80.0, "idv": 20.0}, "B": {"pdi": 40.0, "idv": 60.0}}
    shifted = {n: {d: v - 55 for d, v in dims.items()} for n, dims in human.items()}  # same shape, other C
    assert centred_distances(shifted, human) == {"A": 0.0, "B": 0.0}
    assert centred_distances({"A": human["A"]}, {"A": human["A"]}) == {"A": None}


def test_answer_parsers():
    assert parse_answer("3") == 3 and parse_answer("I would say 4, very") == 4 and parse_answer("about 10") is None
    assert parse_answer("3-5") is None and parse_answer("1 = of utmost importance") is None  # ranges, scale echoes
    assert parse_answer("I would choose 2.") == 2 and parse_answer("Answer: 5") == 5
    assert parse_answer("2.5") is None and parse_answer("none") is None
    assert parse_yes_no("Yes.") == 1 and parse_yes_no("no, it is fine") == 0 and parse_yes_no("maybe") is None
    assert parse_yes_no("Yes or No") is None and parse_yes_no("yes, yes") == 1
    assert f1_scores([1, 1, 0, 0], [1, 0, 0, 0]) == {"f1_positive": 0.6667, "f1_negative": 0.8,
                                                     "macro_f1": 0.7333, "accuracy": 0.75}


@pytest.fixture
def scripted(tmp_path, sim_process):
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump([
        {"pattern": "sufficient time for your personal", "reply": "It depends."},  # item 1: never valid
        {"pattern": "single number from 1 to 5", "reply": "3"},
        {"pattern": "Answer yes or no", "reply": "Yes."},
    ]))
    return sim_process("--seed", "2", "--script", str(script))


@pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data")
def test_hofstede_on_scripted_answers(tmp_path, scripted):
    out = tmp_path / "h"
    res = run_cli_here("eval", "hofstede", "--model", "openai:sim-model", "--base-url", scripted, "--culture", "Chinese",
                  "German", "--seeds", "2", "--out", str(out), "--json", "--data-dir", str(DATA))
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    china = r["cultures"]["Chinese"]
    assert china["invalid_answers"] == 2 and china["invalid_by_item"] == {"1": 2}  # counted, not guessed
    assert china["indices"]["idv"]["mean"] is None  # m1 is missing, so IDV is undefined
    assert china["indices"]["pdi"] == {"mean": 0.0, "std": 0.0, "n": 2}  # every valid answer is 3
    assert china["diffs"]["pdi"]["mean"] == -80.0
    assert china["dimensions_compared"] == ["pdi", "idv", "mas", "uai", "lto", "ivr"]
    assert china["distance_c0"]["mean"] is None  # IDV missing → no full distance
    assert china["centred_distance"]["mean"] is not None
    assert r["seeds"] == 2 and r["data_hash"] and r["prompts_hash"] and r["model_spec"] == "openai:sim-model"
    again = run_cli_here("eval", "hofstede", "--model", "openai:sim-model", "--base-url", scripted, "--culture", "Chinese",
                    "German", "--seeds", "2", "--out", str(out), "--json", "--resume", "--data-dir", str(DATA))
    assert json.loads(again.stdout)["requests"] == 0  # a finished eval resumes for free
    paper = run_cli_here("eval", "hofstede", "--model", "openai:sim-model", "--base-url", scripted, "--culture", "Chinese",
                    "German", "--seeds", "2", "--out", str(out), "--json", "--resume", "--data-dir", str(DATA),
                    "--constant", "50")
    p = json.loads(paper.stdout)
    assert p["requests"] == 0 and p["constant"] == 50  # C is scoring only: re-scored for free
    assert p["cultures"]["Chinese"]["diffs"]["pdi"]["mean"] == 50 - 80.0  # every index 0 + C vs published 80


def test_hofstede_distance_with_the_papers_constant_on_hand_computed_indices():
    from culturepark.benchmarks.hofstede import _add_distances

    published = {"A": {"pdi": 80.0, "idv": 20.0}}
    for constant, expected in [(0.0, round((50**2 + 50**2) ** 0.5, 4)), (50.0, 0.0)]:
        per_seed = {"A": [{"indices": {"pdi": 30.0, "idv": -30.0, "mas": None, "uai": None, "lto": None,
                                       "ivr": None}}]}
        _add_distances(per_seed, published, 1, constant)
        rec = per_seed["A"][0]
        assert rec["distance_c0"] == round((50**2 + 50**2) ** 0.5, 4) and rec["distance"] == expected
        assert rec["diffs"] == {"pdi": 30.0 + constant - 80.0, "idv": -30.0 + constant - 20.0}


def _moderate(tmp_path, url, rows, seeds):
    """`eval moderation --json` on a dataset of (post, label) rows written with its spec."""
    data = tmp_path / "mod.jsonl"
    data.write_text("".join(json.dumps({"post": t, "label": lab}) + "\n" for t, lab in rows))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "mine", "path": str(data), "text_field": "post",
                                    "positive_labels": ["BAD"], "negative_labels": ["OK"], "language": "English",
                                    "culture": "American", "task": "insults"}))
    res = run_cli_here("eval", "moderation", "--model", "openai:sim-model", "--base-url", url, "--dataset", str(spec),
                  "--seeds", str(seeds), "--out", str(tmp_path / "m"), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_moderation_always_yes_gives_the_expected_macro_f1(tmp_path, scripted):
    rows = [("a", "BAD"), ("b", "BAD"), ("c", "OK"), ("d", "OK"), ("e", "OK"), ("f", "???")]
    r = _moderate(tmp_path, scripted, rows, seeds=3)
    assert r["rows"] == 5 and r["skipped_unknown_labels"] == {"???": 1}
    assert r["macro_f1"] == {"mean": 0.2857, "std": 0.0, "n": 3}  # F1+ = 2·0.4·1/1.4, F1− = 0
    assert r["majority_baseline"]["predicts"] == "negative" and r["majority_baseline"]["macro_f1"] == 0.375
    assert r["unparseable"] == 0 and r["coverage"]["mean"] == 1.0
    assert r["macro_f1_scored"] == r["macro_f1"]  # nothing unparseable: both ways agree


def test_moderation_counts_unparseable_answers_as_wrong_as_the_paper_and_reports_both(tmp_path, sim_process):
    """The issue's case: 4 of 10 answers unreadable, the rest perfect → 0.75 the paper's way, 1.00 ours."""
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump([{"pattern": "zqunclear", "reply": "Hard to say."},
                                      {"pattern": "zqinsult", "reply": "Yes."}, {"pattern": "zqkind", "reply": "No."}]))
    url = sim_process("--seed", "1", "--script", str(script))
    rows = [(f"zqinsult {i}", "BAD") for i in range(3)] + [(f"zqkind {i}", "OK") for i in range(3)]
    rows += [(f"zqunclear {i}", lab) for i, lab in enumerate(["BAD", "BAD", "OK", "OK"])]
    r = _moderate(tmp_path, url, rows, seeds=2)
    assert r["macro_f1"]["mean"] == 0.75 and r["accuracy"]["mean"] == 0.6  # F1 = 2·1·0.6/1.6 per class
    assert r["macro_f1_scored"]["mean"] == 1.0 and r["accuracy_scored"]["mean"] == 1.0
    assert r["coverage"]["mean"] == 0.6 and r["unparseable"] == 8  # 4 rows × 2 seeds
    assert f1_scores([1, 0], [-1, -1]) == {"f1_positive": 0.0, "f1_negative": 0.0, "macro_f1": 0.0, "accuracy": 0.0}


def test_bundled_specs_cover_the_nine_sets():
    from culturepark.benchmarks.moderation import bundled_specs, load_rows, load_spec

    specs = bundled_specs()
    assert len(specs) == 9
    if DATA.exists():
        for name in specs:
            rows, skipped, _ = load_rows(load_spec(name), DATA, None)
            assert rows and not skipped, name


def test_compare_runs_the_same_tasks_for_each_model(tmp_path, scripted):
    data = tmp_path / "mod.jsonl"
    data.write_text("".join(json.dumps({"t": str(i), "label": "1" if i < 3 else "0"}) + "\n" for i in range(8)))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "path": str(data), "text_field": "t", "positive_labels": ["1"],
                                    "negative_labels": ["0"], "language": "English", "task": "spam"}))
    res = run_cli_here("eval", "compare", "--models", "openai:sim-model", "openai:sim-model-b", "--tasks",
                  f"moderation:{spec}", "--base-url", scripted, "--seeds", "2", "--out", str(tmp_path / "c"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("macro-F1") == 2
    rows = json.loads((tmp_path / "c" / "compare.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["openai:sim-model", "openai:sim-model-b"]
    # the same items, data and seeds for both models; only the model in each request differs
    assert rows[0]["items_hash"] == rows[1]["items_hash"] and rows[0]["data_hash"] == rows[1]["data_hash"]
    assert rows[0]["seeds"] == rows[1]["seeds"] == 2 and rows[0]["prompts_hash"] != rows[1]["prompts_hash"]
    for r in rows:
        report = json.loads(next((tmp_path / "c").rglob(f"*{r['model'].split(':')[1]}/*/moderation.json")).read_text())
        assert report["rows"] == 8 and report["items_hash"] == r["items_hash"]


def test_nearest_distances_euclidean_as_the_paper_and_cosine_beside_it():
    import numpy as np

    from culturepark.benchmarks.diversity import nearest_distances

    euclid, cosine = nearest_distances(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[0.0, 1.0], [0.6, 0.8]]))
    assert np.allclose(euclid, [0.8 ** 0.5, 1.0])  # nearest of [1,0] is [0.6,0.8]; of [0,2] is [0,1]
    assert np.allclose(cosine, [0.4, 0.0])  # cosine ignores length: [0,2] and [0,1] point the same way


def test_diversity_gain(tmp_path):
    pytest.importorskip("sentence_transformers")
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Family comes first.", "I respect my elders."]))
    same = run_cli_here("eval", "diversity", str(ref), "--reference", str(ref), "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["diversity_gain"] == 0.0
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                            {"role": "assistant", "content": "Quantum computers factor numbers."}]}) + "\n")
    both = run_cli_here("eval", "diversity", str(new), str(ref), "--reference", str(ref), "--json",
                        "--out", str(tmp_path / "d"))
    far, again = json.loads(both.stdout)["rows"]  # one table: each new file against the same reference
    assert far["diversity_gain"] > 0.5 and far["new"] == 1 and far["distinct_texts_embedded"] == 3
    assert again["diversity_gain"] == 0.0
    rows = [far, again]
    assert json.loads((tmp_path / "d" / "diversity.json").read_text())["rows"] == rows


def test_bad_model_spec_exits_2(tmp_path):
    res = run_cli_here("eval", "hofstede", "--model", "gpt-4", "--culture", "Chinese", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "model spec 'gpt-4'" in res.stderr and not (tmp_path / "x").exists()


@pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data")
@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_report_collects_evals_and_runs_into_one_page(tmp_path, scripted):
    evals = tmp_path / "evals"
    assert run_cli_here("eval", "hofstede", "--model", "openai:sim-model", "--base-url", scripted, "--culture", "Chinese",
                   "--seeds", "2", "--out", str(evals / "h"), "--data-dir", str(DATA)).returncode == 0
    assert run_cli_here("eval", "moderation", "--model", "openai:sim-model", "--base-url", scripted, "--dataset",
                   "english_offensive", "--limit", "20", "--seeds", "2", "--out", str(evals / "m"),
                   "--data-dir", str(DATA)).returncode == 0
    res = run_cli_here("report", str(evals), "--out", str(tmp_path / "report"))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    for png in ("hofstede_Chinese.png", "moderation_f1.png"):
        assert f'src="{png}"' in page and (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"
    assert "english_offensive" in page and "majority macro-F1" in page
    # the log of an eval is not mistaken for a conversation run
    assert "Conversation runs" not in page


def test_eval_wvs_scores_answer_codes_against_real_respondents_with_trained_items_apart(tmp_path, tiny_data,
                                                                                       sim_process):
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump([
        {"pattern": "parents proud", "reply": "1. I want them to be proud of me."},
        {"pattern": "University is more", "reply": "2"},
        {"pattern": "healthier", "reply": "It depends."},  # never readable: counted, not guessed
    ]))
    url = sim_process("--seed", "2", "--script", str(script))
    out = tmp_path / "w"
    args = ["eval", "wvs", "--model", "openai:sim-model", "--base-url", url, "--culture", "Chinese", "--seeds", "2",
            "--trained-items", "27", "--data-dir", str(tiny_data), "--method", "samples", "--json", "--prompt-style",
            "paper"]
    res = run_cli_here(*args, "--out", str(out))
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    china = r["cultures"]["Chinese"]
    assert r["prompt_style"] == "paper" and china["never_asked"] == ["132"]  # all -4 in the fixture
    rows = {x["item"]: x for x in china["per_item"]}
    assert rows["27"]["codes"] == [1, 1] and rows["27"]["share"] == [0.75, 0.75] and rows["27"]["modal"] == [1]
    assert rows["31"]["codes"] == [2, 2] and rows["31"]["is_modal"] == [True, True]  # four answers tie at 1/4
    assert rows["158"]["codes"] == [None, None] and rows["158"]["is_modal"] == [False, False]
    assert china["all"]["agreement"]["mean"] == round(2 / 3, 4) and china["all"]["unparseable"] == 2
    assert china["trained"]["items"] == 1 and china["trained"]["agreement"]["mean"] == 1.0
    assert china["held_out"]["items"] == 2 and china["held_out"]["agreement"]["mean"] == 0.5
    assert china["all"]["chance_agreement"] == round((1 / 4 + 4 / 4 + 4 / 10) / 3, 4)
    # distributions: Q27 all "1" vs China's 1,1,1,2: CDF gap .25 over 3 steps; Q31 all "2" vs 1,2,3,4 uniform:
    # gaps .25 + .5 + .25 = 1 over 3; Q158 never readable: no distribution (counted above, not guessed)
    assert rows["27"]["model_distribution"] == {"1": 1.0} and rows["27"]["answers"] == 2
    assert rows["27"]["w1"] == round(0.25 / 3, 4) and rows["27"]["representativeness"] == round(1 - 0.25 / 3, 4)
    assert rows["27"]["js_similarity"] == 0.6908  # by hand: sqrt((ln(8/7) + .75 ln(6/7) + .25 ln 2) / 2)
    assert rows["31"]["w1"] == round(1 / 3, 4) and "w1" not in rows["158"]
    dist = china["all"]["distribution"]
    assert dist["items"] == 2 and dist["source"] == "samples"
    assert dist["w1"]["value"] == round((0.25 / 3 + 1 / 3) / 2, 4) and dist["share_w1_below_0_2"]["value"] == 0.5
    assert dist["w1"]["interval"][0] <= dist["w1"]["value"] <= dist["w1"]["interval"][1]
    assert china["trained"]["distribution"]["items"] == 1 and china["held_out"]["distribution"]["items"] == 1
    more = json.loads(run_cli_here(*args, "--samples", "5", "--out", str(tmp_path / "m")).stdout)
    rows5 = {x["item"]: x for x in more["cultures"]["Chinese"]["per_item"]}
    assert more["samples"] == 5 and rows5["27"]["answers"] == 5 and rows5["27"]["codes"] == [1, 1]  # seeds unchanged
    text = run_cli_here(*[a for a in args if a != "--json"], "--out", str(out), "--resume").stdout  # the same answers
    assert f"W1 {dist['w1']['value']:.3f} [" in text and "W1<0.2 0.500 [" in text and "(2 items, samples)" in text
    assert "\nChinese held out: W1 " in text and "\nChinese trained: W1 0.083 [" in text  # apart, under the table
    assert run_cli_here("report", str(out), "--out", str(tmp_path / "report")).returncode == 0
    assert "WVS answer distributions" in (tmp_path / "report" / "index.html").read_text()
    assert (tmp_path / "report" / "wvs_w1.png").read_bytes()[:4] == b"\x89PNG"
    from culturepark.agents.cultures import cultures_by_name
    from culturepark.agents.wvs import WVSData
    from culturepark.benchmarks.wvs_items import item_request
    req = item_request(cultures_by_name(["Chinese"], "t")[0], WVSData(tiny_data).item("27"), "chat", 0.7, 0, "paper")
    assert req.messages[0]["content"] == "You are a Chinese chatbot who knows Chinese culture very well."
    assert req.messages[1]["content"].startswith("Answer with a number from 1 to 4. Do you agree with the statement")
    persona = json.loads(run_cli_here(*args[:-1], "persona", "--out", str(tmp_path / "p")).stdout)
    assert persona["prompt_style"] == "persona" and persona["prompts_hash"] != r["prompts_hash"]


def test_hofstede_and_moderation_in_the_paper_prompt_style(tmp_path, sim_process):
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump([
        {"pattern": "Answer with a number from 1 to 5", "reply": "2"},  # the paper's question form only
        {"pattern": "Answer yes or no", "reply": "No."},
    ]))
    url = sim_process("--seed", "2", "--script", str(script))
    res = run_cli_here("eval", "hofstede", "--model", "openai:sim-model", "--base-url", url, "--culture", "Chinese",
                  "--seeds", "1", "--out", str(tmp_path / "h"), "--json", "--data-dir", str(DATA),
                  "--prompt-style", "paper")
    assert res.returncode == 0, res.stderr
    h = json.loads(res.stdout)
    assert h["prompt_style"] == "paper" and h["cultures"]["Chinese"]["invalid_answers"] == 0
    assert h["cultures"]["Chinese"]["indices"]["pdi"]["mean"] == 0.0  # every answer 2
    data = tmp_path / "mod.jsonl"
    data.write_text("".join(json.dumps({"post": f"post {i}", "label": "BAD" if i % 2 else "OK"}) + "\n"
                            for i in range(4)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "mine", "path": str(data), "text_field": "post",
                                    "positive_labels": ["BAD"], "negative_labels": ["OK"], "language": "English",
                                    "culture": "American", "task": "insults"}))
    m = run_cli_here("eval", "moderation", "--model", "openai:sim-model", "--base-url", url, "--dataset", str(spec),
                "--seeds", "1", "--out", str(tmp_path / "m"), "--json", "--prompt-style", "paper")
    assert m.returncode == 0, m.stderr
    mod = json.loads(m.stdout)
    assert mod["prompt_style"] == "paper" and mod["unparseable"] == 0 and mod["accuracy"]["mean"] == 0.5
    from culturepark.benchmarks.moderation import load_spec, moderator_persona
    assert moderator_persona(load_spec(str(spec)), "paper") == ("You are an American chatbot who knows American "
                                                                "culture very well.")


def test_eval_fidelity_recovers_the_scripted_share_of_delegates_who_kept_their_stance(tmp_path, tiny_data,
                                                                                        sim_process):
    run = sim_run(tmp_path, tiny_data, sim_process("--seed", "4"), conversations_per_item=3)
    # the delegates' answers when asked again: Wei (Chinese) says 1 on item 27, Maximilian (German) 3;
    # item 158 is answered unreadably
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump([
        {"pattern": r"Wei, one survey question.*parents proud", "reply": "1"},
        {"pattern": r"Maximilian, one survey question.*parents proud", "reply": "3. I disagree."},
        {"pattern": r"one survey question.*healthier", "reply": "Hard to say."},
    ]))
    url = sim_process("--seed", "1", "--script", str(script))
    res = run_cli_here("eval", "fidelity", str(run), "--base-url", url, "--before-after", "--out", str(tmp_path / "f"),
                  "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    rows = [json.loads(x) for x in (run / "conversations.jsonl").read_text().splitlines()]
    scripted = {"Chinese": 1, "German": 3}
    q27 = [x for x in rows if x["meta"]["item_id"] == "27"]
    expected = sum(x["meta"]["stance_code"] == scripted[x["meta"]["culture"]] for x in q27) / len(rows)
    assert r["self_report"]["conversations"] == len(rows) == 12 and r["self_report"]["exact"] == round(expected, 4)
    assert r["self_report"]["unparseable"] == 6 and r["self_report_by_item"]["158"]["exact"] == 0.0
    near = sum(abs(x["meta"]["stance_code"] - scripted[x["meta"]["culture"]]) <= 1 for x in q27) / len(q27)
    assert r["self_report_by_item"]["27"]["within_one"] == round(near, 4)
    assert r["self_report"]["changed_after_conversation"] == 0.0  # the script answers the same before and after
    assert r["model_spec"] == "openai:sim-model" and r["requests"] >= 2 * len(rows)
    # the delegates as a population: each culture × item's assigned stances against its country's respondents
    from culturepark.agents.wvs import WVSData
    from culturepark.benchmarks.distribution import distribution, normalised_w1
    pop = r["population"]
    assert {(x["culture"], x["item"]) for x in pop["per_item"]} == {(c, q) for c in scripted for q in ("27", "158")}
    for x in pop["per_item"]:
        stances = [y["meta"]["stance_code"] for y in rows if (y["meta"]["culture"], y["meta"]["item_id"]) ==
                   (x["culture"], x["item"])]
        codes = [1, 2, 3, 4] if x["item"] == "27" else list(range(1, 11))
        people = WVSData(tiny_data).answers("China" if x["culture"] == "Chinese" else "Germany", x["item"])
        assert x["conversations"] == len(stances) == 3 and x["respondents"] == len(people)
        assert x["stance_distribution"] == {str(c): round(stances.count(c) / 3, 4) for c in sorted(set(stances))}
        assert x["w1"] == round(normalised_w1(distribution(stances, codes), distribution(people, codes)), 4)
    assert pop["by_culture"]["Chinese"]["items"] == 2 and pop["by_culture"]["German"]["source"] == "stances"


def test_phenomena_and_content_give_the_scripted_rates(tmp_path, tiny_data, sim_process):
    run = sim_run(tmp_path, tiny_data, sim_process("--seed", "4"))
    script = tmp_path / "judge.yaml"
    script.write_text(yaml.safe_dump([  # Chinese delegates (Wei) shift, German ones do not; all understand
        {"pattern": r"Wei \(a Chinese person\).*change their opinion", "reply": "Yes, they did."},
        {"pattern": r"change their opinion", "reply": "No."},
        {"pattern": r"understanding of each other", "reply": "Yes"},
        {"pattern": r"Statement: .*family", "reply": "Belief."},
        {"pattern": r"Statement: .*elders", "reply": "norm"},
        {"pattern": r"Statement: ", "reply": "It could be a custom or a norm."},  # two labels: unparseable
    ]))
    url = sim_process("--seed", "1", "--script", str(script))
    res = run_cli_here("eval", "phenomena", str(run), "--model", "openai:judge", "--base-url", url,
                  "--out", str(tmp_path / "p"), "--json")
    assert res.returncode == 0, res.stderr
    p = json.loads(res.stdout)["by_culture"]
    assert p["Chinese"]["stance_shift"]["yes"] == {"count": 2, "share": 1.0}
    assert p["German"]["stance_shift"]["no"] == {"count": 2, "share": 1.0}
    assert p["all"]["understanding"]["yes"]["share"] == 1.0 and p["all"]["stance_shift"]["yes"]["share"] == 0.5
    refined = tmp_path / "refined"
    refined.mkdir()
    ops = [("o1", "Chinese", "I put my family first.", True), ("o2", "Chinese", "We respect elders.", True),
           ("o3", "German", "We knock on wood.", True), ("o4", "German", "Dropped one about family.", False)]
    (refined / "opinions.jsonl").write_text("".join(json.dumps({"opinion_id": i, "culture": c, "text": t, "kept": k})
                                                    + "\n" for i, c, t, k in ops))
    res = run_cli_here("eval", "content", str(refined), "--model", "openai:judge", "--base-url", url,
                  "--out", str(tmp_path / "c"), "--json")
    assert res.returncode == 0, res.stderr
    c = json.loads(res.stdout)["by_culture"]
    assert c["Chinese"]["belief"] == {"count": 1, "share": 0.5} and c["Chinese"]["norm"]["count"] == 1
    assert c["German"] == {"records": 1, "judged": 0, "unparseable": 1, "belief": {"count": 0, "share": None},
                           "norm": {"count": 0, "share": None}, "custom": {"count": 0, "share": None}}
    rep = run_cli_here("report", str(tmp_path / "p"), str(tmp_path / "c"), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Data quality" in page and "<td>Chinese</td><td>100.0</td><td>100.0</td>" in page  # shifted, understood
    assert "<td>Chinese</td><td>50.0</td><td>50.0</td><td>0.0</td><td>2</td><td>0</td>" in page  # content shares


def test_a_direct_generation_run_is_refined_and_compared_like_a_conversation_run(tmp_path, tiny_data, sim_process):
    gen = sim_process("--seed", "4", "--script", str(_script(tmp_path, "gen.yaml", [
        {"pattern": r"Give 3 different reasons", "reply": "- My parents sacrificed for me.\n- Family honour matters."
                                                         "\n- Duty is learned at home."}])))
    runs = {kind: sim_run(tmp_path, tiny_data, gen, kind, kind=kind, **({"reasons": 3} if kind == "direct" else {}))
            for kind in ("direct", "culturepark")}
    rows = [json.loads(x) for x in (runs["direct"] / "conversations.jsonl").read_text().splitlines()]
    plain = [json.loads(x) for x in (runs["culturepark"] / "conversations.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["turns"]) == 1 and r["meta"]["version"] == "direct" for r in rows)
    assert [r["meta"]["stance_code"] for r in rows] == [r["meta"]["stance_code"] for r in plain]  # same plan
    refiner = sim_process("--seed", "1", "--script", str(_script(tmp_path, "ref.yaml", [
        {"pattern": r"List every distinct opinion that (\w+)", "reply": "- I value my family's honour deeply."},
        {"pattern": r"Opinion: ", "reply": "Entail"}])))
    no_dedup = _script(tmp_path, "refine.yaml", {"dedup": {"enabled": False}})  # the embeddings come once, below
    for d in runs.values():
        res = run_cli_here("refine", str(d), "--out", str(d / "refined"), "--base-url", refiner, "--model", "gpt-4",
                           "--scenario", str(no_dedup))
        assert res.returncode == 0, res.stderr
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps({"text": it["q_content"]}) + "\n" for it in
                            map(json.loads, (tiny_data / "wvs" / "questions.jsonl").read_text().splitlines())))
    res = run_cli_here("eval", "diversity", *(str(d / "refined" / "sft" / "openai_chat.jsonl") for d in runs.values()),
                  str(runs["direct"] / "conversations.jsonl"), "--reference", str(seed), "--json")
    assert res.returncode == 0, res.stderr
    table = json.loads(res.stdout)["rows"]
    assert len(table) == 3 and all(r["reference"] == 4 and r["diversity_gain"] > 0 for r in table)


def _script(tmp_path, name, rules):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(rules))
    return path
