"""A turn as a conversation's policy sees it: who spoke, for which endpoint role, what was said.

Its own module because two engine modules build it: the scheduler (a turn just generated) and
the resume state (the turns an unfinished conversation already has in the log).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Turn:
    index: int
    speaker: str
    role: str
    text: str

__all__ = ["Turn"]
