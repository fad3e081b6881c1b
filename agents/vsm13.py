"""The VSM13 questionnaire (Hofstede's Values Survey Module 2013): its 24 items, as the Hofstede
evaluation and the education studies' tests ask them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from culturepark.engine.errors import InputError

VSM13_FILE = Path("hofstede") / "vsm13_items.jsonl"


def load_vsm13_items(data_dir: Path) -> list[dict[str, Any]]:
    path = Path(data_dir) / VSM13_FILE
    if not path.exists():
        raise InputError(f"hofstede: {path} not found (set --data-dir)")
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]
