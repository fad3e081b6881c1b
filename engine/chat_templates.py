"""Chat templates: one rendering of chat messages into text, shared by training and generation.

Why here, in the engine: a model tuned on one rendering must be prompted with the same one,
or the effect of tuning can vanish. The SFT export, the LoRA trainer's loss mask and the local
backend all call `render_prompt`/`render_chat`, and a trained adapter carries a `PromptCard`
naming its template, so the backend that loads the adapter renders requests exactly as the
trainer did. Nothing here knows what the messages are about.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

TextTemplate = Literal["gemma", "chatml", "llama2"]  # rendered without a tokenizer (SFT text export)
# "tokenizer": the base tokenizer's own template; "paper": the original's plain training text
# (`### System: … Question: …\n ### Answer: …`), no chat markup and no end-of-answer marker
Template = Literal["gemma", "chatml", "llama2", "tokenizer", "paper"]
PROMPT_CARD = "culturepark_prompt.json"

# What closes an answer in each fixed template: generation stops there, training learns to emit it.
END_OF_ANSWER = {"gemma": "<end_of_turn>", "chatml": "<|im_end|>", "llama2": "</s>"}


def _gemma(context: list[dict[str, str]]) -> str:
    """Gemma has no system role: the system text opens the first user turn, as Gemma's own template does."""
    system = " ".join(m["content"] for m in context if m["role"] == "system")
    parts: list[str] = []
    for m in context:
        if m["role"] == "system":
            continue
        content = m["content"]
        if system and m["role"] == "user" and not parts:
            content = f"{system}\n\n{content}"
        who = "model" if m["role"] == "assistant" else "user"
        parts.append(f"<start_of_turn>{who}\n{content}<end_of_turn>\n")
    return "".join(parts) + "<start_of_turn>model\n"


def _llama2(context: list[dict[str, str]]) -> str:
    """Llama-2 chat: `[INST] <<SYS>>…<</SYS>> user [/INST] answer </s><s>[INST] …`."""
    system = " ".join(m["content"] for m in context if m["role"] == "system")
    out, pending_sys = "", f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
    for m in context:
        if m["role"] == "user":
            out += f"<s>[INST] {pending_sys}{m['content'].strip()} [/INST]"
            pending_sys = ""
        elif m["role"] == "assistant":
            out += f" {m['content'].strip()} </s>"
    return out


def _paper(context: list[dict[str, str]]) -> str:
    """The original CulturePark's training text (its data_process.py): the system text and the
    question on one line, then ` ### Answer:`; later turns repeat the Question/Answer frame."""
    system = " ".join(m["content"] for m in context if m["role"] == "system")
    out = ""
    for m in context:
        if m["role"] == "user":
            head = f"### System: {system} Question: " if system and not out else "### Question: "
            out += f"{head}{m['content']}\n ### Answer:"
        elif m["role"] == "assistant":
            out += f" {m['content']}\n"
    return out


def render_prompt(messages: list[dict[str, str]], template: Template, tokenizer: Any = None) -> str:
    """The text a model sees before it answers: every message, then the opening of its turn."""
    if template == "tokenizer":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'tokenizer' needs a tokenizer with a chat template")
        text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text
    if template == "gemma":
        return _gemma(messages)
    if template == "llama2":
        return _llama2(messages)
    if template == "paper":
        return _paper(messages)
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def render_chat(messages: list[dict[str, str]], template: Template, tokenizer: Any = None) -> tuple[str, str]:
    """(prompt, completion) of one SFT example: everything before the last assistant answer, and that answer."""
    *context, last = messages
    if last["role"] != "assistant":
        raise ValueError("the last message of an SFT example must be the assistant's")
    if template == "tokenizer":
        prompt = render_prompt(context, template, tokenizer)
        whole = tokenizer.apply_chat_template(messages, tokenize=False)
        if not whole.startswith(prompt):
            raise ValueError("the tokenizer's chat template renders the answer's context differently from the prompt")
        return prompt, whole[len(prompt):]
    if template == "paper":  # the original's text ends with the answer: no marker was learned
        return render_prompt(context, template), f" {last['content']}"
    sep = " " if template == "llama2" else ""
    suffix = "\n" if template != "llama2" else ""
    return render_prompt(context, template), f"{sep}{last['content']}{END_OF_ANSWER[template]}{suffix}"


class PromptCard(BaseModel):
    """How an adapter was trained to be prompted: its chat template and the system/question style
    of its data (a label the engine passes on, never interprets)."""

    model_config = ConfigDict(extra="forbid")
    template: Template
    prompt_style: str | None = None


def write_prompt_card(adapter_dir: Path, card: PromptCard) -> None:
    (Path(adapter_dir) / PROMPT_CARD).write_bytes(orjson.dumps(card.model_dump(), option=orjson.OPT_INDENT_2))


def read_prompt_card(adapter_dir: str | Path | None) -> PromptCard | None:
    """The card an adapter directory carries; None for an adapter trained before cards existed."""
    if not adapter_dir:
        return None
    path = Path(adapter_dir) / PROMPT_CARD
    if not path.exists():
        return None
    return PromptCard.model_validate_json(path.read_bytes())
