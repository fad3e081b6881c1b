"""Splits that keep evaluations honest: whole WVS items held out into test, the rest stratified.

The unit split is the conversation, so every SFT example made from one conversation lands in the
same split as it (no opinion of a test conversation is trained on). Held-out items go to test
whole: every culture's conversations about them, so `eval wvs --trained-items` measures on them
what the tuned model never saw. The other conversations are ordered stratum by stratum
(culture x item; strata and members in an order drawn from the seed) and dealt to the splits by
largest deficit against their shares (a split with a share and nothing yet dealt goes first, so a
small dataset still has a validation and a test conversation): a large stratum is split in
proportion, and strata of one conversation (the paper's plan) take turns, so validation and test
spread over cultures and items instead of falling on the first ones. Everything is a pure
function of the ids and the seed.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

from culturepark.dataset.models import SPLITS, BuildSettings
from culturepark.engine.errors import InputError


def _rank(seed: int, *parts: str) -> str:
    return hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).hexdigest()


def heldout_items(settings: BuildSettings, items: Iterable[str]) -> list[str]:
    """The held-out items: those named (each must be in the data), or N drawn by the seed."""
    present = sorted(set(items), key=lambda q: (len(q), q))
    wanted = settings.holdout()
    if isinstance(wanted, int):
        if wanted >= len(present) and wanted > 0:
            raise InputError(f"dataset build: --holdout-items {wanted}: the data has {len(present)} items "
                             "(at least one must stay to train on)")
        chosen = sorted(present, key=lambda q: _rank(settings.seed, "holdout", q))[:wanted]
    else:
        missing = [q for q in wanted if q not in present]
        if missing:
            raise InputError(f"dataset build: --holdout-items: item(s) {', '.join('Q' + q for q in missing)} "
                             f"not in the data (it has {', '.join('Q' + q for q in present)})")
        if len(wanted) >= len(present):
            raise InputError(f"dataset build: --holdout-items names all {len(present)} items "
                             "(at least one must stay to train on)")
        chosen = wanted
    return sorted(chosen, key=lambda q: (len(q), q))


def assign(units: list[tuple[str, str, str]], settings: BuildSettings, heldout: set[str]) -> dict[str, str]:
    """`units`: (unit id, culture, item) → the split of each unit id."""
    split: dict[str, str] = {}
    strata: dict[tuple[str, str], list[str]] = {}
    for uid, culture, item in units:
        if item in heldout:
            split[uid] = "test"
        else:
            strata.setdefault((culture, item), []).append(uid)
    shares = {"train": settings.train, "validation": settings.validation, "test": settings.test}
    dealt = dict.fromkeys(SPLITS, 0)
    n = 0
    for key in sorted(strata, key=lambda k: _rank(settings.seed, "stratum", *k)):
        for uid in sorted(strata[key], key=lambda u: _rank(settings.seed, "unit", u)):
            n += 1
            # the split furthest below its share after this unit (a split with a share but nothing
            # yet counts one unit further below, so small data still fills every split); ties go to
            # the earlier in SPLITS
            best = max(SPLITS, key=lambda s: (shares[s] * n - dealt[s] + (shares[s] > 0 and not dealt[s]),
                                              -SPLITS.index(s)))
            dealt[best] += 1
            split[uid] = best
    return split
