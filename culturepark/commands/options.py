"""Every option declared once.

Two mechanisms, one for each kind of option:

- **Settings models are the flags' source** (trl's way): `add_model_flags` adds one flag per
  field of a pydantic model — the name (`--poll-s` for `poll_s`, or the field's `flag`), the type
  and its bounds (`ge=1` → a positive integer, refused at parse time with one line and exit 2),
  choices (a `Literal`), `nargs` (a list), the default and the help (the field's `description`,
  with its default and any preset's value appended). `model_from_args` builds the model back from
  the parsed namespace, so no hand-written mapping from flags to fields exists to drift.
- **Shared flags** (`--json`, `--out`, `--resume`, endpoint and model-spec flags…) that many
  subcommands take but no one model owns are declared in `SHARED`, once, and added with `shared`.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from culturepark.commands import count, non_negative_float, positive_float, positive_int

T = TypeVar("T")


class OneLineParser(argparse.ArgumentParser):
    """Bad flags are bad input like any other: one line on stderr and exit 2 (no usage block).

    `build`: a function that adds this parser's arguments when it is first used (parsed or asked
    for help). A subcommand whose flags come from a settings model in a heavier floor (trainers,
    testing) is built only when chosen, so `culturepark --help` and the other subcommands never
    import that floor."""

    def __init__(self, *args: Any, build: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._build = build

    def built(self) -> None:
        if self._build is not None:
            build, self._build = self._build, None
            build(self)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self.built()
        return super().parse_known_args(*args, **kwargs)

    def format_help(self) -> str:
        self.built()
        return super().format_help()

    def format_usage(self) -> str:
        self.built()
        return super().format_usage()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# -- shared flags -------------------------------------------------------------------------------

SHARED: dict[str, dict[str, Any]] = {
    "--json": {"action": "store_true", "help": "print the result as JSON"},
    "--out": {"type": Path, "help": "the output directory"},
    "--resume": {"action": "store_true", "help": "continue the directory in --out from its log"},
    "--retry-failed": {"action": "store_true", "help": "with --resume: run failed items again"},
    "--data-dir": {"type": Path, "help": "the research data directory (default: the scenario's data_dir, "
                                         "$CULTUREPARK_DATA_DIR, or ../shared/data)"},
    "--model": {"help": "the model: a name, or a spec local:gemma3-270m[+lora:DIR], openai:MODEL, gemini:MODEL, "
                       "anthropic:MODEL"},
    "--base-url": {"help": "an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"},
    "--api-key-env": {"help": "name of the environment variable holding the key"},
    "--rpm": {"type": positive_float, "help": "requests per minute allowed"},
    "--tpm": {"type": positive_float, "help": "tokens per minute allowed"},
    "--concurrency": {"type": positive_int, "help": "requests in flight at most"},
    "--seeds": {"type": positive_int, "default": 3, "help": "repetitions with different seeds"},
    "--limit": {"type": count, "help": "at most N"},
    "--latency-ms": {"type": non_negative_float, "help": "simulated latency per request"},
    "--seed": {"type": int, "default": 0, "help": "random seed"},
    "--device": {"default": "auto", "help": "auto, cpu, cuda, mps"},
    "--arm": {"action": "append", "dest": "arms", "metavar": "NAME=MODEL_SPEC",
              "help": "a tutor arm (repeat; replaces the scenario's arms), e.g. tuned=local:gemma3-270m+lora:DIR"},
}


def shared(parser: argparse.ArgumentParser, *flags: str, **changes: Any) -> None:
    """Add shared flags as `SHARED` declares them; `changes` (help, default, required…) apply to
    every flag named, so give one flag per call when changing it."""
    for flag in flags:
        parser.add_argument(flag, **{**SHARED[flag], **changes})


def endpoint_flags(parser: argparse.ArgumentParser, **model: Any) -> None:
    """The flags that point a stage at a model: `--model` (with `model`'s changes), `--base-url`,
    `--api-key-env`, `--rpm`, `--tpm`."""
    shared(parser, "--model", **model)
    shared(parser, "--base-url", "--api-key-env", "--rpm", "--tpm")


# -- flags derived from a settings model ----------------------------------------------------------

def flag_name(name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("flag") or "--" + name.replace("_", "-"))


def _bound(field: FieldInfo) -> tuple[str, float] | None:
    for m in field.metadata:
        if isinstance(m, annotated_types.Gt):
            return "gt", float(m.gt)  # type: ignore[arg-type]
        if isinstance(m, annotated_types.Ge):
            return "ge", float(m.ge)  # type: ignore[arg-type]
    return None


def _number_type(kind: type, field: FieldInfo) -> Callable[[str], Any]:
    """int/float with the field's lower bound checked while parsing (one line, exit 2)."""
    bound = _bound(field)
    if kind is int and bound in (("gt", 0.0), ("ge", 1.0)):
        return positive_int
    if kind is int and bound == ("ge", 0.0):
        return count
    if kind is float and bound == ("gt", 0.0):
        return positive_float
    if kind is float and bound == ("ge", 0.0):
        return non_negative_float
    return kind


def _without_none(annotation: Any) -> Any:
    """`X | None` → X; `str | list[str]` → str (the model's validator reads the text); a union of
    Literals → one Literal of all their values."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if all(get_origin(a) is Literal for a in rest):
            return Literal[tuple(v for a in rest for v in get_args(a))]
        return rest[0] if len(rest) == 1 else str if str in rest else annotation
    return annotation


def _shown(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _help(field: FieldInfo, name: str, presets: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The field's description, then its default and each preset's own value (so `--help` says
    what a flag left out means) unless the description already speaks of defaults."""
    text = field.description
    if text is None or "default" in text:
        return text
    notes = [] if field.default in (None, False, PydanticUndefined) else [f"default {_shown(field.default)}"]
    notes += [f"{p} preset: {_shown(values[name])}" for p, values in presets.items()
              if name in values and values[name] != field.default]
    return f"{text} ({'; '.join(notes)})" if notes else text


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel], fields: Iterable[str] | None = None,
                    *, unset: bool = False, presets: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """One flag per field of `model` (or per name in `fields`). `unset`: a flag left out is None
    (a switch: False), so a preset or a config file decides it; otherwise it is the field's default."""
    for name in fields or model.model_fields:
        field = model.model_fields[name]
        kind = _without_none(field.annotation)
        spec: dict[str, Any] = {"help": _help(field, name, presets or {})}
        default = None if unset or field.is_required() else field.get_default(call_default_factory=True)
        if field.is_required():
            spec["required"] = True
        elif kind is bool:
            spec["action"] = "store_true" if field.default is False else argparse.BooleanOptionalAction
            default = False if field.default is False else default
        if kind is not bool:
            if get_origin(kind) is list:
                spec["nargs"] = "+"
                kind = get_args(kind)[0]
            if get_origin(kind) is Literal:
                spec["choices"] = list(get_args(kind))
                if all(type(v) is int for v in spec["choices"]):
                    spec["type"] = int  # `--mas-weight 25` → 25, checked against the choices
            elif kind in (int, float):
                spec["type"] = _number_type(kind, field)
            elif kind is Path:
                spec["type"] = Path
        flag = flag_name(name, field)
        if "action" not in spec and "choices" not in spec:
            spec["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(flag, dest=name, default=default, **spec)


def model_values(model: type[BaseModel], args: argparse.Namespace, fields: Iterable[str] | None = None,
                 *, unset: bool = False) -> dict[str, Any]:
    """The parsed values of `model`'s flags by field name; with `unset`, the flags left out are
    left out (a switch left off counts as left out)."""
    values = {name: getattr(args, name) for name in fields or model.model_fields}
    return {k: v for k, v in values.items() if v is not None and v is not False} if unset else values


def model_from_args(model: type[T], args: argparse.Namespace, **more: Any) -> T:
    """The settings built back from the parsed flags whose names are its fields (and `more` fields
    the command fills itself): a pydantic model is validated, a dataclass takes the values as they
    are (argparse has checked them)."""
    if dataclasses.is_dataclass(model):
        names = [f.name for f in dataclasses.fields(model)]
        return model(**{n: getattr(args, n) for n in names if hasattr(args, n)}, **more)
    assert issubclass(model, BaseModel)
    return model.model_validate({**model_values(model, args), **more})

