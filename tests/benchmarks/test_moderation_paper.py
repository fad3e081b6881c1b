"""`eval moderation --parse paper`: the original's per-task question and label words, one attempt,
its lenient reading; the same answers read strictly beside it; strict stays the default, unchanged."""
import json

import pytest
import yaml

from culturepark.benchmarks.moderation import bundled_specs, load_spec, parse_label_strict, parse_paper
from culturepark.benchmarks.results import PaperLabels
from tests.conftest import run_cli_here

OFF = PaperLabels(positive="OFF", negative="NOT_OFF")
ONE = PaperLabels(positive="1", negative="0")

# (labels, answer, lenient reading, strict reading)
READINGS = [
    (OFF, "OFF", 1, 1),
    (OFF, "NOT_OFF", 0, 0),
    (OFF, '"not_off".', 0, 0),
    (OFF, "Not offensive.", 0, None),  # 'not' anywhere → negative (the original's rule)
    (OFF, "This is OFF, clearly offensive", 1, None),
    (OFF, "I cannot judge this.", 0, None),  # 'cannot' holds 'not': negative, as the original read it
    (OFF, "Offensive.", 1, None),  # 'off' in 'offensive'
    (OFF, "Sure.", None, None),
    (ONE, "1", 1, 1),
    (ONE, "0.", 0, 0),
    (ONE, "Answer: 1 (not 0)", 1, None),  # 1/0 words have no 'not': the positive word is looked for first
    (ONE, "no", None, None),
    (PaperLabels(positive="HS", negative="NOT_HS"), "hs", 1, 1),
    (PaperLabels(positive="HS", negative="NOT_HS"), "There is no hate speech here, NOT_HS", 0, None),
]


@pytest.mark.parametrize(("labels", "answer", "lenient", "strict"), READINGS)
def test_each_answer_is_read_the_originals_way_and_strictly(labels, answer, lenient, strict):
    assert parse_paper(answer, labels) == lenient
    assert parse_label_strict(answer, labels) == strict


def test_every_bundled_spec_has_the_originals_question_and_its_strict_view_is_the_old_spec():
    for name in bundled_specs():
        spec = load_spec(name)
        assert spec.paper_labels is not None and spec.paper_prompt is not None
        for word in (spec.paper_labels.positive, spec.paper_labels.negative):
            assert f'"{word}"' in spec.paper_prompt, name  # the question names its label words
        assert spec.paper_prompt.endswith("without explanation:")
        # the strict mode hashes the spec as before the paper fields existed: old evals resume
        assert set(spec.strict_view()) == {"name", "path", "text_field", "label_field", "positive_labels",
                                           "negative_labels", "language", "culture", "task"}
    assert load_spec("korean_hate").paper_labels == PaperLabels(positive="HS", negative="NOT_HS")


def _data(tmp_path, rows, paper=True):
    data = tmp_path / "mod.jsonl"
    data.write_text("".join(json.dumps({"post": t, "label": lab}) + "\n" for t, lab in rows))
    spec = {"name": "mine", "path": str(data), "text_field": "post", "positive_labels": ["BAD"],
            "negative_labels": ["OK"], "language": "English", "culture": "American", "task": "insults"}
    if paper:
        spec |= {"paper_prompt": 'if the following sentence is offensive, just say "OFF", otherwise, say "NOT_OFF" '
                                 'without explanation:', "paper_labels": {"positive": "OFF", "negative": "NOT_OFF"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_paper_parse_scores_lenient_only_answers_and_shows_the_strict_f1_of_the_same_answers(tmp_path, sim_process):
    # replies only to the original's question: the yes/no question gets the sim's default chatter
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump([
        {"pattern": r"just say \"OFF\".*zqexact-bad", "reply": "OFF"},
        {"pattern": r"just say \"OFF\".*zqexact-ok", "reply": "NOT_OFF"},
        {"pattern": r"just say \"OFF\".*zqloose-bad", "reply": "It is offensive."},  # lenient only: positive
        {"pattern": r"just say \"OFF\".*zqloose-ok", "reply": "Not offensive at all."},  # lenient only: negative
    ]))
    url = sim_process("--seed", "3", "--script", str(script))
    rows = [("zqexact-bad 1", "BAD"), ("zqexact-ok 1", "OK"), ("zqloose-bad 1", "BAD"), ("zqloose-bad 2", "BAD"),
            ("zqloose-ok 1", "OK"), ("zqloose-ok 2", "OK")]
    spec = _data(tmp_path, rows)
    args = ["eval", "moderation", "--model", "openai:sim-model", "--base-url", url, "--dataset", str(spec),
            "--seeds", "2"]
    res = run_cli_here(*args, "--parse", "paper", "--out", str(tmp_path / "p"), "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["parse"] == "paper" and r["macro_f1"]["mean"] == 1.0 and r["unparseable"] == 0
    # strictly only the two exact answers are read: F1 = 2·1·(1/3)/(4/3) = 0.5 per class
    assert r["macro_f1_strict"] == {"mean": 0.5, "std": 0.0, "n": 2}
    assert [s["macro_f1_strict"] for s in r["per_seed"]] == [0.5, 0.5]
    assert r["requests"] == len(rows) * 2  # one attempt per row and seed: nothing re-asked
    # both F1s side by side in the printed summary
    shown = run_cli_here(*args, "--parse", "paper", "--out", str(tmp_path / "p"), "--resume")
    assert shown.returncode == 0, shown.stderr
    assert "parse paper: macro-F1 1.000" in shown.stdout and "0.500" in shown.stdout and "strict" in shown.stdout
    # the default stays our strict yes/no mode, recorded as such, with none of the paper fields
    s = json.loads(run_cli_here(*args, "--out", str(tmp_path / "s"), "--json").stdout)
    assert s["parse"] == "strict" and "macro_f1_strict" not in s and s["data_hash"] != r["data_hash"]
    assert s["prompts_hash"] != r["prompts_hash"]  # another question: never mixed with the paper's answers


def test_paper_parse_in_compare_records_the_mode_in_each_row(tmp_path, sim_process):
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump([{"pattern": r"just say \"OFF\"", "reply": "NOT_OFF, not offensive"}]))
    url = sim_process("--seed", "3", "--script", str(script))
    spec = _data(tmp_path, [("a", "BAD"), ("b", "OK")])
    res = run_cli_here("eval", "compare", "--models", "openai:sim-model", "--tasks", f"moderation:{spec}", "--base-url",
                  url, "--seeds", "1", "--parse", "paper", "--out", str(tmp_path / "c"), "--json")
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout)["rows"][0]["result"]
    assert row["parse"] == "paper" and row["macro_f1"]["mean"] == 0.3333  # always negative: F1− = 2/3, F1+ = 0
    assert row["macro_f1_strict"]["mean"] == 0.0  # more than a label word: nothing read strictly
