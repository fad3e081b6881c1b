"""`eval compare-runs` and `eval diversity` take direct runs: a direct run's texts are its reasons, one
per line (the original's unit); what needs a conversation (fidelity, phenomena) is not measured on it,
and the result says so."""
import json

import pytest
import yaml

from culturepark.benchmarks.results import CompareRunsResult
from culturepark.benchmarks.run_texts import UNITS, reasons_in
from tests.conftest import run_cli_here, sim_run

REASONS = "- My parents sacrificed for me.\n- Family honour matters.\n- Duty is learned at home."


@pytest.mark.parametrize("text,expected", [
    (REASONS, ["My parents sacrificed for me.", "Family honour matters.", "Duty is learned at home."]),
    ("My parents sacrificed for me.\n- Honour.", ["My parents sacrificed for me.", "Honour."]),  # after the "-" cue
    ("1. Family first.\n2) Respect elders.\n\n  3: Faith.\n10. Ten.", ["Family first.", "Respect elders.", "Faith.",
                                                                       "Ten."]),
    ("Reason 1: Duty.\n* Pride\n• Care\n\n", ["Duty.", "Pride", "Care"]),
])
def test_a_direct_turn_splits_into_its_reasons(text, expected):
    assert reasons_in(text) == expected


@pytest.fixture
def two_runs(tmp_path, tiny_data, sim_process):
    script = tmp_path / "gen.yaml"
    script.write_text(yaml.safe_dump([{"pattern": "Give 3 different reasons", "reply": REASONS}]))
    url = sim_process("--seed", "4", "--script", str(script))
    return {kind: sim_run(tmp_path, tiny_data, url, kind, kind=kind, **({"reasons": 3} if kind == "direct" else {}))
            for kind in ("culturepark", "direct")}


def test_compare_runs_and_diversity_take_a_direct_run(tmp_path, two_runs):
    cp, direct = two_runs["culturepark"], two_runs["direct"]  # 2 cultures × 2 items; v2, 4 turns: 2 delegate turns
    res = run_cli_here("eval", "compare-runs", str(cp), str(direct), "--out", str(tmp_path / "cmp"), "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["kinds"] == {"A": "culturepark", "B": "direct"} and list(r["fidelity"]) == ["A"]
    assert list(r["not_measured"]) == ["B"] and r["not_measured"]["B"][0].startswith("fidelity: a direct delegate")
    b_over_a, a_over_b = r["diversity"]["B_over_A"], r["diversity"]["A_over_B"]
    assert (b_over_a["new"], b_over_a["reference"]) == (4 * 3, 4 * 2)  # reasons vs delegate turns
    assert b_over_a["new_texts"] == a_over_b["reference_texts"] == UNITS["direct"]
    assert a_over_b["new_texts"] == UNITS["culturepark"] and a_over_b["diversity_gain"] > 0
    assert (tmp_path / "cmp" / "B" / "reasons.jsonl").read_text().count("\n") == 12
    assert CompareRunsResult.model_validate_json((tmp_path / "cmp" / "compare_runs.json").read_bytes()).to_json() == r
    text = run_cli_here("eval", "compare-runs", str(direct), str(cp), "--out", str(tmp_path / "cmp2")).stdout
    assert f"A {direct} (direct run): not measured: fidelity" in text and "B " in text
    assert f"texts: A = {UNITS['direct']} (12); B = {UNITS['culturepark']} (8)" in text

    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("Family comes first.", "Work hard.")))
    res = run_cli_here("eval", "diversity", str(direct), str(direct / "conversations.jsonl"), str(cp),
                       "--reference", str(seed), "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["rows"]
    assert [(x["new"], x.get("new_texts")) for x in rows] == [(12, UNITS["direct"]), (12, UNITS["direct"]),
                                                              (8, UNITS["culturepark"])]
    assert rows[0]["diversity_gain"] == rows[1]["diversity_gain"]  # the directory and its export read alike
    assert "reference_texts" not in rows[0]  # a plain file's rows, as before
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"q_content": "Family comes first."}) + "\n")
    res = run_cli_here("eval", "diversity", str(direct), "--reference", str(items), "--field", "q_content", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["new"] == 12, res.stderr  # --field: the JSONL file's


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, two_runs):
    seed = tmp_path / "seed.jsonl"
    seed.write_text(json.dumps({"text": "Family comes first."}) + "\n")
    (tmp_path / "empty").mkdir()
    for args, says in (([str(tmp_path / "empty"), "--reference", str(seed)], "not a run directory"),
                       ([str(two_runs["direct"] / "log.jsonl"), "--reference", str(seed)], "no text, messages or turns")):
        res = run_cli_here("eval", "diversity", *args)
        assert res.returncode == 2 and says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
