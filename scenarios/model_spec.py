"""Model specs as the CLI and configs write them: `local:gemma3-270m[+lora:DIR]`, `openai:MODEL`,
`gemini:MODEL`, `anthropic:MODEL` → a `BackendConfig`. A LoRA adapter's prompt card sets the chat template it was
tuned with, so the model is prompted the way it was trained."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from culturepark.engine.chat_templates import read_prompt_card
from culturepark.engine.errors import InputError
from culturepark.scenarios.schema import BackendConfig, EmbeddedBackendConfig, backend_config


def parse_model_spec(spec: str, base_url: str | None = None, api_key_env: str | None = None) -> BackendConfig:
    """`local:gemma3-270m`, `local:gemma3-270m+lora:DIR`, `openai:MODEL`, `gemini:MODEL`, `anthropic:MODEL`.

    `--base-url` points `openai:` at any OpenAI-compatible server (vLLM, Ollama, the sim server), and
    `anthropic:` at a server speaking Anthropic's Messages API (the sim server does); the key of
    `anthropic:` is read from ANTHROPIC_API_KEY.
    """
    provider, sep, rest = spec.partition(":")
    if not sep or not rest or provider not in ("local", "openai", "gemini", "anthropic"):
        raise InputError(f"model spec {spec!r}: expected local:gemma3-270m[+lora:DIR], openai:MODEL, gemini:MODEL "
                         "or anthropic:MODEL")
    if provider == "local":
        model, plus, adapter = rest.partition("+lora:")
        if plus and not adapter:
            raise InputError(f"model spec {spec!r}: +lora: needs an adapter directory")
        if adapter and not Path(adapter).is_dir():
            raise InputError(f"model spec {spec!r}: adapter directory {adapter} does not exist")
        card = read_prompt_card(adapter or None)
        return EmbeddedBackendConfig(provider="local", model=model, adapter=adapter or None,
                                     template=card.template if card else None)
    data: dict[str, Any] = {"provider": provider, "model": rest}
    if base_url:
        data["base_url"] = base_url
    if api_key_env:
        data["api_key_env"] = api_key_env
    return backend_config(data)


def to_model_spec(cfg: BackendConfig) -> str:
    """The spec that `parse_model_spec` turns back into this backend (with its base URL and key
    variable passed beside it): how a stage names the model a run used."""
    if isinstance(cfg, EmbeddedBackendConfig):
        return f"local:{cfg.model}" + (f"+lora:{cfg.adapter}" if cfg.adapter else "")
    return f"{cfg.provider}:{cfg.model}"
