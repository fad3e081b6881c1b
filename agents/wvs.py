"""World Values Survey wave 7: the 50 seed items and real respondents' answers.

Negative codes are WVS missing values (-1 don't know, -2 no answer, -4 not asked,
-5 other) and are dropped before anything is computed: averaging them in or
taking abs() — as the original code did — fabricates stances.
"""
from __future__ import annotations

import csv
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from culturepark.engine.errors import InputError

_OPTION = re.compile(r"(\d+)\.\s*")
AGGREGATE_ROWS = {"Avg", "Avg_First", "Avg_Last"}


class WVSError(InputError):
    pass


@dataclass(frozen=True, slots=True)
class WVSItem:
    q_id: str
    topic: str
    text: str
    option_text: str
    scale: dict[int, str]
    scale_note: str | None = None

    @property
    def column(self) -> str:
        return f"Q{self.q_id}"

    def label(self, code: int) -> str:
        """The scale's words for a code; codes the scale does not label are stated as numbers."""
        if code in self.scale:
            return self.scale[code]
        lo, hi = min(self.scale, default=code), max(self.scale, default=code)
        return f"{code} on a scale from {lo} to {hi}"

    @property
    def question(self) -> str:
        text = self.text.strip()
        return text if text.endswith("?") else f'What do you think about the statement "{text}"?'


def _numbered(option: str) -> tuple[list[int], list[str]]:
    parts = _OPTION.split(option.strip())
    return [int(c) for c in parts[1::2]], [lab.strip() for lab in parts[2::2]]


def check_scale(q_id: str, option: str) -> dict[int, str]:
    """An item table's option list → {code: label}, refused (one line naming the item) unless its codes are
    distinct and increasing. Why refuse rather than repair: the original table gave Q31 two options numbered 4
    ("… 2. agree 4. Disagree 4. Strongly disagree") while the country files code Disagree as 3, so a delegate
    holding 3 was shown a list where Disagree is 4; any guess at the intended numbering is a silent re-coding."""
    codes, labels = _numbered(option)
    if not codes:
        raise WVSError(f"item Q{q_id}: option list has no numbered options ({option.strip()[:60]!r})")
    if any(b <= a for a, b in itertools.pairwise(codes)):
        raise WVSError(f"item Q{q_id}: option codes {', '.join(map(str, codes))} are not distinct and increasing "
                       f"({option.strip()!r}); correct the item table")
    return dict(zip(codes, labels))


def parse_scale(option: str) -> tuple[dict[int, str], str | None]:
    """'1. Strongly agree 2. agree ...' → {1: 'Strongly agree', 2: 'agree', ...}, leniently.

    Only for option text already stored in a run's conversation metadata (old runs were made from the
    unchecked table): numbers that are not strictly increasing are renumbered by position from the
    first number, and a note says so. The item table itself goes through `check_scale`, which refuses.
    """
    codes, labels = _numbered(option)
    if not codes:
        return {}, "scale has no labelled options"
    note = None
    if any(b <= a for a, b in itertools.pairwise(codes)):
        note = f"scale numbers {codes} renumbered by position"
        codes = list(range(codes[0], codes[0] + len(codes)))
    return dict(zip(codes, labels)), note


def unlisted_codes(item: WVSItem, answers: list[int]) -> list[int]:
    """Valid (non-negative) answer codes respondents gave that the item's options do not list."""
    return sorted({a for a in answers if a >= 0} - set(item.scale))


def unlisted_warning(item: WVSItem, where: str, codes: list[int]) -> str:
    return (f"warning: {where}: Q{item.q_id} has valid answer codes {', '.join(map(str, codes))} that its options "
            f"({', '.join(map(str, item.scale))}) do not list")


def cell_code(value: str) -> int | None:
    """A CSV cell as an answer code ("3", "3.0", "-4"); None for an empty or non-numeric cell.
    Negative codes are returned: they are missing values, and callers drop them."""
    try:
        return int(float(value))
    except ValueError:
        return None


@dataclass
class WVSData:
    """Items and per-country answers from one data directory (loaded lazily, kept per instance)."""

    data_dir: Path
    _items: list[WVSItem] | None = None
    _answers: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    @property
    def wvs_dir(self) -> Path:
        return Path(self.data_dir) / "wvs"

    def items(self) -> list[WVSItem]:
        if self._items is None:
            import orjson
            path = self.wvs_dir / "questions.jsonl"
            if not path.exists():
                raise WVSError(f"no WVS questions at {path} (set data_dir or CULTUREPARK_DATA_DIR)")
            items = []
            for line in path.read_bytes().splitlines():
                if line.strip():
                    d = orjson.loads(line)
                    q_id = str(d["q_id"])
                    items.append(WVSItem(q_id, d.get("topic", ""), d["q_content"], d["option"],
                                         check_scale(q_id, d["option"])))
            self._items = items
        return self._items

    def item(self, q_id: str) -> WVSItem:
        for it in self.items():
            if it.q_id == q_id:
                return it
        raise WVSError(f"item {q_id!r} is not in {self.wvs_dir / 'questions.jsonl'}")

    def countries(self) -> list[str]:
        return sorted(p.stem for p in (self.wvs_dir / "countries").glob("*.csv"))

    def answers(self, country_file: str, q_id: str) -> list[int]:
        """Valid (non-negative) answer codes of the country's respondents to one item."""
        return self._country(country_file).get(f"Q{q_id}", [])

    def unlisted(self, country_file: str, items: list[WVSItem] | None = None) -> list[str]:
        """One warning line per item whose valid answers in this country include codes its options do not
        list (a respondent's stance the option list cannot show)."""
        where = f"{country_file}.csv"
        return [unlisted_warning(it, where, codes) for it in items or self.items()
                if (codes := unlisted_codes(it, self.answers(country_file, it.q_id)))]

    def _country(self, country_file: str) -> dict[str, list[int]]:
        if country_file not in self._answers:
            path = self.wvs_dir / "countries" / f"{country_file}.csv"
            if not path.exists():
                raise WVSError(f"no WVS file for {country_file!r} at {path}")
            columns: dict[str, list[int]] = {}
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                header = next(reader)
                q_cols = [(i, h) for i, h in enumerate(header) if h.startswith("Q")]
                for h in (h for _, h in q_cols):
                    columns[h] = []
                for row in reader:
                    if not row or row[0] in AGGREGATE_ROWS:
                        continue
                    for i, h in q_cols:
                        code = cell_code(row[i]) if i < len(row) else None
                        if code is not None and code >= 0:
                            columns[h].append(code)
            self._answers[country_file] = columns
        return self._answers[country_file]
