"""Pretraining stage: mixed labelled/unlabelled batches, SSCL objectives, Lightning training."""
