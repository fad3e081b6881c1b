"""Hofstede's paper-compat scoring (`--mas-weight 25`, `--paper-arabic`) on scripted answers whose
indices and distances are computed by hand here; the manual's scoring stays the default."""
import json
import math

import pytest
import yaml

from culturepark.benchmarks.hofstede import indices
from culturepark.benchmarks.results import HofstedeResult
from tests.conftest import run_cli_here, write_hofstede

# Published rows added to the fixture's table, as in the real table: Jordan has LTO and IVR only.
EXTRA_ROWS = ["ARA;Arab countries;80;38;53;68;23;34", "JOR;Jordan;#NULL!;#NULL!;#NULL!;#NULL!;16;43"]


def test_the_originals_mas_weight_changes_the_second_term_only():
    m = dict.fromkeys(range(1, 25), 3.0)
    m.update({5: 2.0, 3: 2.5, 8: 3.0, 10: 2.0})
    assert indices(m)["mas"] == 35 * -0.5 + 35 * 1 == 17.5  # the VSM13 manual
    assert indices(m, mas_weight=25)["mas"] == 35 * -0.5 + 25 * 1 == 7.5  # the original's hofstede_test.py
    assert {k: v for k, v in indices(m, 25).items() if k != "mas"} == {k: v for k, v in indices(m).items()
                                                                        if k != "mas"}


@pytest.fixture
def hofstede_sim(tmp_path, sim_process):
    """Every VSM13 answer 3 except item 08 (4) and item 10 (2): MAS = w × (4 − 2), every other index 0."""
    data = tmp_path / "data"
    data.mkdir()
    write_hofstede(data)
    table = data / "hofstede" / "6-dimensions-for-website-2015-08-16.csv"
    table.write_text(table.read_text() + "\n".join(EXTRA_ROWS) + "\n")
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump([{"pattern": "Survey item 08", "reply": "4"},
                                      {"pattern": "Survey item 10", "reply": "2"},
                                      {"pattern": "Survey item", "reply": "3"}]))
    return data, sim_process("--seed", "1", "--script", str(script))


def _hofstede(data, url, out, *flags):
    res = run_cli_here("eval", "hofstede", "--model", "openai:sim-model", "--base-url", url, "--culture", "Chinese",
                       "Arabic", "--seeds", "1", "--constant", "50", "--data-dir", str(data), "--out", str(out),
                       *flags)
    assert res.returncode == 0, res.stderr
    return res


def test_paper_compat_rescores_the_same_answers_and_is_recorded(tmp_path, hofstede_sim):
    data, url = hofstede_sim
    out = tmp_path / "h"
    manual = json.loads(_hofstede(data, url, out, "--json").stdout)
    assert "paper_compat" not in manual  # the manual's scoring: nothing recorded, the file as before
    ch = manual["cultures"]["Chinese"]
    assert ch["indices"]["mas"]["mean"] == 70.0  # 35 × (4 − 2)
    # C = 50: every index 50, MAS 120, against China's 80, 20, 66, 30, 87, 24
    assert ch["distance"]["mean"] == round(math.sqrt(30**2 + 30**2 + 54**2 + 20**2 + 37**2 + 26**2), 4) == 84.6227
    ar = manual["cultures"]["Arabic"]
    assert ar["hofstede_country"] == "Arab countries" and len(ar["dimensions_compared"]) == 6

    paper = json.loads(_hofstede(data, url, out, "--json", "--resume", "--mas-weight", "25",
                                 "--paper-arabic").stdout)
    assert paper["requests"] == 0  # scoring only: the same answers, re-scored for free
    assert paper["paper_compat"] == {"mas_weight": 25, "arabic_vs_jordan": True}
    ch = paper["cultures"]["Chinese"]
    assert ch["indices"]["mas"]["mean"] == 50.0  # 25 × (4 − 2)
    assert ch["distance"]["mean"] == round(math.sqrt(30**2 + 30**2 + 34**2 + 20**2 + 37**2 + 26**2), 4) == 73.4915
    ar = paper["cultures"]["Arabic"]
    assert ar["hofstede_country"] == "Jordan" and ar["dimensions_compared"] == ["lto", "ivr"]
    assert ar["distance"]["mean"] == round(math.sqrt((50 - 16) ** 2 + (50 - 43) ** 2), 4)  # two dimensions
    written = HofstedeResult.model_validate_json((out / "hofstede.json").read_bytes())
    assert written.to_json() == paper and written.paper_compat.labels() == [
        "MAS weight 25 (the original's; the manual's is 35)", "Arabic vs Jordan on LTO and IVR (the original's)"]

    text = _hofstede(data, url, out, "--resume", "--mas-weight", "25").stdout
    assert "paper-compat: MAS weight 25" in text and "Arabic vs Jordan" not in text


def test_paper_arabic_without_arabic_is_refused_before_anything_is_written(tmp_path, hofstede_sim):
    data, url = hofstede_sim
    for flags, says in ((["--culture", "Chinese", "--paper-arabic"], "Arabic is not among the cultures"),
                        (["--culture", "Chinese", "--mas-weight", "30"], "invalid choice")):
        out = tmp_path / "x"
        res = run_cli_here("eval", "hofstede", "--model", "openai:sim-model", "--base-url", url, "--data-dir",
                           str(data), "--out", str(out), *flags)
        assert res.returncode == 2 and says in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()
