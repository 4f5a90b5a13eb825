"""Self-training: a teacher's confident predictions on the unlabelled pool, pooled over each
patient's images, become labels for a student (``finetune.mode: selftrain``).

Pseudo-labelling (Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning
Method for Deep Neural Networks", ICML workshop) and its noisy-student form (Xie et al. 2020,
"Self-training with Noisy Student improves ImageNet classification", CVPR): a teacher ``f_T`` is
fitted on the labelled images; each unlabelled training image ``u`` of patient ``p`` gets the
pooled prediction

    q_p = (1/|U_p|) Σ_{u ∈ U_p} softmax(f_T(u))        (``selftrain_pool: patient``)
    q_u = softmax(f_T(u))                               (``selftrain_pool: image``)

and joins the labelled set with the label ``argmax q`` when ``max q ≥ τ``
(``finetune.selftrain_threshold``). A student that starts where the teacher started (from scratch,
or the same pretrained encoder) is then fitted on the labelled ∪ pseudo-labelled images with the
same recipe and its strong augmentation (the noise of Noisy Student), selected on validation.

Why pool by patient: a patient's studies share the label whenever it is a property of the patient
(a finding that persists, a grade of disease), while what misleads a single image — a look-alike,
the acquisition — changes from study to study; the mean over a patient's studies is then a much
better pseudo-label than any one of them (measured on the demo's phantom at 5 % labels: a teacher
of 0.70 validation balanced accuracy labels 62 % of the unlabelled images at 93 % accuracy).
With pooling, a patient with a true label on some of its images gives that label to its other
training images too; a true label is never changed.

Multi-label findings (:mod:`medcl.data.findings`): every finding is pseudo-labelled on its own,
by the rule of FixMatch per finding (:mod:`medcl.losses.fixmatch_findings`) on the pooled
per-finding sigmoids ``q_pk = (1/|U_p|) Σ_{u ∈ U_p} σ(f_T(u))_k``: present when ``q_pk ≥ τ``,
absent when ``q_pk ≤ 1 − τ``, unknown otherwise (written ``?finding`` in the label, so masked in
the student's loss; a row with no confident finding stays unlabelled). It needs ``τ ≥ 0.5``. With
patient pooling a finding known on a patient's labelled images (the majority of its known values;
none on a tie) is given to its unlabelled images. Coverage and accuracy on validation count the
known (image, finding) entries.

What the pseudo-labels are worth is measured where labels exist: the teacher's pooled predictions
on the validation patients give their coverage and accuracy at the same threshold
(``pseudo_val_coverage``, ``pseudo_val_accuracy`` in the fit's details), next to the counts on the
pool.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from medcl.data.findings import MISSING, encode_matrix
from medcl.data.manifest import Manifest
from medcl.errors import ConfigError
from medcl.evaluate.classifier import Classifier
from medcl.evaluate.evaluation import predict_rows
from medcl.evaluate.fitting import FitJob, FitMode

log = logging.getLogger(__name__)


def pooled_predictions(
    clf: Classifier, rows: Manifest, pool: str, known: dict[str, int] | None = None
) -> np.ndarray:
    """The teacher's class probabilities ``(N, C)`` for ``rows``, pooled by patient.

    Args:
        clf: The teacher.
        rows: The rows to label.
        pool: ``patient`` (the mean over each patient's rows) or ``image`` (each row's own).
        known: Patients whose label is known (``patient_key → class index``): with ``patient``
            pooling their rows get that class with probability 1.
    """
    proba, _ = predict_rows(clf, rows)
    if pool == "image" or not len(rows):
        return proba
    keys = rows.df["patient_key"].to_numpy()
    pooled = pd.DataFrame(proba).groupby(keys).transform("mean").to_numpy(copy=True)
    for i, k in enumerate(keys):
        if known and k in known:
            pooled[i] = np.eye(proba.shape[1])[known[k]]
    return pooled


def pseudo_label(
    teacher: Classifier, manifest: Manifest, threshold: float, pool: str
) -> tuple[Manifest, dict[str, Any]]:
    """``manifest`` with its unlabelled training rows labelled by ``teacher`` where confident.

    Args:
        teacher: The fitted teacher.
        manifest: A split manifest (its labelled rows are kept as they are).
        threshold: ``τ``: a row is labelled when its (pooled) top probability is ≥ ``τ``.
        pool: ``patient`` or ``image`` (see :func:`pooled_predictions`).

    Returns:
        The manifest with pseudo-labels, and ``{"pseudo_labelled", "pool_size",
        "pseudo_classes", "pseudo_val_coverage", "pseudo_val_accuracy"}``.
    """
    if manifest.multilabel:
        return pseudo_label_findings(teacher, manifest, threshold, pool)
    df = manifest.df
    classes = list(manifest.classes)
    train = df["split"] == "train"
    unlabelled = manifest.subset(train & (df["label"] == ""))
    known: dict[str, int] = {}
    if pool == "patient":  # a patient's true label (the most frequent one) covers its other rows
        lab = df[train & (df["label"] != "")]
        top = lab.groupby("patient_key")["label"].agg(lambda s: s.value_counts().index[0])
        known = {k: classes.index(v) for k, v in top.items()}
    q = pooled_predictions(teacher, unlabelled, pool, known)
    confident = q.max(1) >= threshold if len(q) else np.zeros(0, dtype=bool)
    names = np.asarray(classes, dtype=object)[q.argmax(1)] if len(q) else np.zeros(0)
    assign = dict(
        zip(unlabelled.df["image_id"].to_numpy()[confident], names[confident], strict=True)
    )
    out = df.copy()
    hit = out["image_id"].isin(list(assign)) & train & (out["label"] == "")
    out.loc[hit, "label"] = out.loc[hit, "image_id"].map(assign)
    val = manifest.subset((df["split"] == "val") & (df["label"] != ""))
    qv = pooled_predictions(teacher, val, pool)
    sure = qv.max(1) >= threshold if len(qv) else np.zeros(0, dtype=bool)
    truth = np.array([classes.index(c) for c in val.df["label"]], dtype=int)
    stats = {
        "pseudo_labelled": int(confident.sum()),
        "pool_size": int(len(unlabelled)),
        "pseudo_classes": {c: int((names[confident] == c).sum()) for c in classes},
        "pseudo_val_coverage": float(sure.mean()) if len(sure) else 0.0,
        "pseudo_val_accuracy": float((qv.argmax(1)[sure] == truth[sure]).mean())
        if sure.any()
        else float("nan"),
    }
    return Manifest(out, classes, dict(manifest.extra)), stats


def _confident_states(q: np.ndarray, threshold: float) -> np.ndarray:
    """``(N, K)`` states of per-finding probabilities: 1 at ``q ≥ τ``, 0 at ``q ≤ 1 − τ``, −1
    otherwise."""
    out = np.full(q.shape, MISSING, dtype=np.int64)
    out[q <= 1.0 - threshold] = 0
    out[q >= threshold] = 1
    return out


def pseudo_label_findings(
    teacher: Classifier, manifest: Manifest, threshold: float, pool: str
) -> tuple[Manifest, dict[str, Any]]:
    """:func:`pseudo_label` of a multi-label manifest (module docstring): each unlabelled training
    row gets the confident findings of its (patient-pooled) sigmoids, the others unknown.

    Returns:
        The manifest with pseudo-labels, and ``{"pseudo_labelled"`` (rows with at least one
        confident finding), ``"pseudo_entries"`` (confident findings), ``"pool_size"``,
        ``"pseudo_classes"`` (pseudo-labels "present" per finding), ``"pseudo_val_coverage"``,
        ``"pseudo_val_accuracy"}`` (over the known validation entries).

    Raises:
        ConfigError: ``τ < 0.5``.
    """
    if threshold < 0.5:
        raise ConfigError(
            "finetune.selftrain_threshold: must be >= 0.5 for a multi-label task (a finding is "
            f"confident when p >= threshold or p <= 1 - threshold); got {threshold}"
        )
    df = manifest.df
    findings = list(manifest.classes)
    train = df["split"] == "train"
    unlabelled = manifest.subset(train & (df["label"] == ""))
    q = pooled_predictions(teacher, unlabelled, pool)
    states = _confident_states(q, threshold) if len(q) else np.zeros((0, len(findings)), int)
    if pool == "patient" and len(q):  # a finding known on the patient's labelled rows
        lab = manifest.subset(train & (df["label"] != ""))
        y = lab.findings()
        known = np.where(y >= 0, y, np.nan)
        share = pd.DataFrame(known).groupby(lab.df["patient_key"].to_numpy()).mean()
        keys = unlabelled.df["patient_key"].to_numpy()
        mean = share.reindex(keys).to_numpy()  # NaN: the patient is not labelled, or unknown
        states[mean > 0.5] = 1
        states[mean < 0.5] = 0
    texts = np.asarray(encode_matrix(states, findings), dtype=object)
    out = df.copy()
    assign = dict(zip(unlabelled.df["image_id"].to_numpy(), texts, strict=True))
    hit = out["image_id"].isin(list(assign)) & train & (out["label"] == "")
    out.loc[hit, "label"] = out.loc[hit, "image_id"].map(assign)
    val = manifest.subset((df["split"] == "val") & (df["label"] != ""))
    yv = val.findings()
    sv = _confident_states(pooled_predictions(teacher, val, pool), threshold)
    known_v = yv >= 0
    sure = (sv >= 0) & known_v
    stats = {
        "pseudo_labelled": int((texts != "").sum()),
        "pseudo_entries": int((states >= 0).sum()),
        "pool_size": int(len(unlabelled)),
        "pseudo_classes": {f: int((states[:, k] == 1).sum()) for k, f in enumerate(findings)},
        "pseudo_val_coverage": float(sure.sum() / known_v.sum()) if known_v.any() else 0.0,
        "pseudo_val_accuracy": float((sv[sure] == yv[sure]).mean()) if sure.any() else float("nan"),
    }
    return Manifest(out, findings, dict(manifest.extra)), stats


def fit_selftrain(
    job: FitJob, fit: FitMode, teacher: Classifier | None = None
) -> tuple[float, dict[str, Any]]:
    """Fit a teacher with ``fit`` (or take ``teacher``), pseudo-label the unlabelled pool, then fit
    a student that starts where the teacher started on the labelled ∪ pseudo-labelled images.

    Args:
        job: The fit; ``job.clf`` ends up the student.
        fit: How teacher and student are fitted (full fine-tuning).
        teacher: An already fitted teacher (the same fit of the same data and seed, e.g. the
            supervised arm's model in ``medcl efficiency``), or ``None`` to fit one here.

    Returns:
        The student's validation score and details: the teacher's and student's scores and
        steps, ``steps`` (both), and the pseudo-label counts of :func:`pseudo_label`. Without
        unlabelled training rows (every label kept) the teacher is the result.

        When the teacher labels no unlabelled image with confidence, a student would learn from
        the teacher's data again: the teacher is the result, a warning says so, and the details
        carry ``student``.
    """
    ft = job.cfg.finetune
    start = copy.deepcopy(job.clf.state_dict())
    t_details: dict[str, Any] = {}
    if teacher is None:
        t_score, t_details = fit(job)
        teacher = copy.deepcopy(job.clf)
    else:
        t_score = float(teacher.description.finetune.val_score)  # type: ignore[union-attr]
        t_details = dict(teacher.description.finetune.details)  # type: ignore[union-attr]
    manifest, stats = pseudo_label(teacher, job.manifest, ft.selftrain_threshold, ft.selftrain_pool)
    t_steps = int(t_details.get("steps", 0))
    if stats["pool_size"] == 0:  # every training image labelled: the student would be the teacher
        job.clf.load_state_dict(teacher.state_dict())
        job.clf.eval()
        return t_score, {**t_details, "steps": t_steps, "teacher_steps": t_steps, **stats}
    job.clf.load_state_dict(start)  # the student starts where the teacher did,
    job.clf.train()  # in training mode (fitting the teacher left it in eval mode)
    labelled = manifest.subset((manifest.df["split"] == "train") & (manifest.df["label"] != ""))
    if stats["pseudo_labelled"] == 0:  # a student would learn from the teacher's data again
        log.warning(
            "self-training: no unlabelled image reached finetune.selftrain_threshold = %s "
            "(teacher validation score %.3f): the teacher is the result (lower the threshold "
            "to self-train)",
            ft.selftrain_threshold,
            t_score,
        )
        job.clf.load_state_dict(teacher.state_dict())
        job.clf.eval()
        return t_score, {
            **t_details,
            "steps": t_steps,
            "teacher_steps": t_steps,
            "student": "none: no confident pseudo-label, the teacher is the result",
            **stats,
        }
    student = dataclasses.replace(job, manifest=manifest, train=job.clf.images(labelled))
    teacher_key = (
        "teacher_val_macro_auroc" if job.manifest.multilabel else "teacher_val_balanced_accuracy"
    )
    score, details = fit(student)
    s_steps = int(details.get("steps", 0))
    return score, {
        **details,
        "steps": t_steps + s_steps,
        "student_steps": s_steps,
        "teacher_steps": t_steps,
        teacher_key: t_score,
        **stats,
    }


def selftrain_mode(fit: FitMode) -> Callable[[FitJob], tuple[float, dict[str, Any]]]:
    """The ``selftrain`` fine-tuning mode with ``fit`` for teacher and student; a teacher given
    to the job (``FitJob.teacher``) is used instead of fitting one."""

    def mode(job: FitJob) -> tuple[float, dict[str, Any]]:
        return fit_selftrain(job, fit, job.teacher)

    return mode
