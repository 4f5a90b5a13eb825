"""medcl: semi-supervised contrastive learning for medical imaging with scarce labels.

Pipeline stages, one sub-package each:

- :mod:`medcl.data` — synthetic phantom cohort, ingestion to a de-identified manifest, patient
  splits.
- :mod:`medcl.losses` — NT-Xent, SupCon (L_out), the SSCL hybrid, MoCo, BYOL/SimSiam.
- :mod:`medcl.transforms` — modality-specific augmentation presets (CT, MR, X-ray).
- :mod:`medcl.models` — MONAI encoders and projection/predictor heads.
- :mod:`medcl.train` — Lightning pretraining.
- :mod:`medcl.evaluate` — few-label fine-tuning, metrics, label-efficiency reports.
"""

__version__ = "0.1.0"
