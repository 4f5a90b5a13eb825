"""Encoders (MONAI ResNets), projection / predictor heads, EMA target updates and the cosine kNN
classifier (:mod:`.knn`)."""

from medcl.models.ema import ema_update, momentum_schedule
from medcl.models.encoders import ENCODERS, EncoderSpec, build_encoder, encoder_dim
from medcl.models.heads import PredictorHead, ProjectionHead

__all__ = [
    "ENCODERS",
    "EncoderSpec",
    "PredictorHead",
    "ProjectionHead",
    "build_encoder",
    "ema_update",
    "encoder_dim",
    "momentum_schedule",
]
