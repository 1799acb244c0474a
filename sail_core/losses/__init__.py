"""Losses: one per module, each returning a dict of named terms (the trainer sums ``*_loss``)."""

from sail_core.losses.infonce import InfoNCELoss, compute_loss_from_embeddings

__all__ = ["InfoNCELoss", "compute_loss_from_embeddings"]
