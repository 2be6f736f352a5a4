"""The papers' comparison points: MagNet and Defense-GAN.

Both are ``tfdefense.defend.Defense`` subclasses that hold their Keras models:
``predict(x) -> labels`` with ``REJECTED = -1``, ``predict_with_decisions``,
``logits(x)`` (the differentiable path an adaptive attack follows), ``save(path)`` /
``tfdefense.defend.load(path)`` and ``serving_spec()``. MagNet's two detectors are a
``tfdefense.detect.Detector`` of their own, ``MagNetDetector``.
"""

from tfdefense.baselines.defense_gan import DefenseGAN, Projection
from tfdefense.baselines.defense_gan_nets import defense_gan_critic, defense_gan_generator
from tfdefense.baselines.denoising_autoencoder import DenoisingAutoEncoder
from tfdefense.baselines.losses import (
    critic_loss,
    generator_loss,
    gradient_penalty,
    reconstruction_error,
)
from tfdefense.baselines.magnet import MagNet
from tfdefense.baselines.magnet_detector import MagNetDetector
from tfdefense.baselines.magnet_nets import (
    MNIST_STRUCTURE_I,
    MNIST_STRUCTURE_II,
    magnet_autoencoder,
)
from tfdefense.baselines.wgan_gp import WGANGP, wgan_gp_optimizer

__all__ = [
    "WGANGP",
    "DefenseGAN",
    "Projection",
    "defense_gan_critic",
    "defense_gan_generator",
    "MNIST_STRUCTURE_I",
    "MNIST_STRUCTURE_II",
    "DenoisingAutoEncoder",
    "MagNet",
    "MagNetDetector",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "magnet_autoencoder",
    "reconstruction_error",
    "wgan_gp_optimizer",
]
