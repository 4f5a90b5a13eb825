"""``medcl predict``: a model folder applied to new images from any source ingest accepts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from medcl.data.ingest import ingest
from medcl.data.manifest import read_manifest
from medcl.data.pseudonym import PathMap, secret_path
from medcl.errors import MedclError
from medcl.evaluate.evaluation import predict_rows
from medcl.evaluate.model import load_model
from medcl.io import atomic_path


def predict_source(
    model_dir: str | Path,
    source: str | Path,
    out: str | Path,
    workers: int = 1,
    with_source_paths: bool = False,
) -> int:
    """Ingest ``source`` to a temporary manifest, predict, write ``out`` (CSV); returns row count.

    Columns: ``image_id`` (pseudonym; frames and slices of one file have distinct ids),
    ``source_id`` (pseudonymous source reference, see :mod:`medcl.data.ingest`), ``prediction``,
    ``confidence`` and ``prob_<class>``; with ``with_source_paths`` also ``path``, the real source
    file (from the private path map) — for the user's own systems, not for sharing. Files that
    could not be read are listed in ``<out stem>.rejects.csv``. The project secret (and its path
    map) is used when it exists, so that ``source_id`` matches the project's manifests; otherwise
    a throw-away secret (none is created).
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
            dims=clf.meta["spatial_dims"],
            workers=workers,
            size=clf.meta["image_size"],
            progress=True,
            secret=secret,
        )
        real = PathMap.beside(secret).load() if with_source_paths else {}
        m = read_manifest(manifest_path)
        m.df["label"] = ""
        m.classes = list(clf.meta["classes"])
        out_path = Path(out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        rejects = pd.read_csv(report.rejects) if report.rejected else None
        if rejects is not None:
            if with_source_paths:
                rejects["path"] = rejects["source_id"].map(lambda s: real.get(s, ""))
            rejects.to_csv(out_path.with_name(out_path.stem + ".rejects.csv"), index=False)
        if len(m) == 0:
            cols = ["image_id", "source_id", "prediction", "confidence"]
            cols += ["path"] if with_source_paths else []
            pd.DataFrame(columns=cols).to_csv(out_path, index=False)
            return 0
        proba, _ = predict_rows(clf, m)
    classes = list(clf.meta["classes"])
    table = pd.DataFrame(
        {
            "image_id": m.df["image_id"].to_numpy(),
            "source_id": m.df["source_id"].to_numpy(),
            "prediction": [classes[i] for i in proba.argmax(1)],
            "confidence": proba.max(1),
        }
    )
    for i, c in enumerate(classes):
        table[f"prob_{c}"] = proba[:, i]
    if with_source_paths:
        table["path"] = [real.get(s, "") for s in m.df["source_id"]]
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False)
    return len(table)
