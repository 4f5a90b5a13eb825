"""The brain cohort's fixed vocabulary: grades and their priors, generator, template, messages."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("no_atrophy", "mild_atrophy", "moderate_atrophy")
"""Class names (grades of simulated global atrophy), in label-index order."""

CLASS_PRIORS: tuple[float, ...] = (0.40, 0.35, 0.25)
"""Probability of each grade in :data:`CLASSES` for a patient."""

GENERATOR = "medcl.synth.brain"
"""The ``generator`` recorded in ``cohort.json``."""

GENERATOR_VERSION = 1
"""Changes whenever the same arguments (and the same template) would give different files."""

NILEARN_MISSING = "the brain cohort needs nilearn: pip install 'medcl[brain]'"
"""The one-line message when nilearn (which holds the template) is not installed."""

TEMPLATE = "MNI152 ICBM 2009a nonlinear symmetric, 1 mm (nilearn's bundled copy)"
"""The anatomy every patient is drawn from; its licence is unknown, so no derived image is kept."""

SLICE_Z_MM = 18.0
"""MNI z (mm) of the reference axial slice: through the bodies of the lateral ventricles."""
