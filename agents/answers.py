"""Reading a number off a survey answer, strictly: a range or an echo of the scale is not an answer."""
from __future__ import annotations

import re

# The first number in the answer, not part of a range ("3-5") or an echo of the scale ("1 = of ...").
_ANSWER = re.compile(r"^\W*(?:answer\W*|option\W*|i (?:would )?(?:choose|pick|say)\W*)?(\d{1,2})"
                     r"(?!\d|\.\d|\s*[-–=/]\s*\w)", re.I)


def parse_scale_answer(text: str, lo: int = 1, hi: int = 5) -> int | None:
    """The answer on a `lo`..`hi` scale, or None (counted as invalid, never guessed)."""
    m = _ANSWER.search(text)
    if not m:
        return None
    value = int(m.group(1))
    return value if lo <= value <= hi else None
