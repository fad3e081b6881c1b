"""Stance policies: how a delegate's answer to an item is drawn from real respondents."""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from culturepark.agents.wvs import WVSItem

StancePolicy = Literal["sample", "mode", "mean", "control"]


@dataclass(frozen=True, slots=True)
class Stance:
    code: int
    text: str
    policy: StancePolicy
    respondents: int


def choose_stance(policy: StancePolicy, item: WVSItem, answers: Sequence[int],
                  rng: random.Random) -> Stance:
    """`sample` draws one real respondent (stances across conversations follow the country's
    distribution); `mode` is the most common answer (ties → lowest code); `mean` is the rounded
    mean of valid answers, labelled as such. `control` draws as `sample` does (the same plan, the same
    respondents), but the delegate is told none of it (`protocol.background`): a run whose judged
    agreement says what the culture alone gives. `answers` must already exclude missing codes."""
    if not answers:
        raise ValueError(f"no valid answers for item {item.q_id}")
    if policy in ("sample", "control"):
        code = answers[rng.randrange(len(answers))]
        text = item.label(code)
    elif policy == "mode":
        counts = Counter(answers)
        top = max(counts.values())
        code = min(c for c, n in counts.items() if n == top)
        text = item.label(code)
    else:
        mean = sum(answers) / len(answers)
        code = int(mean + 0.5)
        text = f"{item.label(code)} (the rounded mean answer, {mean:.2f}, of {len(answers)} respondents)"
    return Stance(code, text, policy, len(answers))
