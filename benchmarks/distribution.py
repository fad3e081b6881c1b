"""How far a model's answer *distribution* is from a population's: the published measures, computed one way.

Agreement with one modal code says nothing about whether a model represents the spread of a
population's opinions; the accepted measures compare distributions over an item's ordered options:

- normalised Wasserstein-1 (earth mover's) distance over the ordinal options, W1 / (N − 1), where
  adjacent options are one unit apart (N options) — 0 identical, 1 all mass at opposite ends;
- representativeness 1 − W1/(N − 1): OpinionQA, Santurkar et al. 2023, "Whose Opinions Do Language
  Models Reflect?" (ICML), §3;
- similarity 1 − Jensen–Shannon distance: GlobalOpinionQA, Durmus et al. 2023, "Towards Measuring the
  Representation of Subjective Global Opinions in Language Models". Their code takes SciPy's
  `jensenshannon` with its default natural logarithm, so the distance lies in [0, √ln 2 ≈ 0.833] and the
  similarity in [0.167, 1]; the same logarithm is used here so figures can be set beside theirs;
- the share of items whose normalised W1 is below 0.2: WorldValuesBench, Zhao et al. 2024 (LREC-COLING),
  who report it per model (GPT-3.5 Turbo: 75.0 % of its probe items).

Intervals are percentile bootstraps (resampling the items for a figure over items; the respondents and
the model's answers for one item), seeded, so a rerun gives the same interval.
"""
from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from culturepark.benchmarks.results import DistributionFidelity, Estimate

W1_THRESHOLD = 0.2  # WorldValuesBench's cut-off on the normalised W1
BOOTSTRAP = 1000


def distribution(answers: Sequence[int], codes: Sequence[int]) -> list[float]:
    """Shares of each option (in the order of `codes`) among answers; answers outside `codes` are not counted
    (WVS negative codes are missing values and never reach here)."""
    counts = Counter(answers)  # all of them, then the options' counts: a bootstrap calls this 1000 times per item
    total = sum(counts[c] for c in codes)
    return [counts[c] / total if total else 0.0 for c in codes]


def _check(p: Sequence[float], q: Sequence[float]) -> None:
    if len(p) != len(q) or len(p) < 2:
        raise ValueError(f"distributions over the same ≥ 2 options needed (got {len(p)} and {len(q)})")
    for d in (p, q):
        if abs(sum(d) - 1.0) > 1e-6 or min(d) < 0:
            raise ValueError(f"not a distribution: {list(d)}")


def normalised_w1(p: Sequence[float], q: Sequence[float]) -> float:
    """W1 over ordered options one unit apart (the summed gap between the two cumulative distributions),
    divided by its maximum N − 1."""
    _check(p, q)
    cp = cq = gap = 0.0
    for a, b in zip(p[:-1], q[:-1]):
        cp, cq = cp + a, cq + b
        gap += abs(cp - cq)
    return gap / (len(p) - 1)


def representativeness(p: Sequence[float], q: Sequence[float]) -> float:
    """OpinionQA (Santurkar et al. 2023): 1 − W1/(N − 1)."""
    return 1.0 - normalised_w1(p, q)


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen–Shannon distance (√ of the divergence), natural logarithm as SciPy's default."""
    _check(p, q)
    m = [(a + b) / 2 for a, b in zip(p, q)]

    def kl(x: Sequence[float]) -> float:
        return sum(a * math.log(a / c) for a, c in zip(x, m) if a > 0)
    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def js_similarity(p: Sequence[float], q: Sequence[float]) -> float:
    """GlobalOpinionQA (Durmus et al. 2023): 1 − Jensen–Shannon distance."""
    return 1.0 - js_distance(p, q)


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    ordered = sorted(values)
    lo = ordered[math.floor((1 - level) / 2 * (len(ordered) - 1))]
    hi = ordered[math.ceil((1 + level) / 2 * (len(ordered) - 1))]
    return lo, hi


def bootstrap(values: Sequence[float], stat: Callable[[Sequence[float]], float], seed: int = 0,
              rounds: int = BOOTSTRAP) -> tuple[float, float]:
    """95 % percentile interval of `stat` over `values` resampled with replacement."""
    if not values:
        raise ValueError("bootstrap of no values")
    rng = random.Random(seed)
    return percentile_interval([stat(rng.choices(values, k=len(values))) for _ in range(rounds)])


def item_interval(model: Sequence[int] | Mapping[int, float], people: Sequence[int], codes: Sequence[int],
                  seed: int = 0, rounds: int = BOOTSTRAP) -> tuple[float, float]:
    """95 % interval of one item's normalised W1: the respondents resampled, and the model's answers too when
    they are samples (answer probabilities, a mapping code → p, are taken as exact). Resampling n answers with
    replacement is a multinomial draw of n from their shares, so each round is drawn as counts at once
    (numpy, seeded) rather than answer by answer: a country's ~1,500 respondents × 1000 rounds per item."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def resampled(answers: Sequence[int]) -> Any:
        valid = set(codes)
        n = sum(1 for a in answers if a in valid)
        return rng.multinomial(n, distribution(answers, codes), size=rounds) / max(1, n)
    ps = (np.tile([model.get(c, 0.0) for c in codes], (rounds, 1)) if isinstance(model, Mapping)
          else resampled(model))
    qs = resampled(people)
    w1 = np.abs(np.cumsum(ps - qs, axis=1)[:, :-1]).sum(axis=1) / (len(codes) - 1)
    return percentile_interval([float(x) for x in w1])


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def share_below(values: Sequence[float], threshold: float = W1_THRESHOLD) -> float:
    """WorldValuesBench (Zhao et al. 2024): the share of items whose normalised W1 is below the threshold."""
    return sum(v < threshold for v in values) / len(values)


def _estimate(values: Sequence[float], stat: Callable[[Sequence[float]], float], seed: int) -> Estimate:
    lo, hi = bootstrap(values, stat, seed)
    return Estimate(value=round(stat(values), 4), interval=[round(lo, 4), round(hi, 4)])


def over_items(per_item: Sequence[tuple[float, float, float]], source: str, seed: int = 0,
               methods: Mapping[str, int] | None = None, outside_mass: Sequence[float] = ()
               ) -> DistributionFidelity | None:
    """The figures over items from each item's (normalised W1, representativeness, JS similarity); None
    when no item had an answer distribution. `methods`: items per method (probs, samples), recorded when
    given; `outside_mass`: the probability each item read from probabilities put outside its options."""
    if not per_item:
        return None
    w1s, reps, jss = ([row[k] for row in per_item] for k in range(3))
    extra: dict[str, object] = {}
    if methods is not None:
        extra["methods"] = dict(methods)
    if outside_mass:
        extra["outside_mass"] = round(mean(outside_mass), 4)
    return DistributionFidelity(items=len(per_item), source=source, w1=_estimate(w1s, mean, seed),
                                representativeness=_estimate(reps, mean, seed),
                                js_similarity=_estimate(jss, mean, seed),
                                share_w1_below_0_2=_estimate(w1s, share_below, seed), **extra)


def from_probabilities(probs: Mapping[str, float], codes: Sequence[int]) -> tuple[dict[int, float], float] | None:
    """The model's answer distribution over an item's options from its probability of each option code (as a
    backend gives them, `Completion.label_probs`): renormalised over the options, with the mass it put
    elsewhere (other tokens) returned beside it, not hidden. None when the options got no mass at all."""
    mass = {c: max(0.0, float(probs.get(str(c), 0.0))) for c in codes}
    total = sum(mass.values())
    if total <= 0:
        return None
    return {c: m / total for c, m in mass.items()}, max(0.0, 1.0 - total)


def item_figures(model: Sequence[int] | Mapping[int, float], people: Sequence[int], codes: Sequence[int],
                 seed: int = 0) -> dict[str, object]:
    """One item's distribution figures (the fields of a result row) from the model's parsed answers (a
    sequence of codes) or its answer probabilities (a mapping code → p over the options, taken as exact), and
    the respondents' valid answers; empty when the model gave neither."""
    if not model or not people:
        return {}
    probs = isinstance(model, Mapping)
    p = [model.get(c, 0.0) for c in codes] if isinstance(model, Mapping) else distribution(model, codes)
    q = distribution(people, codes)
    lo, hi = item_interval(model, people, codes, seed)
    w1 = normalised_w1(p, q)
    return {"model_distribution": {str(c): round(x, 4) for c, x in zip(codes, p) if round(x, 4)},
            **({} if probs else {"answers": len(model)}),
            "w1": round(w1, 4), "w1_interval": [round(lo, 4), round(hi, 4)],
            "representativeness": round(1 - w1, 4), "js_similarity": round(js_similarity(p, q), 4),
            "method": "probs" if probs else "samples"}
