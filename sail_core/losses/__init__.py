"""Losses: one per module, each returning a dict of named terms (the trainer sums ``*_loss``)."""

from sail_core.losses.cosent import CoSENTLoss, cosent_from_cosines, cosent_from_embeddings
from sail_core.losses.infonce import InfoNCELoss, compute_loss_from_embeddings
from sail_core.losses.late_fusion import LateFusionGate, LateFusionLoss
from sail_core.losses.micl import MICLLoss

__all__ = [
    "InfoNCELoss",
    "compute_loss_from_embeddings",
    "CoSENTLoss",
    "cosent_from_cosines",
    "cosent_from_embeddings",
    "MICLLoss",
    "LateFusionGate",
    "LateFusionLoss",
]
