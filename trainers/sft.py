"""SFT formats: OpenAI chat JSONL, chat-template text JSONL, and OpenAI's format check.

One place renders chat examples into text (`engine.chat_templates.render_chat`), so the
exported `text.jsonl`, the LoRA trainer's loss mask and the local backend agree token for token.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from culturepark.engine.chat_templates import TextTemplate, render_chat
from culturepark.engine.files import atomic_write_jsonl
from culturepark.engine.tokens import approx_tokens
from culturepark.trainers.summaries import FormatCheck

OPENAI_MAX_EXAMPLE_TOKENS = 65536  # per-example context limit of current fine-tunable models
OPENAI_MIN_EXAMPLES = 10  # OpenAI refuses a fine-tuning file with fewer
ROLES = {"system", "user", "assistant"}


def write_sft(out_dir: Path, examples: list[list[dict[str, str]]], template: TextTemplate) -> dict[str, Path]:
    """`openai_chat.jsonl` ({"messages": ...}) and `text.jsonl` ({"text", "prompt", "completion"})."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chat = out_dir / "openai_chat.jsonl"
    text = out_dir / "text.jsonl"
    atomic_write_jsonl(chat, ({"messages": m} for m in examples))

    def rows() -> Iterator[dict[str, str]]:
        for m in examples:
            prompt, completion = render_chat(m, template)
            yield {"text": prompt + completion, "prompt": prompt, "completion": completion}
    atomic_write_jsonl(text, rows())
    return {"openai_chat": chat, "text": text}


def check_openai_chat(path: Path) -> FormatCheck:
    """OpenAI's chat fine-tuning data checks: JSON per line, `messages` list, known roles,
    non-empty string content, an assistant message to learn from, size within limits.
    Token counts are approximate (4 characters a token) unless tiktoken is installed."""
    try:
        import tiktoken
        enc = tiktoken.get_encoding("o200k_base")
        count: Callable[[str], int] = lambda s: len(enc.encode(s))  # noqa: E731
        counter = "tiktoken:o200k_base"
    except Exception:
        count, counter = approx_tokens, "approx(len/4)"
    errors: dict[str, list[int]] = {}
    tokens: list[int] = []
    n = 0

    def bad(kind: str, line: int) -> None:
        errors.setdefault(kind, []).append(line)

    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            n += 1
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad("invalid_json", line_no)
                continue
            msgs = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(msgs, list) or not msgs:
                bad("missing_messages", line_no)
                continue
            total = 0
            for m in msgs:
                if not isinstance(m, dict) or m.get("role") not in ROLES:
                    bad("unrecognized_role", line_no)
                    break
                if set(m) - {"role", "content", "name", "weight"}:
                    bad("unrecognized_key", line_no)
                    break
                c = m.get("content")
                if not isinstance(c, str) or not c.strip():
                    bad("empty_or_missing_content", line_no)
                    break
                total += count(c) + 4
            else:
                if not any(m["role"] == "assistant" for m in msgs):
                    bad("no_assistant_message", line_no)
                elif total > OPENAI_MAX_EXAMPLE_TOKENS:
                    bad("too_many_tokens", line_no)
                tokens.append(total)
    if n < OPENAI_MIN_EXAMPLES:
        errors.setdefault("fewer_than_10_examples", []).append(0)
    return FormatCheck(file=str(path), examples=n, valid=not errors, errors={k: v[:10] for k, v in errors.items()},
                       error_counts={k: len(v) for k, v in errors.items()}, tokens_total=sum(tokens),
                       tokens_max_example=max(tokens, default=0), token_counter=counter)
