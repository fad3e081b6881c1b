"""Honest statistics for every evaluation: mean ± std over the stated seeds, nothing picked."""
from __future__ import annotations

import statistics
from collections.abc import Iterable


def mean_std(values: Iterable[float | None]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": round(statistics.fmean(vals), 4),
            "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0, "n": len(vals)}
