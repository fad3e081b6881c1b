"""`eval content --second-level`: the original's sub-categories of each kind, shares per culture."""
import json

import yaml

from culturepark.benchmarks.content import SUBKINDS
from tests.conftest import run_cli_here


def test_second_level_categories_give_the_scripted_shares(tmp_path, sim_process):
    script = tmp_path / "judge.yaml"
    script.write_text(yaml.safe_dump([
        {"pattern": r"Scientific Beliefs\nParagraph: .*family", "reply": "Moral and Ethical Beliefs."},
        {"pattern": r"Scientific Beliefs\nParagraph: .*money", "reply": "Economic Beliefs"},
        {"pattern": r"Traditional Norms\nParagraph: .*elders", "reply": "Traditional Norms"},
        {"pattern": r"Economic Customs\nParagraph: .*wood", "reply": "Social or religious, hard to say."},  # two words
        {"pattern": r"Statement: .*(family|money)", "reply": "Belief."},
        {"pattern": r"Statement: .*elders", "reply": "norm"},
        {"pattern": r"Statement: .*wood", "reply": "A custom."},
    ]))
    url = sim_process("--seed", "1", "--script", str(script))
    refined = tmp_path / "refined"
    refined.mkdir()
    ops = [("o1", "Chinese", "I put my family first."), ("o2", "Chinese", "Saving money is a virtue."),
           ("o3", "Chinese", "We respect elders."), ("o4", "German", "We knock on wood.")]
    (refined / "opinions.jsonl").write_text("".join(json.dumps({"opinion_id": i, "culture": c, "text": t,
                                                                "kept": True}) + "\n" for i, c, t in ops))
    args = ["eval", "content", str(refined), "--model", "openai:judge", "--base-url", url, "--out", str(tmp_path / "c")]
    res = run_cli_here(*args, "--second-level", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["by_culture"]["Chinese"]["belief"] == {"count": 2, "share": 0.6667}
    second = r["second_level"]
    assert second["Chinese"]["belief"]["ethical"] == {"count": 1, "share": 0.5}
    assert second["Chinese"]["belief"]["economic"] == {"count": 1, "share": 0.5}
    assert second["Chinese"]["norm"]["traditional"] == {"count": 1, "share": 1.0}
    assert second["German"]["custom"]["unparseable"] == 1 and second["German"]["custom"]["judged"] == 0
    assert set(second["all"]) == {"belief", "norm", "custom"}
    assert set(second["all"]["custom"]) - {"records", "judged", "unparseable"} == set(SUBKINDS["custom"][1])
    shown = run_cli_here(*args, "--second-level", "--resume")
    assert shown.returncode == 0 and "Chinese belief: sub-category: religious 0.0" in shown.stdout
    plain = json.loads(run_cli_here(*args[:-1], str(tmp_path / "p"), "--json").stdout)
    assert "second_level" not in plain and plain["by_culture"] == r["by_culture"]
