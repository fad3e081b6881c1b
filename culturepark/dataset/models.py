"""The dataset's typed records: the build settings (the flags' single source), the manifest that
pins a build, and the figures the card is written from.

The manifest is what `dataset verify` checks and what a reader cites; it holds nothing that
changes between two builds of the same inputs (no clock, no output path), so two builds are the
same bytes. Dates come from the inputs (the runs' and refinements' headers).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write_json

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
HELDOUT_ITEMS = "heldout_items.txt"
TRAINED_ITEMS = "trained_items.txt"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Gates(Record):
    """Which conversations and examples a build keeps. Every drop is counted by its reason."""

    min_self_report: float | None = Field(None, ge=0, le=1, description=(
        "drop conversations whose delegate, re-asked its item (`eval fidelity`), answered further than this "
        "from its stance: 1 - |answer - stance| / (options - 1); 1.0 keeps exact answers only (needs a "
        "fidelity result for each run; see --evals)"))
    judge_fidelity: float | None = Field(None, ge=0, le=1, description=(
        "the same threshold on the blind judge's verdict (`eval fidelity --judge`); 'unclear' counts as 0"))
    min_words: int | None = Field(None, ge=0, description="drop conversations with fewer words over all turns")
    max_words: int | None = Field(None, ge=1, description="drop conversations with more words over all turns")
    min_answer_words: int | None = Field(None, ge=0, description="drop SFT examples whose answer has fewer words")
    max_answer_words: int | None = Field(None, ge=1, description="drop SFT examples whose answer has more words")
    keep_looping: bool = Field(False, description=(
        "keep conversations where both agents repeated their previous turn word for word (dropped by default; "
        "failed and unfinished conversations are always dropped)"))


class BuildSettings(Record):
    """`dataset build`'s settings; its flags are these fields."""

    seed: int = Field(0, description="the seed of the split and of the held-out items' choice")
    validation: float = Field(0.1, ge=0, lt=1, description="share of each culture x item stratum in validation")
    test: float = Field(0.1, ge=0, lt=1, description="share of each culture x item stratum in test")
    holdout_items: list[str] = Field(default_factory=list, description=(
        "WVS items whose every row goes to test only: a count N (chosen by the seed), or item ids "
        "(Q27 Q31 ..., two or more numbers, or one id written Q27); give it after the directories"))
    format: Literal["parquet", "jsonl"] = Field("parquet", description="the shards' format")
    shard_rows: int = Field(100_000, ge=1, description="rows per shard at most")
    license: str = Field("other", description=(
        "the card's license id (default other: WVS-derived stances and items; see the card)"))
    gates: Gates = Field(default_factory=Gates)

    @field_validator("holdout_items")
    @classmethod
    def _ids_or_count(cls, value: list[str]) -> list[str]:
        for v in value:
            if not (v.isdigit() or (v[:1] in "Qq" and v[1:].isdigit())):
                raise ValueError(f"--holdout-items: {v!r} is neither a count nor an item id like Q27")
        if len(value) > 1 and any(v.isdigit() and v != v.lstrip("0") for v in value):
            raise ValueError("--holdout-items: item ids have no leading zeros")
        return value

    def holdout(self) -> int | list[str]:
        """A count, or the bare item ids (the way `eval wvs --trained-items` and the data name them)."""
        v = self.holdout_items
        if len(v) == 1 and v[0].isdigit():
            return int(v[0])
        return sorted({x.lstrip("Qq") for x in v}, key=_item_key)

    @property
    def train(self) -> float:
        return 1.0 - self.validation - self.test


def _item_key(item: str) -> tuple[int, str]:
    return (int(item), item) if item.isdigit() else (1 << 30, item)


class FileEntry(Record):
    sha256: str
    bytes: int
    rows: int | None = None  # data shards only


class SourceEntry(Record):
    """One input: a run, and the refinement of it when one was given or found beside it."""

    name: str  # the rows' `source` column
    run_dir: str
    run_name: str | None
    scenario_hash: str
    run_digest: str  # sha256 over the run's log files
    started_at: str | None  # ISO, from the run's header
    protocol: list[str]  # versions, e.g. ["v2"]
    modes: list[str]
    models: dict[str, str]  # role → model spec
    prompts_hash: str  # sha256 over every request the run sent (the turns' request hashes, in log order)
    conversations: int
    refine_dir: str | None = None
    refine_hash: str | None = None  # the refinement's content hash (its config and source)
    refine_digest: str | None = None  # sha256 over the refinement's log, opinions, summary and SFT files
    refine_started_at: str | None = None
    refiner: str | None = None
    refine_format: str | None = None


class Package(Record):
    name: str
    version: str | None
    commit: str | None  # the git commit of the code that built it ("-dirty": uncommitted changes)


class Manifest(Record):
    """`manifest.json`: everything a build depended on, and the hash of every file it wrote."""

    format: Literal[1] = 1
    package: Package
    settings: BuildSettings
    dates: dict[str, str | None]  # earliest and latest start of the inputs, ISO
    sources: list[SourceEntry]
    heldout_items: list[str]
    trained_items: list[str]
    items_outside_train: list[str]  # neither trained nor held out (too few rows to reach train)
    rows: dict[str, dict[str, int]]  # config → split → rows
    drops: dict[str, dict[str, int]]  # conversations / examples → reason → count
    evaluations: dict[str, list[str]]  # evaluation → result files read (fidelity gates and figures)
    files: dict[str, FileEntry]  # path in the folder → its hash (every file but this one)

    def to_json(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = self.model_dump(mode="json")
        return data

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def read(cls, folder: Path) -> Self:
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise InputError(f"dataset verify: no {MANIFEST} in {folder} (not a built dataset)")
        try:
            return cls.model_validate(orjson.loads(path.read_bytes()))
        except (orjson.JSONDecodeError, ValueError) as exc:
            first = str(exc).splitlines()
            raise InputError(f"{path}: not a dataset manifest: {' '.join(first[:3])}") from exc
