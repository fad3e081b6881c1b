"""`culturepark data wvs RELEASE_FILE --out DIR`: the official WVS wave-7 cross-national release
→ the per-country files and item table `agents/wvs.py` reads, for any participating country.

The release is one CSV (or `;`-separated) row per respondent with `B_COUNTRY` (ISO numeric),
`B_COUNTRY_ALPHA` (ISO alpha-3) and the Q-columns. It is streamed, never held in memory. Answer
codes are copied as they are: the release's negative codes are its missing values (-1 don't know,
-2 no answer, -3 not applicable, -4 not asked, -5 missing), which the reader drops; no averages
are written (the original's `Avg` rows took abs() of them). A country whose answers to an item are
all missing is reported as never having asked it, and `run` skips that pair as it does today.
"""
from __future__ import annotations

import csv
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

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


def convert(release: Path, out: Path, items_from: Path) -> dict[str, Any]:
    """Stream the release into OUT/wvs/countries/<Country>.csv and copy the item table; a summary per
    country (respondents, items never asked). Nothing is written when the input is bad."""
    items = WVSData(items_from).items()  # the seed items (their text is not in the release); refused if inconsistent
    columns = [it.column for it in items]
    if not release.is_file():
        raise InputError(f"data wvs: {release} not found")
    if (out / "wvs").exists():
        raise InputError(f"data wvs: {out / 'wvs'} already exists (choose another --out)")
    with open(release, newline="", encoding="utf-8-sig") as fh, ExitStack() as files:
        reader = _reader(fh, release)
        absent = [c for c in columns if c not in (reader.fieldnames or [])]
        if len(absent) == len(columns):
            raise InputError(f"data wvs: {release} has none of the item columns ({', '.join(columns[:3])} …)")
        countries = out / "wvs" / "countries"
        countries.mkdir(parents=True)
        writers: dict[str, Any] = {}
        stats: dict[str, dict[str, Any]] = {}
        for row in reader:
            alpha = (row["B_COUNTRY_ALPHA"] or row["B_COUNTRY"] or "").strip()
            name = COUNTRY_NAMES.get(alpha, alpha)
            if name not in writers:
                writers[name] = csv.writer(files.enter_context(open(countries / f"{name}.csv", "w", newline="",
                                                                    encoding="utf-8")))
                writers[name].writerow([*ID_COLUMNS, *columns])
                stats[name] = {"alpha3": alpha, "respondents": 0, "valid": dict.fromkeys(columns, 0),
                               "codes": {c: set() for c in columns}}
            codes = [cell_code(row.get(c) or "") for c in columns]
            writers[name].writerow([row["B_COUNTRY"], alpha, *["" if c is None else c for c in codes]])
            s = stats[name]
            s["respondents"] += 1
            for c, v in zip(columns, codes):
                if v is not None and v >= 0:
                    s["valid"][c] += 1
                    s["codes"][c].add(v)
    (out / "wvs" / "questions.jsonl").write_bytes((items_from / "wvs" / "questions.jsonl").read_bytes())
    warnings = [unlisted_warning(it, f"{n}.csv", unlisted) for n, s in sorted(stats.items()) for it in items
                if (unlisted := unlisted_codes(it, sorted(s["codes"][it.column])))]
    summary = {"release": str(release), "items": len(columns), "columns_absent_from_release": absent,
               "warnings": warnings,
               "countries": {n: {"alpha3": s["alpha3"], "respondents": s["respondents"],
                                 "never_asked": [c for c, v in s["valid"].items() if v == 0]}
                             for n, s in sorted(stats.items())}}
    atomic_write_json(out / "wvs" / "release_summary.json", summary)
    return summary


__all__ = ["COUNTRY_NAMES", "convert"]
