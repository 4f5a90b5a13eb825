"""The phantom cohort's fixed vocabulary: classes and their priors, modalities, generator, files."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("normal", "single_lesion", "multiple_lesions")
"""Class names, in label-index order."""

MODALITIES: tuple[str, ...] = ("mr", "ct", "xr")
"""Supported modality flavours."""

CLASS_PRIORS: tuple[float, ...] = (0.45, 0.33, 0.22)
"""Probability of each class in :data:`CLASSES` for a patient."""

GENERATOR = "medcl.synth"
"""The ``generator`` recorded in ``cohort.json``; a folder with another one is never cleared."""

GENERATOR_VERSION = 3
"""Changes whenever the same arguments would give different files."""

LABELS_FILE = "labels.csv"
"""``path,label`` per DICOM file, next to the patient folders."""

COHORT_FILE = "cohort.json"
"""The cohort summary (no PHI)."""
