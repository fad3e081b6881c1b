"""Education study: a scripted sim server whose learner answers are known → hand-computed distances."""
import asyncio
import json
import math
import statistics

import orjson
import pytest
import yaml

from culturepark.agents.learners import base_sequence, walk
from culturepark.agents.meta import Learner as MetaLearner
from culturepark.agents.meta import LearnerMeta, SurveyItem, Tutor, learner_meta
from culturepark.agents.wvs import WVSData
from culturepark.benchmarks.education import Learner, pooled_scores, score
from culturepark.runs.in_process import run_async
from culturepark.runs.prepare import RunOptions
from tests.conftest import PUBLISHED_HOFSTEDE as PUBLISHED
from tests.conftest import run_cli_here, write_hofstede

SCRIPT = [  # first match wins; the learner's last message decides the reply
    {"pattern": "What did you learn", "reply": "That family comes first."},
    {"pattern": "How much do you agree", "reply": "4"},
    {"pattern": r"Earlier you talked with Wei.*Survey item 02:", "reply": "1"},  # Chinese post-test, item 2
    {"pattern": r"^Answer as a typical person from Germany would\.\nSurvey item 01:", "reply": "3-5"},  # a range: invalid
    {"pattern": "Answer as a typical person", "reply": "3"},
]


def study(url, **kw):
    spec = {"name": "edu-test", "kind": "education", "cultures": ["Chinese", "German"],
            "arms": [{"name": "a", "tutor": "openai:tutor-a", "base_url": url},
                     {"name": "b", "tutor": "openai:tutor-b", "base_url": url}],
            "learners_per_arm": 2, "learning_turns": 2, "answer_tries": 3,
            "test": {"vsm13": True, "wvs_items": ["27"]},
            "learner_backend": {"provider": "openai", "model": "sim-learner", "base_url": url},
            "sampling": {"max_tokens": 30}, "seed": 3, "concurrency": 8,
            "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02}}
    spec.update(kw)
    return spec


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_scripted_learners_give_the_hand_computed_distances_gain_and_counts(tmp_path, tiny_data, sim_process):
    """Also: the report's education section is built from education.json, labelled simulated."""
    write_hofstede(tiny_data)
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump(SCRIPT))
    url = sim_process("--script", str(script))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study(url)))
    out = tmp_path / "run"
    result = asyncio.run(run_async(path, RunOptions(out=out, data_dir=tiny_data)))
    assert result.exit_code == 0 and result.summary.done == 8

    # blind, balanced assignment: each culture has 2 learners per arm, and no prompt names the arm
    metas = [orjson.loads(line)["meta"] for line in (out / "conversations.jsonl").read_bytes().splitlines()]
    for c in ("Chinese", "German"):
        assert sorted(m["arm"] for m in metas if m["culture"] == c) == ["a", "a", "b", "b"]
    log = (out / "log.jsonl").read_text()
    assert "tutor-a" not in log.split('"type":"turn"', 1)[1].split('"request_hash"')[0]

    typed = score(out, tiny_data, bootstrap=500)
    assert typed.by_culture["Chinese"]["a"].learners == 2 and typed.pooled is not None
    res = typed.to_json()  # the file's shape, as education.json holds it
    assert res["learners"] == "simulated" and res["note"] == "simulated learners, not a human study"
    # idv is undefined for German learners before learning (item 1 never got a valid answer), so the
    # C-free distance uses the five dimensions every culture has in both phases
    assert res["dimensions"] == {"a": ["pdi", "mas", "uai", "lto", "ivr"], "b": ["pdi", "mas", "uai", "lto", "ivr"]}
    dims = ["pdi", "mas", "uai", "lto", "ivr"]
    half = {d: (PUBLISHED["China"][d] - PUBLISHED["Germany"][d]) / 2 for d in dims}
    # pre: every answer 3 → all indices 0; centred published values are ±half
    pre = math.sqrt(sum(h ** 2 for h in half.values()))
    # post: Chinese learners answer item 2 with 1 → PDI = 35 × (m7 − m2) = 70; German stay 0.
    # Centred: ±35 against ±half[pdi]
    post = math.sqrt((35 - half["pdi"]) ** 2 + sum(half[d] ** 2 for d in dims if d != "pdi"))
    for c in ("Chinese", "German"):
        for arm in ("a", "b"):
            s = res["by_culture"][c][arm]
            assert s["learners"] == 2
            assert s["pre_distance"]["mean"] == pytest.approx(pre, abs=1e-3)
            assert s["post_distance"]["mean"] == pytest.approx(post, abs=1e-3)
            assert s["gain"]["mean"] == pytest.approx(pre - post, abs=1e-3) and s["gain"]["std"] == 0
            assert s["experience"]["mean"] == 4.0 and s["free_text_answers"] == 2
            assert s["invalid_answers"] == {"pre": 2 if c == "German" else 0, "post": 0, "exp": 0}
    # WVS item: |3 − mean of the country's valid respondents| / (4 − 1); negative codes are not answers
    china = WVSData(tiny_data).answers("China", "27")
    expected = abs(3 - statistics.fmean(china)) / 3
    assert res["by_culture"]["Chinese"]["a"]["wvs_distance"]["wvs:27"]["pre"]["mean"] == pytest.approx(expected, abs=1e-4)
    diff = res["arm_differences"]["b - a"]["gain"]
    assert diff["diff"] == pytest.approx(0, abs=1e-6) and diff["ci95"] == [0.0, 0.0] and diff["n"] == [4, 4]
    assert orjson.loads((out / "education.json").read_bytes())["learners_scored"] == 8
    # pooled item means give the same figures here (every learner of a group answered alike)
    pooled = res["pooled"]
    assert pooled["dimensions"] == dims
    for c in ("Chinese", "German"):
        for arm in ("a", "b"):
            g = pooled["by_culture"][c][arm]
            assert g["pre_distance"] == pytest.approx(pre, abs=1e-3) and g["post_distance"] == pytest.approx(post, abs=1e-3)
            assert g["valid_answers"] == {"pre": 2 * 24 - (2 if c == "German" else 0), "post": 48}
    assert pooled["by_arm"]["a"]["gain"] == pytest.approx(pre - post, abs=1e-3)
    pooled_diff = pooled["arm_differences"]["b - a"]["gain"]
    assert pooled_diff["diff"] == pytest.approx(0, abs=1e-6) and pooled_diff["ci95"] == [0.0, 0.0]
    assert pooled_diff["undefined_resamples"] == 0 and pooled_diff["n"] == [4, 4]

    # the invalid item was asked answer_tries (3) times, then left invalid — never guessed
    german = next(line for line in (out / "conversations.jsonl").read_bytes().splitlines()
                  if b'"German:' in line)
    turns = orjson.loads(german)["turns"]
    assert [t["text"] for t in turns[:3]] == ["3-5"] * 3
    per_session = len(base_sequence(learner_meta(metas[0])))
    assert len(turns) == per_session + 2

    from culturepark.report_page import build
    page = build([out], tmp_path / "report").read_text()
    assert "Cultural education" in page and "simulated learners, not a human study" in page
    assert "Pooled per group" in page and "Pooled gain difference b - a: 0.000" in page
    assert (tmp_path / "report" / "education_0.png").stat().st_size > 10_000

    cli = run_cli_here("eval", "education", str(out), "--data-dir", str(tiny_data), "--json")
    assert cli.returncode == 0 and orjson.loads(cli.stdout)["note"] == "simulated learners, not a human study"
    assert run_cli_here("eval", "education", str(tmp_path / "nothing")).returncode == 2


def test_walk_re_asks_an_unparseable_answer_then_moves_on():
    meta = LearnerMeta(culture="Chinese", country="China", country_file="China", hofstede="China", arm="a",
                       learner=MetaLearner(name="Sam", person="a learner", reason="wants to learn"),
                       tutor=Tutor(name="Wei", person="a Chinese person", culture_phrase="Chinese culture",
                                   possessive="his", country="China"),
                       test=[SurveyItem(key="vsm13:1", question="q", lo=1, hi=5)], learning_turns=1,
                       likert=["helpful"], free_text=None)
    aligned, nxt = walk(meta, ["no idea"], answer_tries=2)
    assert nxt.phase == "pre" and nxt.attempt == 2
    aligned, nxt = walk(meta, ["no idea", "still no"], answer_tries=2)
    assert nxt.phase == "learn" and nxt.role == "learner"  # counted invalid later, not asked a third time
    aligned, nxt = walk(meta, ["4", "question?", "answer.", "6", "2"], answer_tries=1)
    assert [s.phase for s in aligned] == ["pre", "learn", "learn", "post", "exp"] and nxt is None


def test_education_scenarios_are_validated_like_the_others(tmp_path, tiny_data):
    write_hofstede(tiny_data)
    bad = study("http://127.0.0.1:9/v1", arms=[{"name": "a", "tutor": "openai:x"}, {"name": "a", "tutor": "openai:y"}])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    done = run_cli_here("validate", str(path), "--data-dir", str(tiny_data))
    assert done.returncode == 2 and "arm names must be unique" in done.stderr
    path.write_text(yaml.safe_dump(study("http://127.0.0.1:9/v1", arms=[{"name": "a", "tutor": "nonsense"}])))
    done = run_cli_here("run", str(path), "--data-dir", str(tiny_data), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "model spec" in done.stderr and not (tmp_path / "o").exists()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    header = {"type": "run", "scenario": study("http://127.0.0.1:9/v1")}
    (corrupt / "log.jsonl").write_text(json.dumps(header) + "\ngarbage\n")
    done = run_cli_here("eval", "education", str(corrupt))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "log.jsonl:2" in done.stderr


def test_the_bundled_studies_validate_against_the_shared_data(shared_data):
    ok = run_cli_here("validate", "education-quickstart", "education-paper", "--data-dir", str(shared_data))
    assert ok.returncode == 0, ok.stderr


def _learner(culture, arm, pre, post):
    hofstede = {"Chinese": "China", "German": "Germany"}[culture]
    return Learner(f"{culture}:{arm}:{len(pre)}", culture, hofstede, hofstede, arm, "simulated",
                   answers={"pre": {f"vsm13:{i}": v for i, v in pre.items()},
                            "post": {f"vsm13:{i}": v for i, v in post.items()}})


def test_pooled_scores_use_item_means_where_no_single_learner_answered_every_item():
    """Each learner leaves half the items invalid, so no learner has an index; the groups do."""
    first = {i: (3 if i <= 12 else None) for i in range(1, 25)}
    second = {i: (None if i <= 12 else 3) for i in range(1, 25)}
    moved = {**first, 7: 5}  # a Chinese learner's post-test: item 7 at 5 → PDI = 35 × (5 − 3) = 70
    learners = [_learner("Chinese", "a", first, moved), _learner("Chinese", "a", second, second),
                _learner("German", "a", first, first), _learner("German", "a", second, second)]
    res = pooled_scores(learners, PUBLISHED, ["Chinese", "German"], ["a"], reps=200, seed=1).to_json()
    dims = ["pdi", "idv", "mas", "uai", "lto", "ivr"]
    assert res["dimensions"] == dims
    half = {d: (PUBLISHED["China"][d] - PUBLISHED["Germany"][d]) / 2 for d in dims}
    pre = math.sqrt(sum(h ** 2 for h in half.values()))
    post = math.sqrt((35 - half["pdi"]) ** 2 + sum(half[d] ** 2 for d in dims if d != "pdi"))
    for c in ("Chinese", "German"):
        g = res["by_culture"][c]["a"]
        assert g["pre_distance"] == pytest.approx(pre, abs=1e-3) and g["post_distance"] == pytest.approx(post, abs=1e-3)
        assert g["valid_answers"] == {"pre": 24, "post": 24} and g["learners"] == 2
    assert res["by_arm"]["a"]["gain"] == pytest.approx(pre - post, abs=1e-3)

    # arm b: nobody answered item 1 validly before learning, so IDV is left out of every pooled
    # distance (both arms, both phases), not guessed; b's indices stay 0, so its gain is 0
    full = dict.fromkeys(range(1, 25), 3)
    arm_b = [_learner(c, "b", {**full, 1: None}, full) for c in ("Chinese", "German") for _ in range(2)]
    res = pooled_scores(learners + arm_b, PUBLISHED, ["Chinese", "German"], ["a", "b"], reps=200, seed=1).to_json()
    five = ["pdi", "mas", "uai", "lto", "ivr"]
    assert res["dimensions"] == five
    pre5 = math.sqrt(sum(half[d] ** 2 for d in five))
    post5 = math.sqrt((35 - half["pdi"]) ** 2 + sum(half[d] ** 2 for d in five if d != "pdi"))
    assert res["by_arm"]["b"]["gain"] == pytest.approx(0, abs=1e-6)
    diff = res["arm_differences"]["b - a"]["gain"]
    assert diff["diff"] == pytest.approx(-(pre5 - post5), abs=1e-3) and diff["n"] == [4, 4]
    # a resample that draws one of arm a's learners twice loses half the items: counted, not used
    assert 0 < diff["undefined_resamples"] < 200 and diff["ci95"][0] <= diff["diff"] <= diff["ci95"][1]


def test_per_learner_distances_of_all_arms_use_one_set_of_dimensions():
    """An arm whose learners never answered item 1 has no IDV; the other arm's distances leave IDV out too."""
    from culturepark.benchmarks.education import centred_learner_distances, learner_dimensions
    from culturepark.benchmarks.hofstede import indices

    full = dict.fromkeys(range(1, 25), 3)
    by_arm = {"a": [_learner(c, "a", full, {**full, 2: 1}) for c in ("Chinese", "German")],
              "b": [_learner(c, "b", {**full, 1: None}, full) for c in ("Chinese", "German")]}
    for group in by_arm.values():
        for l in group:
            l.indices = {ph: indices({int(k[6:]): v for k, v in l.answers[ph].items()}) for ph in ("pre", "post")}
    dims = learner_dimensions(by_arm, ["China", "Germany"], PUBLISHED)
    assert dims == ["pdi", "mas", "uai", "lto", "ivr"]
    centred_learner_distances(by_arm["a"], PUBLISHED, dims)
    half = {d: (PUBLISHED["China"][d] - PUBLISHED["Germany"][d]) / 2 for d in dims}
    # arm a's pre-test is all 3s: indices 0, so the distance is the centred published scores' norm over
    # the five dimensions (IDV, which arm a has, is not in it)
    assert by_arm["a"][0].distance["pre"] == pytest.approx(math.sqrt(sum(h ** 2 for h in half.values())), abs=1e-3)
    # an arm without learners of every culture yet (a human study in progress) holds nobody back
    assert learner_dimensions({"a": by_arm["a"], "b": by_arm["b"][:1]}, ["China", "Germany"], PUBLISHED) == \
        ["pdi", "idv", "mas", "uai", "lto", "ivr"]
    assert learner_dimensions({"a": by_arm["a"][:1]}, ["China", "Germany"], PUBLISHED) == []
