"""Encoders (MONAI ResNets) and projection / predictor heads."""

from medcl.models.encoders import ENCODERS, build_encoder, encoder_dim
from medcl.models.heads import PredictorHead, ProjectionHead

__all__ = ["ENCODERS", "PredictorHead", "ProjectionHead", "build_encoder", "encoder_dim"]
