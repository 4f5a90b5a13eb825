"""Pretraining stage: SSCL objectives, the Lightning module and data module, the training run."""
