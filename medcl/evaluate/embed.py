"""Embeddings and predictions of every manifest row, with 2-D projections for the dashboard.

``embeddings.parquet`` columns: ``image_id, patient_key, split, label, labelled, prediction,
confidence, correct, prob_<class>…, embedding`` (list of floats), ``pca_x, pca_y`` and, when
computed, ``tsne_x, tsne_y`` (scikit-learn t-SNE on the first 50 principal components, run when
there are at most ``tsne_max`` rows) and ``umap_x, umap_y`` (when umap-learn is installed). No
header value from the source images is written: keys are pseudonyms. A model trained on 3-D patches
embeds each volume as the mean of its grid patches' features and predicts with its head on that
mean (:class:`~medcl.evaluate.classifier.Classifier`).

A multi-label model's ``prob_<finding>`` are its per-finding sigmoids, ``prediction`` the label
text of the findings called present at their validation thresholds
(:func:`~medcl.evaluate.classifier.decision_thresholds`; ``-`` for none), ``confidence`` the mean
over the findings of ``max(p_k, 1 − p_k)``, and ``correct`` whether the called set equals the
label (``None`` for an unlabelled row or one with an unknown finding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from medcl.data.findings import UNKNOWN, encode_matrix
from medcl.data.manifest import Manifest
from medcl.evaluate.classifier import Classifier, decision_thresholds
from medcl.io import atomic_path


def project_2d(emb: np.ndarray, seed: int = 0, tsne_max: int = 5000) -> dict[str, np.ndarray]:
    """PCA (always), t-SNE (≤ ``tsne_max`` rows) and UMAP (if installed) coordinates."""
    out: dict[str, np.ndarray] = {}
    n = emb.shape[0]
    if n == 0:
        return out
    k = min(50, emb.shape[1], n)
    pcs = PCA(n_components=k, random_state=seed).fit_transform(emb) if n > 1 else np.zeros((1, 2))
    pcs = np.pad(pcs, ((0, 0), (0, max(0, 2 - pcs.shape[1]))))
    out["pca"] = pcs[:, :2]
    if 5 <= n <= tsne_max:
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        out["tsne"] = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed
        ).fit_transform(pcs)
    try:
        import umap  # type: ignore[import-not-found]

        if n >= 10:
            out["umap"] = umap.UMAP(random_state=seed).fit_transform(pcs)
    except ImportError:
        pass
    return out


def embed_manifest(
    clf: Classifier, manifest: Manifest, seed: int = 0, tsne_max: int = 5000
) -> pd.DataFrame:
    """Embed and predict every row of ``manifest``; returns the embeddings table."""
    ds = clf.images(manifest)  # a patch model: stored volumes, grid-averaged features
    feats = clf.embed(ds.images)
    with torch.no_grad():
        logits = clf.head(feats.to(next(clf.parameters()).device)).float().cpu()
    probs = clf.probabilities(logits).numpy()
    classes = list(clf.description.classes)
    if clf.multilabel:
        called = (probs >= decision_thresholds(clf.description)[None, :]).astype(np.int64)
        prediction = encode_matrix(called, classes)
        confidence = np.maximum(probs, 1.0 - probs).mean(1)
    else:
        prediction = [classes[i] for i in probs.argmax(1)]
        confidence = probs.max(1)
    df = manifest.df
    table = pd.DataFrame(
        {
            "image_id": df["image_id"].to_numpy(),
            "patient_key": df["patient_key"].to_numpy(),
            "split": df["split"].to_numpy(),
            "label": df["label"].to_numpy(),
            "labelled": (df["label"] != "").to_numpy(),
            "prediction": prediction,
            "confidence": confidence,
        }
    )
    judged = table["labelled"]
    if clf.multilabel:  # a label with an unknown finding cannot say whether the call is right
        judged = judged & ~table["label"].str.contains(UNKNOWN, regex=False)
    table["correct"] = np.where(judged, table["label"] == table["prediction"], None)
    for i, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, i]
    emb = feats.numpy().astype(np.float32)
    table["embedding"] = list(emb)
    for name, xy in project_2d(emb, seed, tsne_max).items():
        table[f"{name}_x"] = xy[:, 0]
        table[f"{name}_y"] = xy[:, 1]
    return table


def write_embeddings(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the table as Parquet (embedding vectors as float lists)."""
    p = Path(path)
    t = table.copy()
    t["embedding"] = [np.asarray(v, dtype=np.float32).tolist() for v in t["embedding"]]
    t["correct"] = t["correct"].astype("boolean")
    with atomic_path(p) as tmp:
        t.to_parquet(tmp, index=False)
    return p
