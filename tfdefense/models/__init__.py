"""Subclassed Keras models that hold the training logic of both papers."""

from tfdefense.models.cdvae import CDVAE, paper_optimizer

__all__ = ["CDVAE", "paper_optimizer"]
