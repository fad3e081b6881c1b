"""Where the shared research data lives (configurable; never copied into the package)."""
from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "CULTUREPARK_DATA_DIR"


def resolve_data_dir(explicit: str | Path | None = None, scenario_value: str | None = None,
                     scenario_dir: Path | None = None) -> Path:
    """CLI flag > scenario `data_dir` (relative to the scenario file) > $CULTUREPARK_DATA_DIR >
    ../shared/data next to the working directory or the source checkout."""
    if explicit:
        return Path(explicit).expanduser()
    if scenario_value:
        p = Path(scenario_value).expanduser()
        return p if p.is_absolute() or scenario_dir is None else (scenario_dir / p)
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    source_root = Path(__file__).resolve().parent.parent
    for candidate in (Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data",
                      source_root.parent / "shared" / "data", source_root / "shared" / "data"):
        if (candidate / "wvs").is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"
