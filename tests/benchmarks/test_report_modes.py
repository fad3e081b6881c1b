"""Every output records the mode that produced it (the paper's or ours) and `report` labels it: the
moderation parse, the phenomena construct, the content level, the refine preset, the direct style.
Files that record no mode (made before) get no label, so their page is the one they always had
(tests/benchmarks/test_results_v1.py holds that page byte for byte)."""
import json
import re
from pathlib import Path

import pytest

from culturepark.benchmarks import results as R
from culturepark.engine.records import RunHeader
from culturepark.report_page import build, refine_mode, run_mode
from culturepark.trainers.summaries import RefineSummary
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "results_v1"


def _fixture(name):
    return json.loads((FIXTURES / name).read_text())


def _paper_phenomena(data):
    """The v1 phenomena file as the paper construct writes it: per turn, extend and understanding_ratio."""
    shares = data["by_culture"]["Chinese"]["stance_shift"]
    data["by_culture"] = {c: {"extend": shares, "understanding_ratio": shares} for c in ("Chinese", "all")}
    data["mode"] = "paper"
    return data


CASES = [  # file, change, model, expected label (None: the file records no mode)
    ("moderation.json", lambda d: d, R.ModerationResult, None),
    ("moderation.json", lambda d: {**d, "parse": "strict"}, R.ModerationResult, "ours: parse strict"),
    ("moderation.json", lambda d: {**d, "parse": "paper"}, R.ModerationResult, "paper: parse paper"),
    ("phenomena.json", lambda d: d, R.PhenomenaResult, None),
    ("phenomena.json", lambda d: {**d, "mode": "ours"}, R.PhenomenaResult, "ours: construct ours"),
    ("phenomena.json", _paper_phenomena, R.PhenomenaResult, "paper: construct paper"),
    ("content.json", lambda d: d, R.ContentResult, None),
    ("content.json", lambda d: {**d, "level": "top"}, R.ContentResult, "ours: top level"),
    ("content.json", lambda d: {**d, "level": "second", "second_level": {}}, R.ContentResult, "paper: second level"),
]


@pytest.mark.parametrize(("name", "change", "model", "label"), CASES)
def test_each_result_labels_the_mode_it_recorded_and_old_files_none(name, change, model, label):
    result = model.model_validate(change(_fixture(name)))
    got = result.mode_label()
    assert (got.text() if got else "")[:len(label or "")] == (label or "") and (got is None) == (label is None)


@pytest.mark.parametrize(("change", "label"), [
    (lambda d: d, None),  # written before verify / extract_per were recorded
    (lambda d: {**d, "verify": True, "extract_per": "utterance",
                "dedup": {"enabled": True, "method": "kmeans", "keep": "longest"}},
     "paper: preset paper: per utterance, verify on, dedup kmeans, longest"),
    (lambda d: {**d, "verify": False, "extract_per": "utterance", "dedup": {"enabled": False}},
     "ours: per utterance, verify off, dedup off"),
    (lambda d: {**d, "verify": True, "extract_per": "conversation",
                "dedup": {"enabled": True, "method": "agglomerative", "keep": "central"}},
     "ours: per conversation, verify on, dedup agglomerative, central"),
])
def test_a_refinement_is_labelled_by_what_its_summary_recorded(change, label):
    s = RefineSummary.model_validate(change(_fixture("refine_summary.json")))
    got = refine_mode(s)
    assert (got.text() if got else None) == label


@pytest.mark.parametrize(("scenario", "label"), [
    ({"kind": "education"}, None),
    ({"kind": "culturepark", "version": "v1-in", "mode": "in"}, "paper: protocol v1-in, in-cultural"),
    ({"version": "v2"}, "paper: protocol v2, cross-cultural"),  # a header written before `kind`
    ({"kind": "culturepark", "version": {"rounds": []}}, "ours: a moderator script of its own"),
    ({"kind": "direct", "style": "paper", "reasons": 10}, "paper: direct style paper: a chatbot's 10 reasons"),
    ({"kind": "direct", "reasons": 5}, "ours: direct style ours: the persona's 5 reasons"),  # before style
])
def test_a_run_is_labelled_by_its_protocol_and_a_direct_run_by_its_style(scenario, label):
    got = run_mode(RunHeader(run_name="r", scenario=scenario))
    assert (got.text() if got else "")[:len(label or "")] == (label or "") and (got is None) == (label is None)


def _write(root: Path, name: str, data) -> None:
    d = root / name.removesuffix(".json")
    d.mkdir(parents=True)
    (d / name).write_text(json.dumps(data))


def test_report_adds_a_mode_column_where_outputs_recorded_their_mode(tmp_path):
    new = tmp_path / "new"
    _write(new, "moderation.json", {**_fixture("moderation.json"), "parse": "paper"})
    _write(new, "phenomena.json", _paper_phenomena(_fixture("phenomena.json")))
    _write(new, "content.json", {**_fixture("content.json"), "level": "second", "second_level": {}})
    page = build([new], tmp_path / "report").read_text()
    for label in ("paper: parse paper", "paper: construct paper", "paper: second level"):
        assert label in page
    assert "extend rate %" in page and "understanding ratio %" in page  # the paper construct's own table
    old = tmp_path / "old"
    for name in ("moderation.json", "phenomena.json", "content.json"):
        _write(old, name, _fixture(name))
    page = build([old], tmp_path / "report_old").read_text()
    assert not re.search(r"<th>mode</th>", page) and "paper:" not in page and "ours:" not in page
