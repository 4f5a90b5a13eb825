"""Data stage: phantom cohort generation, ingestion to a manifest, patient-level splits."""
