"""The culture table: who a delegate is, which WVS country file seeds their stances."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from culturepark.engine.errors import InputError
from culturepark.scenarios.loader import load_yaml_text
from culturepark.scenarios.schema import CultureEntry


class CultureError(InputError):
    pass


@dataclass(frozen=True, slots=True)
class Culture:
    name: str
    country_file: str
    names: tuple[str, ...]
    adjective: str | None
    language: str
    country: str
    pronoun: str
    hofstede: str | None = None

    @property
    def person(self) -> str:
        """'a Chinese person', 'an American person', or 'a person from Greece'."""
        if self.adjective:
            article = "an" if self.adjective[0].lower() in "aeiou" else "a"
            return f"{article} {self.adjective} person"
        return f"a person from {self.country}"

    @property
    def culture_phrase(self) -> str:
        return f"{self.adjective} culture" if self.adjective else f"the culture of {self.country}"

    @property
    def possessive(self) -> str:
        return {"he": "his", "she": "her"}.get(self.pronoun, "their")


def _from_entry(e: CultureEntry) -> Culture:
    country_file = e.country_file or e.name
    return Culture(e.name, country_file, tuple(e.names), e.adjective, e.language,
                   e.country or country_file.replace("_", " "), e.pronoun, e.hofstede)


def load_table(extra: list[CultureEntry] | str | None = None, base_dir: Path | None = None
               ) -> dict[str, Culture]:
    """Bundled table plus the scenario's own rows (which override by name)."""
    raw = load_yaml_text((resources.files("culturepark.agents") / "cultures.yaml").read_text("utf-8"))
    entries = [CultureEntry.model_validate(r) for r in raw]
    if isinstance(extra, str):
        path = Path(extra)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            rows = load_yaml_text(path.read_text("utf-8")) or []
            entries += [CultureEntry.model_validate(r) for r in rows]
        except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
            raise CultureError(f"culture_table {path}: {str(exc).splitlines()[0]}") from exc
    elif extra:
        entries += list(extra)
    return {e.name.lower(): _from_entry(e) for e in entries}


def resolve_culture(name: str, table: dict[str, Culture], available_countries: list[str]) -> Culture:
    """By culture name (table) or by any country file present in the WVS data directory."""
    hit = table.get(name.lower())
    if hit is not None:
        return hit
    by_file = {c.lower(): c for c in available_countries}
    if name.lower() in by_file:
        country_file = by_file[name.lower()]
        for culture in table.values():
            if culture.country_file == country_file:
                return culture
        return Culture(country_file, country_file, ("Alex", "Sam"), None, "English",
                       country_file.replace("_", " "), "they")
    known = sorted({c.name for c in table.values()} | set(available_countries))
    raise CultureError(f"unknown culture {name!r}; known: {', '.join(known)} "
                       "(add it under culture_table:)")


def cultures_by_name(names: list[str], what: str) -> list[Culture]:
    """The bundled table's cultures by name (case-insensitive); an unknown one is bad input naming `what`."""
    table = load_table()
    chosen: list[Culture] = []
    for name in names:
        c = table.get(name.lower())
        if c is None:
            known = ", ".join(sorted(x.name for x in table.values()))
            raise CultureError(f"{what}: unknown culture {name!r}; known: {known}")
        chosen.append(c)
    return chosen
