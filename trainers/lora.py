"""`culturepark train lora`: LoRA (or QLoRA on CUDA) on chat SFT data, in one plain loop.

Read top to bottom: data → model → adapter → optimiser → loop → save. Defaults: the paper's
adapter (r 64, alpha 16, dropout 0.1, lr 2e-4) with a cosine schedule after a short linear
warm-up; `--preset paper` sets every value of the original QLoRA run instead (`PRESETS`: its
constant schedule without warm-up, the loss on the whole text, batches grouped by length). A
tokenizer without a pad token pads with EOS on every path, as the original set it. By default
the loss covers the assistant's tokens only (prompt tokens are masked with -100), rendered with the
same chat template as `text.jsonl` (`engine.chat_templates.render_chat`); the adapter directory
gets a prompt card naming that template and the data's prompt style, so the local backend and
`eval` prompt the tuned model the way it was trained.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from culturepark.engine.chat_templates import PromptCard, Template, render_chat, write_prompt_card
from culturepark.engine.errors import InputError
from culturepark.scenarios.loader import format_validation_error
from culturepark.trainers.summaries import LoraSummary

if TYPE_CHECKING:
    from transformers import PreTrainedModel

EMBEDDED = "local:gemma3-270m"


class LoraSettings(BaseModel):
    """Every setting of a LoRA run; `train lora`'s flags are derived from these fields (their names,
    bounds, choices and help), so a default is stated here only."""

    model_config = ConfigDict(extra="forbid")
    base: str = Field(EMBEDDED, description="the base: the embedded model or a local HF directory")
    epochs: float = Field(3.0, gt=0, description="passes over the data")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    r: int = Field(64, ge=1, description="the adapter's rank")
    alpha: int = Field(16, ge=1, description="the adapter's scaling alpha")
    dropout: float = Field(0.1, ge=0, description="the adapter's dropout")
    batch_size: int = Field(4, ge=1, description="examples per step")
    max_length: int = Field(512, ge=1)  # tokens per example (longer ones are cut)
    warmup_ratio: float = Field(0.03, ge=0, description="share of the steps spent warming up linearly")
    template: Literal["auto"] | Template = Field(
        "auto", description="auto (default): gemma for the embedded model, else the base tokenizer's own template")
    qlora: bool = Field(False, description="4-bit nf4 base + paged AdamW (CUDA only)")
    seed: int = Field(0, description="random seed")
    merge: bool = Field(False, description="also save the merged model in OUT/merged")
    device: str = Field("auto", description="auto, cpu, cuda, mps")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="the learning rate after warm-up")
    loss_on: Literal["answer", "all"] = Field(
        "answer", description="answer: the assistant's tokens only; all: the whole text (the original's SFTTrainer)")
    group_by_length: bool = Field(
        False, description="batches of similar length (transformers' grouping: sorted within shuffled groups)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")  # 0.01: torch's
    compute_dtype: Literal["bf16", "fp16"] = Field(
        "bf16", description="CUDA only: QLoRA compute and autocast; CPU trains in fp32")
    double_quant: bool = Field(True, description="QLoRA: quantise the quantisation constants too")
    target_modules: str | list[str] = Field(
        "all-linear", description="'all-linear' (default), 'default' (peft's own choice), or comma-separated names")
    device_map: Literal["single", "auto"] = Field(
        "single", description="'auto' spreads a QLoRA base over GPUs")
    prompt_style: str | None = Field(
        None, description="recorded in the adapter's prompt card; default: the SFT format.json")
    preset: str | None = None

    @field_validator("target_modules", mode="before")
    @classmethod
    def _names(cls, v: object) -> object:
        """`q_proj,v_proj` (a flag's text) is a list of module names; the two keywords stay words."""
        if isinstance(v, str) and v not in ("all-linear", "default"):
            return [t.strip() for t in v.split(",") if t.strip()]
        return v


# The original QLoRA run (Llama-2 70B, CulturePark's llama_finetune.py): a constant LR with no
# warm-up (it passed warmup_ratio=0.03, but transformers' "constant" schedule ignores it), clip 0.3,
# weight decay 0.001, 6 epochs, batch 4, fp16 compute, nf4 without double quantisation, peft's
# default target modules, device_map="auto", group_by_length, and SFTTrainer's loss on the whole
# text. Its `### System … ### Answer:` text is `--template paper`, left to the user: an adapter
# trained on it has no end-of-answer marker to stop at.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"lr": 2e-4, "r": 64, "alpha": 16, "dropout": 0.1, "schedule": "constant", "warmup_ratio": 0.0,
              "max_grad_norm": 0.3, "weight_decay": 0.001, "epochs": 6.0, "batch_size": 4,
              "compute_dtype": "fp16", "double_quant": False, "target_modules": "default", "device_map": "auto",
              "loss_on": "all", "group_by_length": True},
}


def resolve_settings(preset: str | None, **explicit: Any) -> LoraSettings:
    """Defaults, then the preset's values, then every value given explicitly (None: not given)."""
    if preset is not None and preset not in PRESETS:
        raise InputError(f"train lora --preset {preset!r}: known presets: {', '.join(PRESETS)}")
    values = {**(PRESETS[preset] if preset else {}), **{k: v for k, v in explicit.items() if v is not None}}
    try:
        return LoraSettings.model_validate({**values, "preset": preset})
    except ValidationError as exc:
        raise InputError(format_validation_error("train lora", exc)) from exc


def load_examples(path: Path) -> list[list[dict[str, str]]]:
    if not path.exists():
        raise InputError(f"train lora: {path} not found")
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            msgs = orjson.loads(line)["messages"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"train lora: {path}:{n}: expected {{\"messages\": [...]}} (openai_chat.jsonl)") from exc
        if not msgs or msgs[-1].get("role") != "assistant":
            raise InputError(f"train lora: {path}:{n}: the last message must be the assistant's")
        out.append(msgs)
    if not out:
        raise InputError(f"train lora: {path} has no examples")
    return out


def resolve_template(settings: LoraSettings, tokenizer: Any) -> Template:
    """`auto`: Gemma's template for the embedded model; a base with a chat template of its own
    trains on that one; otherwise Gemma's."""
    if settings.template != "auto":
        return settings.template
    if settings.base != EMBEDDED and getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    return "gemma"


def encode(examples: list[list[dict[str, str]]], tokenizer: Any, template: Template, max_length: int,
           loss_on: Literal["answer", "all"] = "answer") -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per example; labels are -100 on the prompt so only answers are learned,
    unless `loss_on` is "all" (the whole text, as the original's SFTTrainer learned it)."""
    rows = []
    for msgs in examples:
        prompt, completion = render_chat(msgs, template, tokenizer)
        # a rendered BOS (Llama-2's <s>, most tokenizers' templates) is left to the tokenizer, as in generation
        p = tokenizer(prompt.removeprefix(tokenizer.bos_token or "\0"), add_special_tokens=True)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        ids = (p + c)[:max_length]
        labels = ((p if loss_on == "all" else [-100] * len(p)) + c)[:max_length]
        if any(x != -100 for x in labels):
            rows.append((ids, labels))
    return rows


def pad_as_eos(tokenizer: Any) -> bool:
    """Pad with EOS where the tokenizer has no pad token (Llama-2), as the original did; padded
    positions are masked from the loss. True when it was set here."""
    if tokenizer.pad_token is not None:
        return False
    tokenizer.pad_token = tokenizer.eos_token
    return True


def _base_path(settings: LoraSettings, say: Callable[[str], None]) -> Path:
    from culturepark.engine.backends.local.model import embedded_cache_dir
    return embedded_cache_dir(say) if settings.base == EMBEDDED else Path(settings.base)


def _spread(settings: LoraSettings) -> bool:
    """device_map="auto" over several GPUs, as the original loaded its 70B base; one device otherwise."""
    import torch
    return settings.device_map == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1


def _base_model(settings: LoraSettings, say: Callable[[str], None]) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.qlora:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        path = _base_path(settings, say)
        quant = BitsAndBytesConfig(load_in_4bit=True,
                                   bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=settings.double_quant,
                                   bnb_4bit_compute_dtype=_torch_dtype(settings.compute_dtype))
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant,
                                                     device_map="auto" if _spread(settings) else {"": 0})
        model = prepare_model_for_kbit_training(model)
        tok = AutoTokenizer.from_pretrained(path)
        return model, tok, "cuda"
    from culturepark.engine.backends.local.model import load_model
    if _spread(settings):
        path = _base_path(settings, say)
        model = AutoModelForCausalLM.from_pretrained(path, device_map="auto", dtype=torch.float32)
        say(f"base spread over {torch.cuda.device_count()} GPUs (device_map=auto)")
        return model, AutoTokenizer.from_pretrained(path), "cuda"
    spec = "gemma3-270m" if settings.base == EMBEDDED else settings.base
    model, tok, device = load_model(spec, settings.device, say=say, eval_mode=False)
    if device.startswith("cuda"):
        model = model.float() if model.dtype == torch.float16 else model  # fp16 weights train poorly
    return model, tok, device


def _torch_dtype(name: str) -> Any:
    import torch
    return torch.float16 if name == "fp16" else torch.bfloat16


def _prompt_style(sft_file: Path, settings: LoraSettings) -> str | None:
    """The data's prompt style: given, or as `refine` recorded it in the SFT directory."""
    if settings.prompt_style:
        return settings.prompt_style
    fmt = sft_file.parent / "format.json"
    return orjson.loads(fmt.read_bytes()).get("prompt_style") if fmt.exists() else None


def train_lora(sft_file: Path, out: Path, settings: LoraSettings,
               progress: Callable[[int, int, float], None] | None = None,
               say: Callable[[str], None] | None = None) -> LoraSummary:
    """Load the base, wrap it with LoRA, train for `total` steps, save the adapter and a summary."""
    say = say or (lambda _m: None)
    examples = load_examples(sft_file)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"train lora: --out {out} is not empty")
    import torch

    if settings.qlora and not torch.cuda.is_available():  # before peft and transformers load (~10 s): at once
        raise InputError("train lora --qlora: QLoRA loads the base in 4-bit with bitsandbytes, which needs a "
                         "CUDA GPU; none is available here. Drop --qlora to train a full-precision LoRA.")
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    model, tok, device = _base_model(settings, say)
    if pad_as_eos(tok):  # every path: the QLoRA and multi-GPU loaders leave a missing pad token unset
        say("the tokenizer has no pad token: padding with EOS")
    tok.padding_side = "right"
    template = resolve_template(settings, tok)
    rows = encode(examples, tok, template, settings.max_length, settings.loss_on)
    targets = None if settings.target_modules == "default" else settings.target_modules
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = settings.max_steps or max(1, math.ceil(settings.epochs * math.ceil(len(rows) / settings.batch_size)))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    losses = _train_steps(model, tok.pad_token_id, rows, device, settings, total, out / "metrics.jsonl", progress)
    elapsed = time.perf_counter() - t0
    model.save_pretrained(str(out))
    card = PromptCard(template=template, prompt_style=_prompt_style(sft_file, settings))
    write_prompt_card(out, card)
    summary = LoraSummary(
        base=settings.base, sft_file=str(sft_file), examples=len(rows), steps=total, trainable_params=trainable,
        first_loss=round(losses[0], 4), last_loss=round(sum(losses[-5:]) / len(losses[-5:]), 4),
        seconds_per_step=round(elapsed / total, 3), device=device, schedule=schedule_text(settings, total),
        target_modules=sorted(cast(LoraConfig, model.peft_config["default"]).target_modules or []),
        compute_dtype_used=settings.compute_dtype if device.startswith("cuda") else "fp32",
        prompt_card=card, settings=settings.model_dump(mode="json"),
        padded_with_eos=tok.pad_token_id == tok.eos_token_id)
    if device == "cpu":
        import psutil
        summary.peak_rss_mb = round(psutil.Process().memory_info().rss / 2**20, 1)
    else:
        summary.peak_gpu_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if settings.merge:
        # a transformers model again; peft types what it returns as a bare torch Module
        merged = cast("PreTrainedModel", model.merge_and_unload())
        merged.save_pretrained(out / "merged")
        tok.save_pretrained(out / "merged")
        summary.merged = str(out / "merged")
    (out / "train_summary.json").write_bytes(orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2))
    plot_loss(out / "metrics.jsonl", out / "loss.png")
    return summary


def _warmup_steps(settings: LoraSettings, total: int) -> int:
    """Steps of linear warm-up: at least one when a ratio is set, none when it is 0 (the paper preset)."""
    return max(1, int(settings.warmup_ratio * total)) if settings.warmup_ratio > 0 else 0


def schedule_text(settings: LoraSettings, total: int) -> str:
    """The schedule as run, for the summary: `constant` alone means no warm-up."""
    warmup = _warmup_steps(settings, total)
    return f"linear warm-up ({warmup} steps) then {settings.schedule}" if warmup else settings.schedule


def lr_schedule(settings: LoraSettings, total: int) -> Callable[[int], float]:
    """Linear warm-up over `warmup_ratio` of the steps (none at 0), then constant or cosine decay to zero."""
    warmup = _warmup_steps(settings, total)

    def lr_at(step: int) -> float:
        if step < warmup:
            return settings.lr * (step + 1) / warmup
        if settings.schedule == "constant":
            return settings.lr
        return settings.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return lr_at


def answer_loss(model: Any, ids: Any, mask: Any, labels: Any) -> Any:
    """Mean cross-entropy over the answer tokens, as `model(labels=…).loss` computes it, but with the
    output projection applied at the answer positions only: with a 262k-word vocabulary the projection
    is most of a step's cost, and the prompt's logits would be thrown away."""
    import torch

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(causal, "model", None), getattr(causal, "lm_head", None)
    if body is None or head is None:  # an architecture laid out otherwise: the library's own loss
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep]).float()
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def batch_order(lengths: list[int], batch_size: int, group: bool, rng: random.Random) -> list[int]:
    """One epoch's row order: shuffled; with `group`, as transformers' LengthGroupedSampler groups it
    (shuffled groups of 50 batches, each sorted longest first, so a batch holds similar lengths and
    pads little; the longest batch goes first, so running out of memory shows at once)."""
    order = rng.sample(range(len(lengths)), len(lengths))
    if not group:
        return order
    size = 50 * batch_size
    groups = [sorted(order[i:i + size], key=lambda j: -lengths[j]) for i in range(0, len(order), size)]
    longest = max(range(len(groups)), key=lambda g: lengths[groups[g][0]])
    groups[0], groups[longest] = groups[longest], groups[0]
    return [j for g in groups for j in g]


def _train_steps(model: Any, pad: int, rows: list[tuple[list[int], list[int]]], device: str,
                 settings: LoraSettings, total: int, metrics_path: Path,
                 progress: Callable[[int, int, float], None] | None) -> list[float]:
    """The loop, whole: sample a batch (epochs of shuffled rows), pad, step, clip, log the loss."""
    import torch

    if settings.qlora:
        import bitsandbytes as bnb
        opt = bnb.optim.PagedAdamW32bit(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                                weight_decay=settings.weight_decay)
    mixed = device.startswith("cuda") and not settings.qlora  # QLoRA computes in its own compute dtype
    autocast = torch.autocast("cuda", dtype=_torch_dtype(settings.compute_dtype), enabled=mixed)
    scaler = torch.amp.GradScaler("cuda", enabled=mixed and settings.compute_dtype == "fp16")
    lr_at = lr_schedule(settings, total)
    rng = random.Random(settings.seed)
    lengths = [len(ids) for ids, _ in rows]
    order: list[int] = []
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    with open(metrics_path, "wb") as metrics:
        for step in range(total):
            if len(order) < settings.batch_size:
                order += batch_order(lengths, settings.batch_size, settings.group_by_length, rng)
            batch = [rows[order.pop(0)] for _ in range(min(settings.batch_size, len(rows)))]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch], device=device)
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=device)
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            with autocast:
                loss = answer_loss(model, ids, mask, labels)  # on every labelled token (see `loss_on`)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            rec = {"step": step + 1, "loss": round(losses[-1], 5), "lr": lr_at(step),
                   "elapsed_s": round(time.perf_counter() - t0, 2)}
            metrics.write(orjson.dumps(rec) + b"\n")
            metrics.flush()
            if progress:
                progress(step + 1, total, losses[-1])
    return losses


def plot_loss(metrics_path: Path, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [orjson.loads(x) for x in metrics_path.read_bytes().splitlines()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], marker=".", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("LoRA training loss")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
