"""`eval phenomena --construct paper`: the original's extend rate and understanding ratio, per
delegate turn after the first, on turns whose topic shifts the judge's script knows."""
import json
import re

import yaml

from culturepark.benchmarks.phenomena import PAPER_EXTEND, paper_items, paper_label
from culturepark.engine.batch import BatchResult
from tests.conftest import run_cli_here, sim_run


def test_the_originals_questions_verbatim_per_delegate_turn_after_the_first():
    from types import SimpleNamespace

    meta = SimpleNamespace(participants=SimpleNamespace(delegate=SimpleNamespace(name="Wei")))
    row = {"id": "c1", "turns": [{"speaker": "Wei", "text": "Family first."}, {"speaker": "Anna", "text": "Why?"},
                                 {"speaker": "Wei", "text": "Duty."}, {"speaker": "Wei", "text": "Football!"}]}
    items = paper_items([(row, meta)], "chat")
    assert [i.id for i in items] == ["c1|t1|extend", "c1|t1|understanding_ratio", "c1|t2|extend",
                                     "c1|t2|understanding_ratio"]
    assert items[2].request.messages[1]["content"] == f"{PAPER_EXTEND}\nParagraph 1: Family first.\nParagraph 2: Football!"
    assert items[3].request.messages[1]["content"].endswith("Just answer with Yes, or No\nParagraph: Football!")
    assert all(i.validate is None for i in items)  # asked once, as the original did


def test_the_originals_lenient_reading():
    assert [paper_label(BatchResult(t)) for t in ("Yes.", "yes and no", "No", "Not the same topic")] == \
        ["yes", "yes", "no", "no"]
    assert paper_label(BatchResult(None, "failed")) is None and paper_label(None) is None


def test_paper_construct_gives_the_scripted_extend_rate_and_understanding_ratio(tmp_path, tiny_data, sim_process):
    run = sim_run(tmp_path, tiny_data, sim_process("--seed", "4"))
    convs = [json.loads(x) for x in (run / "conversations.jsonl").read_text().splitlines()]
    said = {c["id"]: [t["text"] for t in c["turns"] if t["speaker"] == c["meta"]["participants"]["delegate"]["name"]]
            for c in convs}
    later = [t for turns in said.values() for t in turns[1:]]
    assert len(later) >= 4 and len(set(later)) == len(later)  # each judged turn is told apart by its text
    shifted = [turns[-1] for turns in said.values() if len(turns) > 1]  # each conversation drifts at its end
    understood = later[:3]
    script = [{"pattern": "Paragraph 2: " + re.escape(t), "reply": "No, another topic."} for t in shifted]
    script += [{"pattern": "Paragraph: " + re.escape(t), "reply": "Yes, it does."} for t in understood]
    script += [{"pattern": "same topic", "reply": "Yes"}, {"pattern": "cross-cultural", "reply": "Not really."}]
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump(script))
    url = sim_process("--seed", "1", "--script", str(tmp_path / "judge.yaml"))
    res = run_cli_here("eval", "phenomena", str(run), "--model", "openai:judge", "--base-url", url, "--construct", "paper",
                  "--out", str(tmp_path / "p"), "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["mode"] == "paper" and r["requests"] == 2 * len(later)  # one attempt per turn and question
    every = r["by_culture"]["all"]
    assert every["extend"]["records"] == len(later) and every["extend"]["unparseable"] == 0
    assert every["extend"]["yes"]["count"] == len(later) - len(shifted)
    assert every["extend"]["yes"]["share"] == round((len(later) - len(shifted)) / len(later), 4)
    assert every["understanding_ratio"]["yes"]["count"] == len(understood)
    assert set(r["by_culture"]) == {"all", "Chinese", "German"}
    shown = run_cli_here("eval", "phenomena", str(run), "--model", "openai:judge", "--base-url", url, "--construct",
                    "paper", "--out", str(tmp_path / "p"), "--resume")
    assert shown.returncode == 0 and "construct paper" in shown.stdout and "extend:" in shown.stdout
    ours = json.loads(run_cli_here("eval", "phenomena", str(run), "--model", "openai:judge", "--base-url", url,
                              "--out", str(tmp_path / "o"), "--json").stdout)
    assert ours["mode"] == "ours" and set(ours["by_culture"]["all"]) == {"stance_shift", "understanding"}
