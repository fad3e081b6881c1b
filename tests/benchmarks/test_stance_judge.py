"""The blind stance judge on the sim server: delegates whose stance is "Strongly agree" SAY it, the others
say nothing of it; the judge must recover that share, the parroting re-ask (self_report) reads ~100 %,
and a control run (delegates told no answer) gives the judge's prior."""
import json

import yaml

from culturepark.agents.meta import ConversationMeta
from culturepark.benchmarks.stance_judge import UNCLEAR, judge_prompt, parse_verdict
from tests.conftest import run_cli_here, sim_run

SCRIPT = [
    # a delegate told "Strongly agree" says so in each of its turns (the prompt ends on its own name)
    {"pattern": r'Moderator: (\w+), .*My answer is "Strongly agree"\.\n.*\n\1:$',
     "reply": "I strongly agree, making my parents proud is my main goal.", "model": "base"},
    # the re-ask: a delegate that parrots its prompt
    {"pattern": r'My answer is "([^"]+)"\..*one survey question', "reply": r"\1", "model": "base"},
    {"pattern": r"one survey question", "reply": "2", "model": "base"},  # no answer in its prompt (control)
    # the judge: the stated stance; else its prior guess for item 27
    {"pattern": r"\w+: I strongly agree", "reply": "1", "model": "judge"},
    {"pattern": r"parents proud", "reply": "2", "model": "judge"},
    {"pattern": r"Conversation:", "reply": "Unclear.", "model": "judge"},
]


def _run(tmp_path, tiny_data, url, name, policy):
    backend = {"provider": "openai", "model": "base", "api": "completions", "base_url": url}
    return sim_run(tmp_path, tiny_data, url, name, backend=backend, items=["27"], conversations_per_item=10,
                   turns=4, stance_policy=policy)


def _stances(run):
    return [json.loads(x)["meta"]["stance_code"] for x in (run / "conversations.jsonl").read_text().splitlines()]


def test_the_blind_judge_recovers_the_share_that_said_it_and_the_control_gives_the_prior(tmp_path, tiny_data,
                                                                                       sim_process):
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump(SCRIPT))
    url = sim_process("--seed", "3", "--script", str(script))
    run, control = _run(tmp_path, tiny_data, url, "run", "sample"), _run(tmp_path, tiny_data, url, "ctl", "control")
    res = run_cli_here("eval", "fidelity", str(run), "--base-url", url, "--judge", "openai:judge", "--per-turn",
                  "--control", str(control), "--out", str(tmp_path / "f"), "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    stances, prior = _stances(run), _stances(control)
    said = stances.count(1) / len(stances)  # the share that stated its stance
    assert 0 < said < 1 and len(stances) == 20
    judge = r["judge"]["overall"]
    # said it → judged 1; the rest → the judge's guess 2, right only where the stance was 2
    assert judge["exact"] == round(said + stances.count(2) / len(stances), 4) and judge["unclear"] == 0
    assert r["self_report"]["exact"] == 1.0 and "overall" not in r  # self-report: the re-ask parrots the prompt
    assert r["control"]["overall"]["exact"] == round(prior.count(2) / len(prior), 4)  # the prior alone
    assert r["lift"]["exact"] == round(judge["exact"] - r["control"]["overall"]["exact"], 4)
    assert [p["k"] for p in r["judge"]["drift"]] == [1, 2]
    assert all(p["exact"] == judge["exact"] for p in r["judge"]["drift"])  # stated from the first turn: flat
    assert set(r["judge"]["by_culture"]) == {"Chinese", "German"} and r["judge"]["by_item"]["27"] == judge
    text = run_cli_here("eval", "fidelity", str(run), "--base-url", url, "--judge", "openai:judge", "--per-turn",
                   "--control", str(control), "--out", str(tmp_path / "f"), "--resume").stdout
    assert "self_report" in text and "blind judge" in text and "lift" in text
    page = tmp_path / "report" / "index.html"
    assert run_cli_here("report", str(tmp_path / "f"), "--out", str(tmp_path / "report")).returncode == 0
    html = page.read_text()
    assert "Stance fidelity: the blind judge" in html and "Self-report (not evidence of adherence" in html
    assert f"<td>{100 * r['lift']['exact']:.1f}</td>" in html
    assert (tmp_path / "report" / "fidelity_drift.png").read_bytes()[:4] == b"\x89PNG"
    bad = run_cli_here("eval", "fidelity", str(run), "--control", str(control), "--out", str(tmp_path / "g"))
    assert bad.returncode == 2 and "need --judge" in bad.stderr
    wrong = run_cli_here("eval", "fidelity", str(run), "--base-url", url, "--judge", "openai:judge", "--control", str(run),
                    "--out", str(tmp_path / "h"))
    assert wrong.returncode == 2 and "not 'control'" in wrong.stderr


def _meta(**kw):
    base = {"kind": "culturepark", "culture": "Chinese", "country": "China", "country_file": "China", "mode": "cross",
            "version": "v2", "item_id": "27", "item_text": "One of my main goals in life has been to make my parents proud",
            "item_options": "1. Strongly agree 2. agree 3. Disagree 4. Strongly disagree", "stance_code": 3,
            "stance_text": "Disagree", "stance_policy": "sample", "stance_respondents": 4,
            "participants": {"delegate": {"name": "Wei", "person": "a Chinese person", "culture": "Chinese",
                                          "culture_phrase": "Chinese culture", "possessive": "his"},
                             "main_contact": {"name": "Lily", "person": "an American person", "culture": "American",
                                              "culture_phrase": "American culture", "possessive": "her"}}}
    return base | kw


def test_the_judge_sees_the_turns_and_the_item_but_no_persona_or_stance():
    from culturepark.agents.meta import read_meta
    meta = read_meta(_meta(), "c1")
    assert isinstance(meta, ConversationMeta)
    prompt = judge_prompt(meta, [{"speaker": "Wei", "text": "Family comes first."}, {"speaker": "Lily", "text": "Hm."}])
    assert "Wei: Family comes first." in prompt and "4. Strongly disagree" in prompt and "Wei's own statements" in prompt
    for secret in ("Chinese person", "answered", "My answer is", "consistent", "Disagree\""):
        assert secret not in prompt
    item = __import__("culturepark.agents.paper_format", fromlist=["x"]).item_from_meta(meta)
    assert parse_verdict("Unclear - they never say", item) == UNCLEAR and parse_verdict("3", item) == 3
    assert parse_verdict("I agree", item) == 2 and parse_verdict("maybe", item) is None
