"""Result files written before results were typed (tests/fixtures/results_v1) are read through their
models, written back unchanged, and rendered by `report` and the paper report into the same pages."""
import json
import shutil
from pathlib import Path

import pytest

from culturepark.benchmarks import results as R
from culturepark.benchmarks.evaluation import EVALUATIONS
from culturepark.engine.errors import InputError
from culturepark.trainers.summaries import FormatCheck, LoraSummary, OpenAIJobState, RefineSummary, Summary
from tests.conftest import REPO, run_cli

FIXTURES = REPO / "tests" / "fixtures" / "results_v1"
MODELS = [("hofstede.json", R.HofstedeResult), ("moderation.json", R.ModerationResult), ("wvs.json", R.WvsResult),
          ("fidelity.json", R.FidelityResult), ("phenomena.json", R.PhenomenaResult),
          ("content.json", R.ContentResult), ("diversity.json", R.DiversityResult),
          ("diversity_rows.json", R.DiversityResult), ("compare.json", R.CompareResult),
          ("compare_runs.json", R.CompareRunsResult), ("education.json", R.EducationResult),
          ("paper.json", R.PaperResult), ("refine_summary.json", RefineSummary),
          ("train_summary.json", LoraSummary), ("train.json", OpenAIJobState)]


def _read(name, model):
    return model.read(FIXTURES / name) if issubclass(model, Summary) else R.read_result(FIXTURES / name, model)


@pytest.mark.parametrize(("name", "model"), MODELS, ids=[n for n, _ in MODELS])
def test_each_v1_file_reads_through_its_model_and_writes_back_the_same_json(name, model):
    text = (FIXTURES / name).read_text()
    typed = _read(name, model)
    # the same keys in the same order with the same values: what users have on disk is what we write
    assert json.dumps(typed.to_json(), indent=2) == json.dumps(json.loads(text), indent=2)


def test_every_evaluation_file_has_a_v1_fixture_and_is_read_by_its_evaluation():
    names = {n for n, _ in MODELS}
    for evaluation in EVALUATIONS.values():
        assert evaluation.file_name in names, evaluation.name
        assert isinstance(evaluation.read(FIXTURES / evaluation.file_name), evaluation.result)


def test_fields_read_by_attribute_carry_the_v1_values():
    hof = R.read_result(FIXTURES / "hofstede.json", R.HofstedeResult)
    china = hof.cultures["Chinese"]
    assert hof.constant == 50.0 and china.invalid_answers == 2 and china.invalid_by_item == {"1": 2}
    assert china.indices["idv"].mean is None and china.distance_with_constant is china.distance
    mod = R.read_result(FIXTURES / "moderation.json", R.ModerationResult)
    assert mod.majority_baseline.predicts in ("positive", "negative") and len(mod.per_seed) == mod.seeds == 2
    phen = R.read_result(FIXTURES / "phenomena.json", R.PhenomenaResult)
    assert set(phen.by_culture["all"]["stance_shift"].labels) == {"yes", "no"}
    refine = RefineSummary.read(FIXTURES / "refine_summary.json")
    assert refine.accounted and isinstance(refine.openai_format_check, FormatCheck)
    assert refine.kept + sum(refine.drop_reasons.values()) == refine.extracted


def test_older_shapes_read_with_the_defaults_of_what_they_lack():
    """Files made before 0.4 lack the constant, the distance with it and the parseable-only scores."""
    hof = json.loads((FIXTURES / "hofstede.json").read_text())
    del hof["constant"]
    for c in hof["cultures"].values():
        del c["distance"]
    old = R.HofstedeResult.model_validate(hof)
    china = old.cultures["Chinese"]
    assert old.constant == 0.0 and china.distance_with_constant == china.distance_c0
    assert "constant" not in old.to_json() and "distance" not in old.to_json()["cultures"]["Chinese"]
    mod = json.loads((FIXTURES / "moderation.json").read_text())
    for key in ("macro_f1_scored", "accuracy_scored", "coverage", "scoring"):
        del mod[key]
    assert R.ModerationResult.model_validate(mod).macro_f1_scored is None


@pytest.mark.parametrize(("name", "change", "message"), [
    ("hofstede.json", lambda d: d.update(seed_count=d.pop("seeds")), "seed_count"),  # a renamed field
    ("moderation.json", lambda d: d.pop("macro_f1"), "macro_f1"),  # a missing one
    ("wvs.json", lambda d: d.update(seeds="three"), "seeds"),  # a wrong type
])
def test_a_renamed_missing_or_mistyped_field_is_bad_input_named_where_it_is_read(tmp_path, name, change, message):
    data = json.loads((FIXTURES / name).read_text())
    change(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    model = dict(MODELS)[name]
    with pytest.raises(InputError, match=message) as err:
        R.read_result(path, model)
    assert str(path) in str(err.value)


def _layout(root: Path) -> Path:
    """The v1 files one per directory, as `report` finds them."""
    results = root / "results"
    for f in sorted(FIXTURES.glob("*.json")):
        d = results / f.stem
        d.mkdir(parents=True)
        shutil.copy(f, d / ("diversity.json" if f.name == "diversity_rows.json" else f.name))
    return results


def test_report_renders_the_v1_files_into_the_page_the_old_code_rendered(tmp_path, monkeypatch):
    from culturepark.report_page import build, build_paper

    _layout(tmp_path)
    monkeypatch.chdir(tmp_path)  # the page names the directories as given: relative, as when it was rendered
    page = build([Path("results")], Path("report")).read_text()
    assert page == (FIXTURES / "rendered" / "report.html").read_text()
    for png in ("hofstede_Chinese.png", "moderation_f1.png", "education_0.png"):
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"
    paper = build_paper(R.read_result(FIXTURES / "paper.json", R.PaperResult), Path("paper")).read_text()
    assert paper == (FIXTURES / "rendered" / "paper.html").read_text()


def test_report_refuses_a_result_file_of_another_shape_before_writing(tmp_path):
    results = tmp_path / "r"
    (results / "x").mkdir(parents=True)
    (results / "x" / "hofstede.json").write_text(json.dumps({"task": "hofstede", "cultures": {}}))
    res = run_cli("report", str(results), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "not a HofstedeResult file" in res.stderr and not (tmp_path / "out").exists()
