"""Data stage: phantom cohort generation, ingestion to a manifest, patient-level splits, and the
datasets and batch samplers that training and evaluation read (:mod:`.dataset`, :mod:`.sampler`)."""
