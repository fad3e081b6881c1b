"""`culturepark data wvs RELEASE_FILE --out DIR`: the official WVS wave-7 cross-national release
→ the per-country files and item table `agents/wvs.py` reads, for any participating country.

The release is one CSV (or `;`-separated) row per respondent with `B_COUNTRY` (ISO numeric),
`B_COUNTRY_ALPHA` (ISO alpha-3) and the Q-columns. It is streamed, never held in memory. Answer
codes are copied as they are: the release's negative codes are its missing values (-1 don't know,
-2 no answer, -3 not applicable, -4 not asked, -5 missing), which the reader drops; no averages
are written (the original's `Avg` rows took abs() of them). A country whose answers to an item are
all missing is reported as never having asked it, and `run` skips that pair as it does today.

Pools (`--pool Arabic=EGY,IRQ,JOR,LBN,LBY,MAR,TUN`, repeatable): a culture built from several
countries' respondents, as the original built its Arabic culture from seven Arab countries
(Scarelette/CulturePark `data_process.py`: `generateCountryAns('Arabic', ['400', '818', '368', '504',
'422', '434', '788'])`). **Weighting: respondents are pooled as they are** — every respondent of a
listed country is one row of the pooled file, so a delegate's stance is drawn from the pool with each
respondent equally likely and each country weighs by its sample size (about 1,200 each in wave 7);
the WVS survey weights are not applied, as in the per-country files. Negative codes stay missing
values. A pool named like a culture of the bundled table is written under that culture's file name
(`Arabic` → `Arab_world_7_countries.csv`), so `--culture Arabic` reads it; any other name is its own
file. The release summary records each pool: its file, countries, respondents per country, the
weighting. A pool is refused (exit 2, nothing written) when malformed, when it would overwrite a
country's file or another pool's, or when a listed country has no row in the release.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from culturepark.agents.cultures import load_table
from culturepark.agents.wvs import WVSData, cell_code, unlisted_codes, unlisted_warning
from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write_json

# Wave-7 participants, alpha-3 → the file name used for them (the shared data's names where it has them).
COUNTRY_NAMES = {
    "AND": "Andorra", "ARG": "Argentina", "ARM": "Armenia", "AUS": "Australia", "BGD": "Bangladesh",
    "BOL": "Bolivia", "BRA": "Brazil", "CAN": "Canada", "CHL": "Chile", "CHN": "China", "COL": "Colombia",
    "CYP": "Cyprus", "CZE": "Czechia", "DEU": "Germany", "ECU": "Ecuador", "EGY": "Egypt", "ETH": "Ethiopia",
    "GBR": "Great_Britain", "GRC": "Greece", "GTM": "Guatemala", "HKG": "Hong_Kong", "IDN": "Indonesia",
    "IRN": "Iran", "IRQ": "Iraq", "JOR": "Jordan", "JPN": "Japan", "KAZ": "Kazakhstan", "KEN": "Kenya",
    "KGZ": "Kyrgyzstan", "KOR": "South_Korea", "LBN": "Lebanon", "LBY": "Libya", "MAC": "Macau",
    "MAR": "Morocco", "MDV": "Maldives", "MEX": "Mexico", "MKD": "North_Macedonia", "MMR": "Myanmar",
    "MNG": "Mongolia", "MYS": "Malaysia", "NGA": "Nigeria", "NIC": "Nicaragua", "NIR": "Northern_Ireland",
    "NLD": "Netherlands", "NZL": "New_Zealand", "PAK": "Pakistan", "PER": "Peru", "PHL": "Philippines",
    "PRI": "Puerto_Rico", "ROU": "Romania", "RUS": "Russia", "SGP": "Singapore", "SRB": "Serbia",
    "SVK": "Slovakia", "TJK": "Tajikistan", "THA": "Thailand", "TUN": "Tunisia", "TUR": "Turkey",
    "TWN": "Taiwan", "UKR": "Ukraine", "URY": "Uruguay", "USA": "United_States", "UZB": "Uzbekistan",
    "VEN": "Venezuela", "VNM": "Vietnam", "ZWE": "Zimbabwe",
}
ID_COLUMNS = ("B_COUNTRY", "B_COUNTRY_ALPHA")


def _reader(fh: TextIO, path: Path) -> csv.DictReader[str]:
    first = fh.readline()
    fh.seek(0)
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(fh, delimiter=delimiter)
    missing = [c for c in ID_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"data wvs: {path}: no column {missing[0]} (expected the WVS wave-7 cross-national "
                         "release: B_COUNTRY, B_COUNTRY_ALPHA, Q1 …)")
    return reader


POOL_WEIGHTING = ("respondents pooled as they are: each respondent of a listed country is one row, so each "
                  "country weighs by its number of respondents; WVS survey weights are not applied")
_POOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ALPHA3 = re.compile(r"[A-Za-z]{3}")


@dataclass(frozen=True)
class Pool:
    """`--pool NAME=ALPHA3,ALPHA3,…`: a pooled culture, the countries it pools, the file it is written to."""

    name: str
    countries: tuple[str, ...]
    file: str  # the country-file name (no .csv): the bundled culture's for a culture's name, else `name`


def parse_pool(text: str) -> Pool:
    """One `--pool` value, checked; a malformed one is bad input naming what is wrong."""
    name, eq, codes = text.partition("=")
    name = name.strip()
    where = f"data wvs: --pool {text!r}"
    if not eq or not name or not codes.strip():
        raise InputError(f"{where}: expected NAME=ALPHA3,ALPHA3,… e.g. Arabic=EGY,IRQ,JOR,LBN,LBY,MAR,TUN")
    if not _POOL_NAME.fullmatch(name):
        raise InputError(f"{where}: the name {name!r} must be letters, digits and _ (it names a file)")
    countries = tuple(c.strip().upper() for c in codes.split(","))
    bad = [c for c in countries if not _ALPHA3.fullmatch(c)]
    if bad:
        raise InputError(f"{where}: {bad[0] or 'an empty entry'!r} is not an ISO alpha-3 country code "
                         "(B_COUNTRY_ALPHA, e.g. JOR)")
    if len(set(countries)) != len(countries):
        twice = next(c for c in countries if countries.count(c) > 1)
        raise InputError(f"{where}: {twice} is listed twice")
    if len(countries) < 2:
        raise InputError(f"{where}: a pool needs two or more countries (one country has its own file already)")
    culture = load_table().get(name.lower())
    return Pool(name, countries, culture.country_file if culture else name)


def check_pools(pools: Sequence[Pool]) -> None:
    """Pools that would overwrite a country's file or each other's are refused before anything is read."""
    country_files = {n.lower(): a for a, n in COUNTRY_NAMES.items()}
    seen: dict[str, str] = {}
    for p in pools:
        key = p.file.lower()
        via = f" (the file of the culture {p.name})" if p.file != p.name else ""
        if key in country_files or re.fullmatch("[A-Z]{3}", p.file):  # an unlisted country's file is its code
            owner = country_files.get(key, p.file.upper())
            raise InputError(f"data wvs: --pool {p.name}: its file {p.file}.csv{via} is country {owner}'s own; "
                             "name the pool differently")
        if key in seen:
            raise InputError(f"data wvs: --pool {p.name}: {p.file}.csv{via} is already written by --pool {seen[key]}")
        seen[key] = p.name


def convert(release: Path, out: Path, items_from: Path, pools: Sequence[Pool] = ()) -> dict[str, Any]:
    """Stream the release into OUT/wvs/countries/<Country>.csv (and one file per pool) and copy the item
    table; a summary per country (respondents, items never asked) and per pool. Nothing is written when
    the input is bad: the files are written under a staging directory, renamed into place at the end."""
    check_pools(pools)
    items = WVSData(items_from).items()  # the seed items (their text is not in the release); refused if inconsistent
    columns = [it.column for it in items]
    if not release.is_file():
        raise InputError(f"data wvs: {release} not found")
    if (out / "wvs").exists():
        raise InputError(f"data wvs: {out / 'wvs'} already exists (choose another --out)")
    with open(release, newline="", encoding="utf-8-sig") as fh:
        reader = _reader(fh, release)
        absent = [c for c in columns if c not in (reader.fieldnames or [])]
        if len(absent) == len(columns):
            raise InputError(f"data wvs: {release} has none of the item columns ({', '.join(columns[:3])} …)")
        created = not out.exists()
        staging = out / f".wvs-partial-{os.getpid()}"
        try:
            stats, pooled = _stream(reader, staging / "countries", columns, pools)
            _check_pooled(pools, pooled, stats)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
    (staging / "questions.jsonl").write_bytes((items_from / "wvs" / "questions.jsonl").read_bytes())
    warnings = [unlisted_warning(it, f"{n}.csv", unlisted) for n, s in sorted(stats.items()) for it in items
                if (unlisted := unlisted_codes(it, sorted(s["codes"][it.column])))]
    summary: dict[str, Any] = {
        "release": str(release), "items": len(columns), "columns_absent_from_release": absent, "warnings": warnings,
        "countries": {n: {"alpha3": s["alpha3"], "respondents": s["respondents"],
                          "never_asked": [c for c, v in s["valid"].items() if v == 0]}
                      for n, s in sorted(stats.items())}}
    if pools:
        summary["pools"] = {p.name: {"file": f"{p.file}.csv", "countries": pooled[p.name]["countries"],
                                     "respondents": sum(pooled[p.name]["countries"].values()),
                                     "weighting": POOL_WEIGHTING,
                                     "never_asked": [c for c, v in pooled[p.name]["valid"].items() if v == 0]}
                            for p in pools}
    atomic_write_json(staging / "release_summary.json", summary)
    staging.rename(out / "wvs")
    return summary


def _stream(reader: csv.DictReader[str], countries: Path, columns: list[str], pools: Sequence[Pool]
            ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every row to its country's file and to each pool that lists its country; the counts of both."""
    countries.mkdir(parents=True)
    writers: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}
    pooled = {p.name: {"countries": dict.fromkeys(p.countries, 0), "valid": dict.fromkeys(columns, 0)}
              for p in pools}
    with ExitStack() as files:
        def writer(name: str) -> Any:
            w = csv.writer(files.enter_context(open(countries / f"{name}.csv", "w", newline="", encoding="utf-8")))
            w.writerow([*ID_COLUMNS, *columns])
            return w

        pool_writers = {p.name: writer(p.file) for p in pools}
        by_country = {c: [p.name for p in pools if c in p.countries] for p in pools for c in p.countries}
        for row in reader:
            alpha = (row["B_COUNTRY_ALPHA"] or row["B_COUNTRY"] or "").strip()
            name = COUNTRY_NAMES.get(alpha, alpha)
            if name not in writers:
                writers[name] = writer(name)
                stats[name] = {"alpha3": alpha, "respondents": 0, "valid": dict.fromkeys(columns, 0),
                               "codes": {c: set() for c in columns}}
            codes = [cell_code(row.get(c) or "") for c in columns]
            line = [row["B_COUNTRY"], alpha, *["" if c is None else c for c in codes]]
            writers[name].writerow(line)
            s = stats[name]
            s["respondents"] += 1
            for c, v in zip(columns, codes):
                if v is not None and v >= 0:
                    s["valid"][c] += 1
                    s["codes"][c].add(v)
            for pool in by_country.get(alpha.upper(), ()):
                pool_writers[pool].writerow(line)
                pooled[pool]["countries"][alpha.upper()] += 1
                for c, v in zip(columns, codes):
                    if v is not None and v >= 0:
                        pooled[pool]["valid"][c] += 1
    return stats, pooled


def _check_pooled(pools: Sequence[Pool], pooled: dict[str, dict[str, Any]], stats: dict[str, dict[str, Any]]) -> None:
    """Every pooled country must have respondents in the release (a typo is bad input, not an empty share)."""
    present = sorted(s["alpha3"] for s in stats.values())
    for p in pools:
        missing = [c for c, n in pooled[p.name]["countries"].items() if n == 0]
        if missing:
            raise InputError(f"data wvs: --pool {p.name}: {', '.join(missing)} not in the release "
                             f"(countries in it: {', '.join(present)})")


__all__ = ["COUNTRY_NAMES", "POOL_WEIGHTING", "Pool", "check_pools", "convert", "parse_pool"]
