"""Collapse near-duplicate opinions to one representative per cluster."""
from __future__ import annotations

import numpy as np

from culturepark.trainers.refine.config import DedupConfig


def cluster(vecs: np.ndarray, config: DedupConfig, seed: int = 0) -> np.ndarray:
    """Cluster labels for L2-normalised vectors (see `DedupConfig` for the choice of method)."""
    n = len(vecs)
    if n <= 1:
        return np.zeros(n, dtype=int)
    if config.method == "kmeans":
        from sklearn.cluster import KMeans
        k = min(config.k, n)
        labels: np.ndarray = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(vecs)
        return labels
    from sklearn.cluster import AgglomerativeClustering
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=config.threshold,
                                    metric="cosine", linkage="complete")
    merged: np.ndarray = model.fit_predict(vecs)
    return merged


def representatives(vecs: np.ndarray, labels: np.ndarray, lengths: list[int] | None = None) -> dict[int, int]:
    """Per cluster, the index of the member nearest the cluster's (normalised) centroid; with
    `lengths` (keep: longest, the original's), the longest member (the first of equals)."""
    reps: dict[int, int] = {}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if lengths is not None:
            reps[int(label)] = int(max(members, key=lambda i: (lengths[i], -i)))
            continue
        centroid = vecs[members].mean(axis=0)
        reps[int(label)] = int(members[np.argmax(vecs[members] @ centroid)])
    return reps
