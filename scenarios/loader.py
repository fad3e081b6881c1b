"""YAML → Scenario with errors that name the file, the field path and what was expected."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from culturepark.engine.errors import InputError
from culturepark.engine.records import RunHeader
from culturepark.scenarios.schema import BACKEND_KIND_TAGS, AnyScenario, DirectScenario, EducationScenario, Scenario

M = TypeVar("M", bound=BaseModel)


class ScenarioError(InputError):
    """Bad scenario input; the CLI prints it on one line and exits 2."""


def builtin_dir() -> Path:
    return Path(str(resources.files("culturepark.scenarios") / "builtin"))


def builtin_scenarios() -> dict[str, Path]:
    return {p.stem: p for p in sorted(builtin_dir().glob("*.yaml"))}


def resolve_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ScenarioError(f"{path}: no such file")
        return path
    builtins = builtin_scenarios()
    if str(name_or_path) in builtins:
        return builtins[str(name_or_path)]
    raise ScenarioError(f"{name_or_path}: not a file and not a bundled scenario "
                        f"(bundled: {', '.join(builtins)})")


def _format_loc(loc: tuple[Any, ...]) -> str:
    """`roles.delegate.backend`, `arms[1].tutor`; a key that is not a plain word (a newline, a
    space: anything a YAML key may hold) is quoted, so the error stays one readable line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part) if str(part).isprintable() and " " not in str(part) else repr(str(part))
            out += f".{name}" if out else name
    return out or "(top level)"


def format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p.startswith("function-") or p in ("literal['all']", "list[str]", "ItemsByTopic",
                                               "ModeratorScript", "str", "list[CultureEntry]",
                                               *BACKEND_KIND_TAGS))))
        got = err.get("input")
        got_s = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{_format_loc(loc)}: {msg}{got_s}")
    more = f" (+{len(parts) - 1} more)" if len(parts) > 1 else ""
    return f"{source}: {parts[0]}{more}" if parts else f"{source}: invalid"


def parse_model(model: type[M], data: Any, source: str) -> M:
    """Validate any config mapping (scenario, refine, eval spec) with one error format."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping of fields at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(source, exc)) from exc


def parse_scenario(data: Any, source: str = "<scenario>") -> AnyScenario:
    """`kind` picks the model: `culturepark` (conversations, the default), `direct` (the paper's
    direct-generation baseline) or `education` (a study)."""
    if isinstance(data, dict) and data.get("kind") == "education":
        return parse_model(EducationScenario, data, source)
    if isinstance(data, dict) and data.get("kind") == "direct":
        return parse_model(DirectScenario, data, source)
    return parse_model(Scenario, data, source)


def scenario_of(header: RunHeader | None, source: str) -> AnyScenario | None:
    """The scenario a run was made from, as its header recorded it; None where the log has no
    header or its stage records no scenario (an evaluation's, a refinement's). A recorded one
    that no longer validates is bad input, named as `source`'s header."""
    if header is None or header.scenario is None:
        return None
    return parse_scenario(header.scenario, f"{source} header")


class TextScalarLoader(yaml.SafeLoader):
    """`safe_load`, except that a plain scalar stays the text the user typed when YAML 1.1 would
    turn it into a boolean, a number or a date (`OFF` → False, `1` → 1, `2024-01-01` → a date).

    Every config here is validated by pydantic afterwards, which converts text to the declared
    type where a field is a number or a boolean (`seed: 3`, `enabled: no`), so nothing changes
    there; where a field is text — labels, item ids, names — it gets exactly what was written
    (`positive_labels: [OFF]` is "OFF", `[1, 0]` are "1" and "0"). `null`/`~` stay None.
    """


TextScalarLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                           "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=TextScalarLoader)


def read_yaml(path: Path) -> Any:
    """The text-preserving safe load, with errors that name file, line and column."""
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ScenarioError(f"{path}{where}: invalid YAML: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from exc
    return data


def load_config(model: type[M], path: str | Path) -> M:
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"{path}: no such file")
    return parse_model(model, read_yaml(path), str(path))


def load_scenario(name_or_path: str | Path) -> AnyScenario:
    path = resolve_path(name_or_path)
    return parse_scenario(read_yaml(path), str(path))
