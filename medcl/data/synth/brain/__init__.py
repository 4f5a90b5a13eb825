"""Brain cohort: real anatomy, a global question (grades of simulated atrophy), as DICOM studies.

The phantom cohort's label is a small finding (a count of lesions); this cohort's label is a
property of the whole anatomy, the other kind of task a few-label recipe has to be chosen for.
Each patient's brain is the MNI152 template (ICBM 2009a, the 1 mm copy inside the nilearn wheel:
``nilearn.datasets.load_mni152_template`` and its grey/white-matter templates; nothing is
downloaded) under a smooth random deformation, with one of three grades of simulated atrophy:
``no_atrophy``, ``mild_atrophy``, ``moderate_atrophy`` (priors 40 / 35 / 25 %). Atrophy is a loss
of tissue at fixed intracranial volume: the tissue boundary retreats, sulci widen, the cortex
thins and the lateral ventricles enlarge, and CSF fills the space. Grades overlap with normal
variability (head size, ventricle size, cortical width, and the severity within a grade), so the
task is learnable but not trivial from a few labels.

Each patient has 3-5 studies of one axial T1-weighted slice through the lateral ventricles; the
anatomy and grade repeat across them, the acquisition does not (slice position and tilt, pose,
field of view, contrast, bias field, noise). Files, layout, fake PHI, ``labels.csv`` and
``cohort.json`` are the phantom cohort's (:mod:`medcl.data.synth`), so ``medcl ingest`` and its
de-identification apply unchanged.

Licence: nilearn describes the template's licence as unknown. The cohort is generated at run time
from the installed wheel and medcl distributes no image derived from it.

nilearn is an optional dependency (``pip install 'medcl[brain]'``); importing this package does
not need it, generating a cohort does.

Modules: :mod:`.template` (the template's maps), :mod:`.anatomy` (a patient's brain, its grade
and atrophy), :mod:`.acquire` (one MR slice), :mod:`.cohort` (:func:`generate_brain_cohort`).
"""

from __future__ import annotations

from medcl.data.synth.brain.anatomy import CLASS_PRIORS, CLASSES
from medcl.data.synth.brain.cohort import GENERATOR, generate_brain_cohort, patient_brain
from medcl.data.synth.brain.template import NILEARN_MISSING

__all__ = [
    "CLASSES",
    "CLASS_PRIORS",
    "GENERATOR",
    "NILEARN_MISSING",
    "generate_brain_cohort",
    "patient_brain",
]
