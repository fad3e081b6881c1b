"""The original's prompt format: a "culture chatbot" system line and WVS items as multiple choice.

Why one module: the paper trained on this format and evaluated in it, so the paper-format SFT
export (`trainers/refine`), `eval wvs`, and the `--prompt-style paper` of `eval hofstede` and
`eval moderation` must word it identically — a tuned model is only measured fairly in the
format it learned. The wording is paraphrased from the original (Scarelette/CulturePark
`data_process.py`); its parts are kept: the system line, "answer from LO to HI", the question
(a statement becomes "Do you agree with …?"), the options, "one option only", and answers of
the form "<code>. <opinion>" (or the bare code).
"""
from __future__ import annotations

import re
from typing import Literal

from culturepark.agents.answers import parse_scale_answer
from culturepark.agents.meta import ConversationMeta
from culturepark.agents.wvs import WVSItem, parse_scale

PromptStyle = Literal["paper", "persona"]
PROMPT_STYLES: tuple[str, ...] = ("paper", "persona")


def chatbot_system(culture: str) -> str:
    """The original's system line ("You are an {culture} chatbot that know {culture} very well"), paraphrased."""
    article = "an" if culture[:1].lower() in "aeiou" else "a"
    return f"You are {article} {culture} chatbot who knows {culture} culture very well."


def item_from_meta(meta: ConversationMeta) -> WVSItem:
    """The WVS item a conversation was about, rebuilt from its metadata (no data directory needed)."""
    scale, note = parse_scale(meta.item_options)
    return WVSItem(meta.item_id, meta.item_topic, meta.item_text, meta.item_options, scale, note)


def code_range(item: WVSItem) -> tuple[int, int]:
    return (min(item.scale), max(item.scale)) if item.scale else (1, 10)


def multiple_choice(item: WVSItem) -> str:
    """One WVS item as the original asked it, with its numbered options."""
    lo, hi = code_range(item)
    text = item.text.strip()
    question = text if "?" in text else f"Do you agree with the statement \"{text.rstrip('.')}\"?"
    return (f"Answer with a number from {lo} to {hi}. {question}\nOptions: {item.option_text.strip()}\n"
            "Choose exactly one option.")


def scale_question(question: str, options: str, lo: int, hi: int) -> str:
    """A non-WVS survey item (VSM13, moderation) in the same multiple-choice form."""
    return f"Answer with a number from {lo} to {hi}. {question}\nOptions: {options}\nChoose exactly one option."


def answer(code: int, opinion: str | None = None) -> str:
    """What the model learns to say: "<code>. <opinion>", or the bare code."""
    return f"{code}. {opinion.strip()}" if opinion else str(code)


def parse_code(text: str, item: WVSItem) -> int | None:
    """The answer code at the start of a reply, within the item's range; else the one option whose
    words the reply's first sentence states ("I agree with this" → agree; "Strongly disagree" →
    that, not "disagree" or "agree", which it contains); None when no option or several are stated."""
    lo, hi = code_range(item)
    code: int | None = parse_scale_answer(text, lo, hi)
    if code is not None or not item.scale:
        return code
    first = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0].lower()
    spans = [(m.start(), m.end(), c) for c, lab in item.scale.items()
             for m in re.finditer(rf"(?<![\w-]){re.escape(lab.lower())}(?![\w-])", first)]
    named = {c for a, b, c in spans if not any(x <= a and b <= y and (x, y) != (a, b) for x, y, _ in spans)}
    return named.pop() if len(named) == 1 else None
