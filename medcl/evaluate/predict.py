"""``medcl predict``: a model folder applied to new images from any source ingest accepts."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medcl.data.findings import encode_matrix
from medcl.data.ingest import ingest
from medcl.data.manifest import read_manifest
from medcl.data.pseudonym import PathMap, secret_path
from medcl.errors import MedclError
from medcl.evaluate import ood
from medcl.evaluate.classifier import decision_thresholds
from medcl.evaluate.evaluation import predict_rows
from medcl.evaluate.metrics import BINARY_POSITIVE
from medcl.evaluate.model import load_model
from medcl.io import atomic_path
from medcl.models.description import ModelDescription


def ingest_size(description: ModelDescription) -> int | None:
    """The in-plane size inputs are cached at: the model's ``image_size`` (whole images resized
    to it), or for a patch model the stored in-plane size of its training volumes (``None``: the
    source size), so that a patch covers as many millimetres as in training."""
    if description.volume is None:
        return description.image_size
    return description.volume.in_plane_size


def prediction_columns(description: ModelDescription, proba: np.ndarray) -> dict[str, Any]:
    """The prediction columns of ``medcl predict`` for probabilities ``proba`` ``(N, C)``.

    - single-label: ``prediction`` (the arg max class), ``confidence`` (its probability),
      ``prob_<class>``; a binary model also ``call``, the class called at its operating point
      (positive when ``p ≥`` the threshold chosen on validation, ``description.operating_point``;
      0.5 for a model saved without one);
    - multi-label: ``prediction`` (the findings called present, as a label text: ``a|b``, ``-``
      for none), then per finding ``prob_<finding>`` (its sigmoid) and ``call_<finding>`` (1 when
      ``p_k ≥ t_k``, the finding's validation threshold,
      :func:`~medcl.evaluate.classifier.decision_thresholds`; else 0).
    """
    classes = list(description.classes)
    if description.multilabel:
        called = (proba >= decision_thresholds(description)[None, :]).astype(np.int64)
        cols: dict[str, Any] = {"prediction": encode_matrix(called, classes)}
        cols.update({f"prob_{c}": proba[:, i] for i, c in enumerate(classes)})
        cols.update({f"call_{c}": called[:, i] for i, c in enumerate(classes)})
        return cols
    cols = {"prediction": [classes[i] for i in proba.argmax(1)], "confidence": proba.max(1)}
    cols.update({f"prob_{c}": proba[:, i] for i, c in enumerate(classes)})
    if len(classes) == 2:
        op = description.operating_point
        t = 0.5 if op is None else float(op["threshold"])
        cols["call"] = np.where(proba[:, BINARY_POSITIVE] >= t, classes[1], classes[0])
    return cols


def predict_source(
    model_dir: str | Path,
    source: str | Path,
    out: str | Path,
    workers: int = 1,
    strict: bool = False,
    log: Callable[[str], None] | None = None,
    with_source_paths: bool = False,
) -> int:
    """Ingest ``source`` to a temporary manifest, predict, write ``out`` (CSV); returns row count.

    Columns: ``image_id`` (pseudonym; frames and slices of one file have distinct ids),
    ``source_id`` (pseudonymous source reference, see :mod:`medcl.data.ingest`), then the
    predictions of :func:`prediction_columns` (``prediction``, ``confidence``, ``prob_<class>``,
    a binary model's ``call``; a multi-label model's ``prob_<finding>`` and ``call_<finding>``);
    with ``with_source_paths`` also ``path``, the real source
    file (from the private path map) — for the user's own systems, not for sharing. Files that
    could not be read are listed in ``<out stem>.rejects.csv``. The project secret (and its path
    map) is used when it exists, so that ``source_id`` matches the project's manifests; otherwise
    a throw-away secret (none is created).

    Every row is compared with the model's training distribution (:mod:`medcl.evaluate.ood`):
    ``in_distribution`` and ``reason`` (empty, or a ``; ``-joined list) are added and ``log``
    gets a one-line count of the flagged rows by reason. With ``strict`` the flagged rows are not
    scored: they go to the rejects file, the others to ``out``.

    Raises:
        MedclError: With ``strict``, when every row was flagged (``out`` then holds no rows).
    """
    clf = load_model(model_dir)
    src = Path(source)
    if not src.exists():
        raise MedclError(f"{src}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="medcl-predict-") as tmp:
        manifest_path = Path(tmp) / "predict.csv"
        # the project's pseudonyms when it has a secret; else throw-away ones (none created)
        secret = None if secret_path().is_file() else Path(tmp) / "secret.key"
        report = ingest(
            src,
            manifest_path,
            dims=clf.description.spatial_dims,
            workers=workers,
            size=ingest_size(clf.description),
            progress=True,
            secret=secret,
        )
        real = PathMap.beside(secret).load() if with_source_paths else {}
        m = read_manifest(manifest_path)
        m.df["label"] = ""
        m.classes = list(clf.description.classes)
        out_path = Path(out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        rejects = pd.read_csv(report.rejects) if report.rejected else None
        if rejects is not None:
            if with_source_paths:
                rejects["path"] = rejects["source_id"].map(lambda s: real.get(s, ""))
            with atomic_path(out_path.with_name(out_path.stem + ".rejects.csv")) as tmp:
                rejects.to_csv(tmp, index=False)
        if len(m) == 0:
            cols = ["image_id", "source_id", "prediction", "confidence", "in_distribution"]
            cols += ["reason", *(["path"] if with_source_paths else [])]
            with atomic_path(out_path) as tmp:
                pd.DataFrame(columns=cols).to_csv(tmp, index=False)
            return 0
        proba, ds = predict_rows(clf, m)
        flags = ood.check_inputs(clf, m.df, ds.images, PathMap.beside(secret).load())
    table = pd.DataFrame(
        {
            "image_id": m.df["image_id"].to_numpy(),
            "source_id": m.df["source_id"].to_numpy(),
            **prediction_columns(clf.description, proba),
        }
    )
    table["in_distribution"] = flags.in_distribution
    table["reason"] = flags.reason
    if with_source_paths:
        table["path"] = [real.get(s, "") for s in m.df["source_id"]]
    if log is not None:
        log(flags.summary())
    if strict:
        table = ood.refuse_flagged(table, out_path.with_name(out_path.stem + ".rejects.csv"))
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False)
    if strict and len(table) == 0:
        raise MedclError(
            f"--strict: all {len(flags.reason)} inputs were flagged out of distribution; none "
            f"scored (reasons in {out_path.with_name(out_path.stem + '.rejects.csv')})"
        )
    return len(table)
