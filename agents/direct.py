"""The paper's direct-generation baseline as a turn policy: one request per culture and item asks
the delegate's persona, anchored to the same real respondent's answer a conversation would get,
for N reasons behind it. It shares the CulturePark plan (same ids, stances and metadata), so a
direct run and a conversation run of the same scenario compare item for item.

`style: paper` asks as the original did (Scarelette/CulturePark `directly_generation.py`, commit
a5dc627): the system line "You are an {culture} people chatbot that know {culture} people very
well.", then "Question: {item}\nAnswer: {answer}\nPlease list 10 reasons to support the answer and
number them", where an item without "?" becomes `How do you think about "{item}"?`. Two slips of
that file are not copied: it named the culture "Arabic" for every culture, and it appended the
user message twice. The original's answer was the country's average ("Avg" row) as option text;
here it is the plan's stance (`stance_policy: mean` gives the original's)."""
from __future__ import annotations

from collections.abc import Sequence

from culturepark.agents.meta import ConversationMeta, MetaReader
from culturepark.engine.backends.base import Request
from culturepark.engine.scheduler import ConversationSpec, Turn, TurnRequest
from culturepark.scenarios.schema import DirectScenario


def reasons_request(meta: ConversationMeta, reasons: int, rendering: str, max_tokens: int,
                    temperature: float) -> Request:
    d = meta.participants.delegate
    opts = f" (options: {meta.item_options})" if meta.item_options else ""
    system = (f"You are {d.name}, {d.person}. When asked \"{meta.item_text}\"{opts}, you answered "
              f"\"{meta.stance_text}\". Everything you say must be consistent with this answer.")
    user = (f"Give {reasons} different reasons for your answer, from your own life and culture, one per line, "
            "each line starting with '- '.")
    return Request.instruction(system, user, f"{d.name}'s reasons:\n-", rendering, max_tokens, temperature,
                               stop=["\n\n"])


def paper_reasons_request(meta: ConversationMeta, reasons: int, rendering: str, max_tokens: int,
                          temperature: float) -> Request:
    """The original's direct request (module docstring): a culture chatbot, a Question/Answer frame."""
    culture = meta.culture
    system = f"You are an {culture} people chatbot that know {culture} people very well."
    text = meta.item_text.strip()
    question = text if "?" in text else f"How do you think about \"{text}\"?"
    user = (f"Question: {question}\nAnswer: {meta.stance_text}\n"
            f"Please list {reasons} reasons to support the answer and number them")
    return Request.instruction(system, user, "1.", rendering, max_tokens, temperature, stop=["\n\n\n"])


REQUESTS = {"ours": reasons_request, "paper": paper_reasons_request}


class DirectPolicy:
    """`TurnPolicy`: one delegate turn per conversation, then done."""

    def __init__(self, scenario: DirectScenario) -> None:
        self.scenario = scenario
        self.rendering = scenario.backend_for("delegate").rendering
        self.sampling = scenario.sampling_for("delegate")
        self.metas = MetaReader()

    def next_turn(self, conv: ConversationSpec, turns: Sequence[Turn]) -> TurnRequest | None:
        if turns:
            return None
        meta = self.metas.conversation(conv.id, conv.meta)
        max_tokens = max(self.sampling.max_tokens, 48 * self.scenario.reasons)
        ask = REQUESTS[self.scenario.style]
        request = ask(meta, self.scenario.reasons, self.rendering, max_tokens, self.sampling.temperature)
        return TurnRequest(speaker=meta.participants.delegate.name, role="delegate", request=request,
                           validate=lambda text: None if text.strip(" -\n") else "no_reasons")
