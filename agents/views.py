"""Each agent's own view of a conversation.

The original code kept one shared history in which each agent saw the other's
private instructions. Here the speaking agent sees: its persona (system), the
other's turns (user), its own turns (assistant) and only the moderator prompts
addressed to it. Two renderings: chat messages for chat models, and a plain
`Name: text` transcript with stop sequences for base models.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Step:
    """One agent turn of the script: who speaks and what the moderator tells them first."""

    speaker_role: str  # "delegate" | "main_contact"
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class SpokenTurn:
    speaker_role: str
    text: str


def chat_messages(system: str, me: str, steps: Sequence[Step], turns: Sequence[SpokenTurn],
                  current: Step) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}]
    pending: list[str] = []

    def flush() -> None:
        if pending:
            messages.append({"role": "user", "content": "\n\n".join(pending)})
            pending.clear()

    for step, turn in zip(steps, turns):
        if step.prompt and step.speaker_role == me:
            pending.append(f"(Moderator) {step.prompt}")
        if turn.speaker_role == me:
            flush()
            messages.append({"role": "assistant", "content": turn.text})
        else:
            pending.append(turn.text)
    if current.prompt:
        pending.append(f"(Moderator) {current.prompt}")
    flush()
    return messages


def transcript_prompt(background: str, me: str, names: dict[str, str], steps: Sequence[Step],
                      turns: Sequence[SpokenTurn], current: Step) -> tuple[str, list[str]]:
    """A base-model prompt ending in 'Name:' and the stop sequences that end the reply."""
    lines = [background.strip(), ""]
    for step, turn in zip(steps, turns):
        if step.prompt and step.speaker_role == me:
            lines.append(f"Moderator: {step.prompt}")
        lines.append(f"{names[turn.speaker_role]}: {turn.text}")
    if current.prompt:
        lines.append(f"Moderator: {current.prompt}")
    lines.append(f"{names[me]}:")
    other = next(n for role, n in names.items() if role != me)
    return "\n".join(lines), ["\n", f"{other}:", "Moderator:"]
