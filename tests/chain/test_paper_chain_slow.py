"""The chain is wired: a paper-format SFT set that teaches answer codes → `train lora` on CPU →
`eval wvs` through the CLI in the style the adapter was trained in → the tuned model gives the
taught codes, where the base model does not. Everything offline on the embedded model."""
import csv
import json

import pytest

from culturepark.agents import paper_format
from culturepark.agents.wvs import WVSData
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

# Six WVS items and the code taught for each: neither the scale's first option nor its last.
TAUGHT = {"27": 3, "28": 2, "29": 3, "30": 2, "158": 6, "122": 1}
OPTIONS4 = "1. Strongly agree 2. agree 3. Disagree 4. Strongly disagree"
ITEMS = [
    ("27", "One of my main goals in life has been to make my parents proud", OPTIONS4),
    ("28", "When a mother works for pay, the children suffer", OPTIONS4),
    ("29", "On the whole, men make better political leaders than women do", OPTIONS4),
    ("30", "A university education is more important for a boy than for a girl", OPTIONS4),
    ("158", "Science and technology are making our lives healthier, easier, and more comfortable.",
     "1. completely Disagree 2. Strongly Disagree 3. Disagree 4. Somewhat Disagree 5. Neither Agree nor Disagree "
     "6. Somewhat Agree 7. Agree 8. Strongly Agree 9. Almost Completely Agree 10. Completely Agree"),
    ("122", "In terms of the effects of immigration on the development of your country, do you agree with "
            "Fills important jobs vacancies?", "0. Disagree 1. Hard to say 2. Agree"),
]


def _data(root):
    wvs = root / "wvs"
    (wvs / "countries").mkdir(parents=True)
    (wvs / "questions.jsonl").write_text("".join(json.dumps({"topic": "T", "q_id": q, "q_content": text,
                                                             "option": opt}) + "\n" for q, text, opt in ITEMS))
    with open(wvs / "countries" / "China.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["B_COUNTRY"] + [f"Q{q}" for q, _, _ in ITEMS])
        for _ in range(4):  # every respondent gives the taught code: the taught code is the modal one
            w.writerow([156] + [TAUGHT[q] for q, _, _ in ITEMS])
    return root


def _sft(path, data):
    rows = []
    for _ in range(8):
        for item in data.items():
            rows.append({"messages": [
                {"role": "system", "content": paper_format.chatbot_system("Chinese")},
                {"role": "user", "content": paper_format.multiple_choice(item)},
                {"role": "assistant", "content": paper_format.answer(TAUGHT[item.q_id])}]})
    path.mkdir()
    (path / "openai_chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "format.json").write_text(json.dumps({"format": "paper", "prompt_style": "paper"}))
    return path / "openai_chat.jsonl"


def _taught_share(report):
    rows = report["cultures"]["Chinese"]["per_item"]
    return sum(r["codes"][0] == TAUGHT[r["item"]] for r in rows) / len(rows)


def test_a_tuned_model_gives_the_taught_codes_in_its_trained_prompt_format(tmp_path):
    pytest.importorskip("peft")
    data_dir = _data(tmp_path / "data")
    sft = _sft(tmp_path / "sft", WVSData(data_dir))
    adapter = tmp_path / "adapter"
    res = run_cli("train", "lora", str(sft), "--out", str(adapter), "--max-steps", "36", "--r", "8", "--lr", "1e-3",
                  "--json", timeout=1200)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["last_loss"] < summary["first_loss"] / 3
    assert (adapter / "adapter_config.json").exists() and (adapter / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert len((adapter / "metrics.jsonl").read_bytes().splitlines()) == 36
    card = json.loads((adapter / "culturepark_prompt.json").read_text())
    assert card == {"template": "gemma", "prompt_style": "paper"}

    def wvs(model, out):
        r = run_cli("eval", "wvs", "--model", model, "--culture", "Chinese", "--seeds", "1", "--temperature", "0",
                    "--data-dir", str(data_dir), "--out", str(tmp_path / out), "--json", timeout=900)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    base = wvs("local:gemma3-270m", "base")
    tuned = wvs(f"local:gemma3-270m+lora:{adapter}", "tuned")
    assert tuned["prompt_style"] == "paper" and tuned["template"] == "gemma"  # evaluated as it was trained
    assert base["prompt_style"] == "persona" and base["template"] is None
    chance = sum(1 / len(it.scale) for it in WVSData(data_dir).items()) / len(ITEMS)
    print(f"taught codes given: base {_taught_share(base):.2f}, tuned {_taught_share(tuned):.2f}, chance {chance:.2f}")
    assert _taught_share(tuned) >= 0.8
    assert _taught_share(base) <= max(chance, 1 / len(ITEMS))  # one lucky item at most
