"""`data wvs` on a small file in the release's layout, generated here: per-country files that `run` accepts."""
import csv
import json

import yaml

from tests.conftest import run_cli, run_cli_here, scenario_dict


def _release(path, sep=","):
    cols = ["version", "A_YEAR", "B_COUNTRY", "B_COUNTRY_ALPHA", "Q1", "Q27", "Q31", "Q132", "Q158", "Q290"]
    rows = [["v6", 2018, 156, "CHN", 1, 1, 2, -4, 9, 3], ["v6", 2018, 156, "CHN", 2, 2, -2, -4, 10, 1],
            ["v6", 2019, 410, "KOR", 1, 3, 4, 2, 5, 2], ["v6", 2019, 410, "KOR", 3, -1, 3, 1, 6, 2],
            ["v6", 2020, 300, "GRC", 2, 4, 1, 3, -5, 1]]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=sep)
        w.writerow(cols)
        w.writerows(rows)
    return path


def test_the_release_becomes_per_country_files_that_run_accepts(tmp_path, tiny_data, sim_process):
    release = _release(tmp_path / "WVS_Cross-National_Wave_7_csv_v6_0.csv", sep=";")
    out = tmp_path / "mydata"
    res = run_cli("data", "wvs", str(release), "--out", str(out), "--items-from", str(tiny_data), "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["countries"]["China"] == {"alpha3": "CHN", "respondents": 2, "never_asked": ["Q132"]}
    assert s["countries"]["South_Korea"]["never_asked"] == [] and s["countries"]["Greece"]["respondents"] == 1
    with open(out / "wvs" / "countries" / "South_Korea.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["B_COUNTRY", "B_COUNTRY_ALPHA", "Q27", "Q31", "Q158", "Q132"]  # the project's items only
    assert rows[2] == ["410", "KOR", "-1", "3", "6", "1"]  # missing codes copied as they are, no Avg rows
    assert len(rows) == 3
    data = scenario_dict(cultures=["Korean", "Greece"], items=["27", "132"])
    data["backend"]["base_url"] = sim_process("--seed", "4")
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(data))
    run = run_cli("run", str(sc), "--out", str(tmp_path / "run"), "--data-dir", str(out), "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["done"] == 4  # 2 cultures × 2 items; Korea's -1 is not a stance
    again = run_cli("data", "wvs", str(release), "--out", str(out), "--items-from", str(tiny_data))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_data_wvs_refuses_an_inconsistent_item_table_and_warns_of_unlisted_codes(tmp_path, tiny_data):
    release = _release(tmp_path / "release.csv")
    table = tiny_data / "wvs" / "questions.jsonl"
    good = table.read_text()
    table.write_text(good.replace("1. Strongly agree 2. agree 3. Disagree 4. Strongly disagree",
                                  "1. Strongly agree 2. agree 4. Disagree 4. Strongly disagree"))
    bad = run_cli("data", "wvs", str(release), "--out", str(tmp_path / "a"), "--items-from", str(tiny_data))
    assert bad.returncode == 2 and "item Q27: option codes 1, 2, 4, 4" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    table.write_text(good)
    with open(release, "a", newline="") as fh:
        csv.writer(fh).writerow(["v6", 2019, 410, "KOR", 1, 9, 2, 2, 5, 2])  # Q27 offers 1-4
    res = run_cli("data", "wvs", str(release), "--out", str(tmp_path / "b"), "--items-from", str(tiny_data))
    assert res.returncode == 0, res.stderr
    assert "South_Korea.csv: Q27 has valid answer codes 9 that its options (1, 2, 3, 4) do not list" in res.stderr


ARAB = ["EGY", "IRQ", "JOR", "LBN", "LBY", "MAR", "TUN"]


def _several_countries(path):
    """Seven Arab countries (respondents: EGY 3, the others 2, LBN 1) and China; Q132 never asked in the Arab ones;
    a few negative codes (missing values) among the answers."""
    cols = ["version", "B_COUNTRY", "B_COUNTRY_ALPHA", "Q27", "Q31", "Q158", "Q132"]
    numeric = {"EGY": 818, "IRQ": 368, "JOR": 400, "LBN": 422, "LBY": 434, "MAR": 504, "TUN": 788, "CHN": 156}
    counts = {"EGY": 3, "LBN": 1, "CHN": 2}
    rows = []
    for i, alpha in enumerate(numeric):
        for r in range(counts.get(alpha, 2)):
            q27 = -1 if (alpha, r) == ("IRQ", 0) else 1 + (i + r) % 4
            rows.append(["v6", numeric[alpha], alpha, q27, 1 + (i * r) % 4, 1 + (i + 2 * r) % 10,
                         -4 if alpha != "CHN" else 2])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows(rows)
    return path, rows


def test_a_pooled_culture_is_written_recorded_and_run(tmp_path, tiny_data, sim_process):
    release, rows = _several_countries(tmp_path / "release.csv")
    out = tmp_path / "pooled"
    res = run_cli_here("data", "wvs", str(release), "--out", str(out), "--items-from", str(tiny_data), "--json",
                       "--pool", "Arabic=" + ",".join(ARAB), "--pool", "Levant=jor,LBN")
    assert res.returncode == 0, res.stderr
    pools = json.loads(res.stdout)["pools"]
    assert pools["Arabic"]["file"] == "Arab_world_7_countries.csv"  # the culture table's file for Arabic
    assert pools["Arabic"]["countries"] == {"EGY": 3, "IRQ": 2, "JOR": 2, "LBN": 1, "LBY": 2, "MAR": 2, "TUN": 2}
    assert pools["Arabic"]["respondents"] == 14 and pools["Arabic"]["never_asked"] == ["Q132"]
    assert pools["Arabic"]["weighting"].startswith("respondents pooled as they are")
    assert pools["Levant"] == {**pools["Levant"], "file": "Levant.csv", "countries": {"JOR": 2, "LBN": 1},
                               "respondents": 3}
    with open(out / "wvs" / "countries" / "Arab_world_7_countries.csv") as fh:
        pooled = list(csv.reader(fh))
    assert pooled[0] == ["B_COUNTRY", "B_COUNTRY_ALPHA", "Q27", "Q31", "Q158", "Q132"]
    expected = [[str(r[1]), r[2], str(r[3]), str(r[4]), str(r[5]), str(r[6])] for r in rows if r[2] in ARAB]
    assert pooled[1:] == expected  # every respondent once, as they are; the -1 and -4 kept as missing values
    assert (out / "wvs" / "countries" / "Egypt.csv").exists() and (out / "wvs" / "countries" / "China.csv").exists()
    assert sorted(p.name for p in (out / "wvs").iterdir()) == ["countries", "questions.jsonl", "release_summary.json"]
    summary = json.loads((out / "wvs" / "release_summary.json").read_text())
    assert summary["pools"] == pools

    data = scenario_dict(cultures=["Arabic", "Levant"], items=["27"])
    data["backend"]["base_url"] = sim_process("--seed", "4")
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(data))
    run = run_cli_here("run", str(sc), "--out", str(tmp_path / "run"), "--data-dir", str(out), "--json")
    assert run.returncode == 0, run.stderr
    metas = [json.loads(x)["meta"] for x in (tmp_path / "run" / "conversations.jsonl").read_text().splitlines()]
    valid = {r[3] for r in rows if r[2] in ARAB and r[3] > 0}
    assert len(metas) == 2 and all(m["stance_code"] in valid for m in metas)  # drawn from the pool, never -1


def test_a_pool_naming_a_country_absent_from_the_release_writes_nothing(tmp_path, tiny_data):
    release, _ = _several_countries(tmp_path / "release.csv")
    for out in (tmp_path / "new", tmp_path):  # a new --out is removed again; an existing one is left as it was
        before = sorted(p.name for p in out.iterdir()) if out.exists() else None
        res = run_cli_here("data", "wvs", str(release), "--out", str(out), "--items-from", str(tiny_data),
                           "--pool", "Gulf=SAU,KWT,JOR")
        assert res.returncode == 2 and "--pool Gulf: SAU, KWT not in the release" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before
