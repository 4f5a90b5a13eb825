"""A generated cohort's folder: argument checks, the folder itself, patients in parallel, labels.

Shared by every cohort ``medcl synth`` writes (the phantom, :mod:`medcl.data.synth.cohort`, and
the brain cohort, :mod:`medcl.data.synth.brain`): each writes ``P<patient>/…`` folders, a
``labels.csv`` with one ``path,label`` row per file and a ``cohort.json`` whose ``generator``
starts with ``medcl.synth``. A folder holding such a cohort may be replaced by a new one; any other
non-empty folder is refused.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from medcl.data.synth.spec import COHORT_FILE, LABELS_FILE
from medcl.errors import MedclError

MIN_SIZE = 16
"""The smallest image size (rows and columns) a cohort may have."""

MAX_SIZE = 1024
"""The largest image size (rows and columns) a cohort may have."""

GENERATOR_PREFIX = "medcl.synth"
"""Every medcl cohort's ``cohort.json`` names a generator starting with this."""

_PATIENT_DIR = re.compile(r"^P\d{4,}$")

#: One patient's result: label index (multi-label: its findings, 1/0 each), images, and the
#: ``labels.csv`` row of each file written (``(relative path, label)``, or the path and a 0/1
#: text per finding).
PatientResult = tuple[int | tuple[int, ...], int, list[tuple[str, ...]]]


def is_int(value: object) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_common_args(out_dir: Path, patients: int, seed: int, size: int) -> None:
    """The arguments every cohort takes: ``patients``, ``seed``, ``size`` and the folder.

    Raises:
        MedclError: One of them is out of range (the message names it).
    """
    if not is_int(patients) or patients < 1:
        raise MedclError(f"synth: patients must be an integer >= 1, got {patients!r}")
    if not is_int(seed) or seed < 0:
        raise MedclError(f"synth: seed must be an integer >= 0, got {seed!r}")
    if not is_int(size) or size < MIN_SIZE:
        raise MedclError(f"synth: size must be an integer >= {MIN_SIZE}, got {size!r}")
    if size > MAX_SIZE:
        raise MedclError(f"synth: size must be <= {MAX_SIZE}, got {size!r}")


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output path that is a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise MedclError(f"synth: {out_dir} exists and is not a folder")


def read_record(out_dir: Path) -> dict[str, Any] | None:
    """The ``cohort.json`` of a medcl cohort in ``out_dir``, or None when there is none."""
    try:
        record = json.loads((out_dir / COHORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    generator = record.get("generator") if isinstance(record, dict) else None
    if not isinstance(generator, str) or not generator.startswith(GENERATOR_PREFIX):
        return None
    return record


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir``, or clear a medcl cohort in it; refuse any other non-empty folder."""
    if not out_dir.exists():
        out_dir.mkdir(parents=True)
        return
    entries = list(out_dir.iterdir())
    if not entries:
        return
    if read_record(out_dir) is None:
        raise MedclError(
            f"synth: {out_dir} is not empty and holds no {COHORT_FILE} from "
            "'medcl synth'; choose an empty or new folder"
        )
    foreign = [
        e.name
        for e in entries
        if e.name not in (COHORT_FILE, LABELS_FILE)
        and not (e.is_dir() and _PATIENT_DIR.match(e.name))
    ]
    if foreign:
        raise MedclError(
            f"synth: {out_dir} holds a generated cohort and other files "
            f"({', '.join(sorted(foreign)[:3])}); refusing to mix them"
        )
    for e in entries:
        if e.is_dir():
            shutil.rmtree(e)
        else:
            e.unlink()


def run_patients(
    job: Callable[[int], PatientResult], patients: int, n_proc: int, progress: bool
) -> Iterable[PatientResult]:
    """``job`` over every patient index, in patient order whatever the number of processes.

    ``job`` must be picklable (a module-level function or a :func:`functools.partial` of one):
    with ``n_proc > 1`` it runs in spawned processes.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=patients, desc="synth", unit="patient", disable=not progress)
    if n_proc == 1:
        for result in map(job, range(patients)):
            bar.update(1)
            yield result
    else:
        with ProcessPoolExecutor(n_proc, mp_context=get_context("spawn")) as pool:
            chunk = max(1, patients // (8 * n_proc))
            for result in pool.map(job, range(patients), chunksize=chunk):
                bar.update(1)
                yield result
    bar.close()


def write_patients(
    job: Callable[[int], PatientResult],
    patients: int,
    workers: int,
    progress: bool,
    classes: tuple[str, ...],
) -> tuple[dict[str, int], dict[str, int], list[tuple[str, str]]]:
    """Run ``job`` for every patient on ``workers`` processes (0: one per CPU core).

    Returns:
        Patients per class, images per class (every class a key, in order) and every
        ``labels.csv`` row, in patient order. When ``job`` gives its patient's findings (a tuple
        of 1/0, multi-label cohorts), ``classes`` are the findings and the counts are of the
        patients (images) with each finding.
    """
    n_proc = (os.cpu_count() or 1) if workers <= 0 else int(workers)
    n_proc = max(1, min(n_proc, patients))
    counts = dict.fromkeys(classes, 0)
    image_counts = dict.fromkeys(classes, 0)
    rows: list[tuple[str, ...]] = []
    for label, images, patient_rows in run_patients(job, patients, n_proc, progress):
        present = label if isinstance(label, tuple) else None
        for k, name in enumerate(classes):
            if present[k] if present is not None else k == label:
                counts[name] += 1
                image_counts[name] += images
        rows.extend(patient_rows)
    return counts, image_counts, rows


def write_labels(
    path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("path", "label")
) -> None:
    """``labels.csv``: the ``header`` (``path,label``, or ``path`` and a column per finding),
    then one row per file (forward slashes)."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(list(header))
        writer.writerows(rows)


def write_record(path: Path, record: dict[str, Any]) -> None:
    """``cohort.json``: what was generated, with which arguments (never PHI)."""
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
