"""medcl: semi-supervised contrastive learning for medical imaging with scarce labels.

Pipeline stages, one sub-package each, in the order imports flow (a stage imports only from the
stages above it in this list and from the shared modules; ``tests/test_import_direction.py``
checks it):

- :mod:`medcl.data` — synthetic phantom cohort, ingestion to a de-identified manifest, patient
  splits, datasets and batch samplers.
- :mod:`medcl.transforms` — modality-specific augmentation presets (CT, MR, X-ray).
- :mod:`medcl.models`, :mod:`medcl.losses`, :mod:`medcl.optim` — MONAI encoders, projection /
  predictor heads, EMA and kNN; SupCon (L_out) and NT-Xent parts of the SSCL loss, MoCo,
  BYOL/SimSiam, DINO, VICReg and FixMatch (formulas: docs/objectives.md); learning-rate schedules.
- :mod:`medcl.train` — Lightning pretraining; :mod:`medcl.evaluate` — few-label fine-tuning,
  metrics, label-efficiency reports (it may run pretraining; training never imports evaluation).
- :mod:`medcl.app`, :mod:`medcl.cli`, :mod:`medcl.demo` — the review app, the command line and
  the end-to-end demo.

Shared by every stage: :mod:`medcl.errors`, :mod:`medcl.config`, :mod:`medcl.io` (atomic writes)
and :mod:`medcl.seeding` (seeds of derived random streams).
"""

__version__ = "0.1.0"
