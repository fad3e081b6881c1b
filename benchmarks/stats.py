"""Honest statistics for every evaluation: mean ± std over the stated seeds, nothing picked."""
from __future__ import annotations

import statistics
from collections.abc import Iterable

from culturepark.benchmarks.results import MeanStd


def mean_std(values: Iterable[float | None]) -> MeanStd:
    vals = [v for v in values if v is not None]
    if not vals:
        return MeanStd(mean=None, std=None, n=0)
    return MeanStd(mean=round(statistics.fmean(vals), 4),
                   std=round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0, n=len(vals))
