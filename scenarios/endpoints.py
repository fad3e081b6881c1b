"""From backend configs to engine objects: backends, endpoints (one limiter per distinct
endpoint), embedders. Every stage builds its endpoints here; `engine.stage` runs them.

It lives in `scenarios/` (not the face) because refine (trainers) and the evals (benchmarks)
build endpoints too, and they may not import the face."""
from __future__ import annotations

import os
import random
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path
from typing import cast
from urllib.parse import urlparse

from culturepark.engine.backends.base import Backend
from culturepark.engine.backends.cached import ResponseCache
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend
from culturepark.engine.embeddings import Embedder
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import InputError
from culturepark.engine.limiter import AdaptiveCeiling, RateLimiter
from culturepark.engine.pricing import Price, Rates, anthropic_price, lookup_price
from culturepark.engine.prompt_cache import CacheKeyShards
from culturepark.engine.retry import RetryPolicy
from culturepark.scenarios.schema import (
    BackendConfig,
    EmbeddedBackendConfig,
    Limits,
    RemoteBackendConfig,
    RetryConfig,
    TierRates,
)


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_for(cfg: BackendConfig) -> str | None:
    """Keys come from env vars only. A loopback server (vLLM, Ollama, sim) may need none."""
    if isinstance(cfg, EmbeddedBackendConfig) or cfg.api_key_env is None:
        return None
    key = os.environ.get(cfg.api_key_env, "").strip()
    if key:
        return key
    if cfg.base_url and is_loopback(cfg.base_url):
        return None
    raise InputError(f"backend {cfg.model} at {cfg.base_url}: environment variable "
                     f"{cfg.api_key_env} is missing or empty (export it, or set api_key_env)")


def _rates(cfg: TierRates | None) -> Rates | None:
    return None if cfg is None else Rates(cfg.input_per_1m, cfg.output_per_1m, cfg.cached_input_per_1m,
                                          cfg.cache_write_per_1m)


def retry_policy(cfg: RetryConfig) -> RetryPolicy:
    return RetryPolicy(cfg.max_attempts, cfg.base_delay_s, cfg.max_delay_s,
                       reask_temperature_step=cfg.reask_temperature_step,
                       reask_temperature_max=cfg.reask_temperature_max,
                       rate_limit_budget_s=cfg.rate_limit_budget_s)


def price_for(cfg: BackendConfig) -> Price | None:
    """The scenario's own price wins (for Anthropic with its cache rates filled in where left out);
    the embedded model is free; unknown models have no price."""
    if cfg.price:
        p = cfg.price
        price = Price(p.input_per_1m, p.output_per_1m, p.cached_input_per_1m, _rates(p.flex), _rates(p.batch),
                      p.cache_write_per_1m)
        return anthropic_price(price) if cfg.provider == "anthropic" else price
    if isinstance(cfg, EmbeddedBackendConfig):
        return Price(0.0, 0.0)
    return lookup_price(cfg.model)


def make_backend(cfg: BackendConfig) -> Backend:
    price = price_for(cfg)
    if isinstance(cfg, EmbeddedBackendConfig):
        from culturepark.engine.backends.local.backend import LocalBackend
        return LocalBackend(cfg.model, device=cfg.device, max_batch=cfg.max_batch,
                            batch_wait_ms=cfg.batch_wait_ms, price=price, adapter=cfg.adapter,
                            template=cfg.template, weights=cfg.weights)
    assert cfg.base_url is not None
    if cfg.provider == "anthropic":
        from culturepark.engine.backends.anthropic_http import AnthropicHTTPBackend
        return AnthropicHTTPBackend(cfg.base_url, cfg.model, api_key=api_key_for(cfg), timeout_s=cfg.timeout_s,
                                    max_connections=cfg.max_connections, price=price)
    return OpenAIHTTPBackend(cfg.base_url, cfg.model, api_key=api_key_for(cfg), api=cfg.api,
                             timeout_s=cfg.timeout_s, max_connections=cfg.max_connections,
                             price=price, name=cfg.provider, service_tier=cfg.service_tier,
                             flex_timeout_s=cfg.flex_timeout_s, send_cache_key=cfg.prompt_cache.key)


def batch_backend(cfg: BackendConfig, run_dir: Path, role: str) -> Backend:
    """`run --batch-api`: the role's backend sent through its provider's batch API (OpenAI-compatible
    /v1/files + /v1/batches, or Anthropic's Message Batches), with its ledger of paid batches in the
    run directory (one per distinct endpoint)."""
    from culturepark.engine.backends.batch_api import BatchBackend, BatchLimits, ledger_name

    if isinstance(cfg, EmbeddedBackendConfig):
        raise InputError(f"--batch-api needs an OpenAI-compatible server with /v1/files and /v1/batches, or "
                         f"Anthropic's Message Batches; the {role} uses the embedded model")
    http = make_backend(cfg)
    b = cfg.batch
    limits = BatchLimits(b.max_requests, int(b.max_mb * 1024 * 1024), b.gather_s, b.poll_s)
    ledger = run_dir / ledger_name(role)
    if cfg.provider == "anthropic":
        from culturepark.engine.backends.anthropic_batch import AnthropicBatches
        from culturepark.engine.backends.anthropic_http import AnthropicHTTPBackend

        assert isinstance(http, AnthropicHTTPBackend)
        return BatchBackend(AnthropicBatches(http, limits.poll_s), ledger, limits)
    from culturepark.engine.backends.openai_batch import OpenAIBatches

    assert isinstance(http, OpenAIHTTPBackend)
    return BatchBackend(OpenAIBatches(http), ledger, limits)


def make_endpoints(configs: dict[str, BackendConfig], limits: Limits, retry: RetryConfig,
                   seed: int = 0, cache_from: list[Path] | None = None,
                   batch_dir: Path | None = None, say: Callable[[str], None] | None = None,
                   concurrency: int | None = None) -> dict[str, Endpoint]:
    """Roles with identical backend settings share one endpoint, so they share its budget.
    With `batch_dir` (`run --batch-api`) requests go through the provider's Batch API, which
    queues them under its own limits: the scenario's RPM/TPM do not apply. With `concurrency`,
    remote endpoints to the same provider and model share an adaptive ceiling on requests in
    flight (`AdaptiveCeiling`), bounded by it."""
    policy = retry_policy(retry)
    cache = ResponseCache.from_runs(cache_from) if cache_from else None
    shared: dict[str, Endpoint] = {}
    ceilings: dict[tuple[str, str | None, str], AdaptiveCeiling] = {}
    out: dict[str, Endpoint] = {}
    for role, cfg in configs.items():
        key = cfg.model_dump_json()
        if key not in shared:
            if batch_dir is not None:
                backend, limiter = batch_backend(cfg, batch_dir, role), RateLimiter()
            else:
                backend, limiter = make_backend(cfg), RateLimiter(limits.rpm, limits.tpm, limits.burst_s, cfg.settle)
            remote = cfg if isinstance(cfg, RemoteBackendConfig) else None
            shards = CacheKeyShards(remote.prompt_cache.key_rpm) if remote and remote.prompt_cache.key else None
            ceiling = None
            if concurrency is not None and batch_dir is None and remote is not None:
                ceiling = ceilings.setdefault((remote.provider, remote.base_url, remote.model),
                                              AdaptiveCeiling(concurrency))
            shared[key] = Endpoint(backend, limiter, policy, cache, rng=random.Random(f"{seed}:{role}"),
                                   tier_fallback_after=remote.flex_fallback_after if remote else None,
                                   cache_keys=shards, say=say, ceiling=ceiling)
        out[role] = shared[key]
    return out


def make_embedder(kind: str, base_url: str | None = None, model: str = "text-embedding-3-small",
                  api_key_env: str | None = "OPENAI_API_KEY", dimensions: int | None = None,
                  limits: Limits | None = None, retry: RetryConfig | None = None,
                  cache_path: Path | None = None, batch_size: int = 256) -> Embedder:
    """`local` (packaged MiniLM) or an OpenAI-compatible `/v1/embeddings`, keyed like any backend
    and sent through its own endpoint (limits, retries); `cache_path` keeps paid-for vectors."""
    from culturepark.engine.embeddings import EmbeddingCache, HTTPEmbeddings, LocalMiniLM, RemoteEmbedder

    if kind == "local":
        return LocalMiniLM()
    if not base_url:
        raise InputError("embeddings 'openai' need a base URL")
    key = api_key_for(RemoteBackendConfig(provider="openai", model=model, base_url=base_url, api_key_env=api_key_env))
    client = HTTPEmbeddings(base_url, model, api_key=key, dimensions=dimensions)
    limits, retry = limits or Limits(), retry or RetryConfig()
    # HTTPEmbeddings is no chat Backend (no `complete`): the Endpoint only paces and retries its calls
    endpoint = Endpoint(cast(Backend, client), RateLimiter(limits.rpm, limits.tpm, limits.burst_s, "admission"),
                        retry_policy(retry))
    cache = EmbeddingCache(cache_path, f"{base_url}|{model}|{dimensions}") if cache_path else None
    return RemoteEmbedder(endpoint, batch_size=batch_size, cache=cache)
