import pytest

from culturepark.scenarios.loader import ScenarioError, builtin_scenarios, load_scenario
from culturepark.scenarios.schema import EducationScenario, Scenario


def test_every_bundled_scenario_loads():
    names = set(builtin_scenarios())
    assert {"quickstart", "paper-v1", "paper-v2", "in-cultural", "education-quickstart", "education-paper"} <= names
    for name in names:
        kind = EducationScenario if name.startswith("education-") else Scenario
        assert isinstance(load_scenario(name), kind)


def test_paper_settings():
    sc = load_scenario("paper-v1")
    assert sc.sampling.temperature == 0.7 and sc.sampling.max_tokens == 168
    assert len(sc.cultures) == 8 and sc.version == "v1" and sc.backend.model == "gpt-3.5-turbo"


@pytest.mark.parametrize("text, expected", [
    ("name: x\ncultures: [Chinese]\nbogus: 1\n", r"bad\.yaml: bogus: unknown field"),
    ("name: x\ncultures: [Chinese]\nconcurrency: lots\n", r"concurrency: Input should be a valid integer.*'lots'"),
    ("name: x\ncultures: [Chinese]\nbackend: {model: m, colour: red}\n", r"backend\.colour: unknown field"),
    ("name: x\ncultures: [Chinese\n", r"bad\.yaml:\d+:\d+: invalid YAML"),
    ("- just\n- a list\n", r"expected a mapping"),
    ("name: x\ncultures: [Chinese]\nbackend: {api_key_env: sk-abc123}\n", r"NAME of an environment variable"),
    ("name: x\ncultures: []\n", r"cultures: List should have at least 1 item"),
])
def test_errors_name_file_field_and_expectation(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=expected):
        load_scenario(path)


def test_content_hash_ignores_limits_and_urls_but_not_content():
    base = load_scenario("paper-v1")
    same = base.model_copy(update={"concurrency": 5})
    assert same.content_hash() == base.content_hash()
    other = Scenario.model_validate({**base.model_dump(), "seed": 99})
    assert other.content_hash() != base.content_hash()


def test_unsafe_yaml_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hi']\ncultures: [Chinese]\n")
    with pytest.raises(ScenarioError, match="invalid YAML"):
        load_scenario(path)
