"""``medcl predict``: a model folder applied to new images from any source ingest accepts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from medcl.data.ingest import ingest
from medcl.data.manifest import read_manifest
from medcl.errors import MedclError
from medcl.evaluate.evaluation import predict_rows
from medcl.evaluate.model import load_model
from medcl.io import atomic_path


def predict_source(
    model_dir: str | Path, source: str | Path, out: str | Path, workers: int = 1
) -> int:
    """Ingest ``source`` to a temporary manifest, predict, write ``out`` (CSV); returns row count.

    Columns: ``path`` (the source file), ``image_id`` (pseudonym; frames and slices of one file have
    distinct ids), ``prediction``, ``confidence`` and ``prob_<class>``. Files that could not be read
    are listed in ``<out stem>.rejects.csv``.
    """
    clf = load_model(model_dir)
    src = Path(source)
    if not src.exists():
        raise MedclError(f"{src}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="medcl-predict-") as tmp:
        manifest_path = Path(tmp) / "predict.csv"
        report = ingest(
            src,
            manifest_path,
            dims=clf.meta["spatial_dims"],
            workers=workers,
            size=clf.meta["image_size"],
            progress=True,
            secret=Path(tmp) / "secret.key",  # throw-away pseudonyms; no project secret created
        )
        m = read_manifest(manifest_path)
        m.df["label"] = ""
        m.classes = list(clf.meta["classes"])
        out_path = Path(out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        rejects = pd.read_csv(report.rejects) if report.rejected else None
        if rejects is not None:
            rejects.to_csv(out_path.with_name(out_path.stem + ".rejects.csv"), index=False)
        if len(m) == 0:
            pd.DataFrame(columns=["path", "image_id", "prediction", "confidence"]).to_csv(
                out_path, index=False
            )
            return 0
        proba, _ = predict_rows(clf, m)
    classes = list(clf.meta["classes"])
    table = pd.DataFrame(
        {
            "path": m.df["path"].to_numpy(),
            "image_id": m.df["image_id"].to_numpy(),
            "prediction": [classes[i] for i in proba.argmax(1)],
            "confidence": proba.max(1),
        }
    )
    for i, c in enumerate(classes):
        table[f"prob_{c}"] = proba[:, i]
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False)
    return len(table)
