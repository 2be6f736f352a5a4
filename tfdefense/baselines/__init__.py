"""The papers' comparison points: MagNet and Defense-GAN.

Both are ``tfdefense.defend.Defense`` subclasses (``predict(x) -> labels`` with
``REJECTED = -1``) and Keras models (``.keras`` save/load; ``call(x)`` gives the
differentiable logits an adaptive attack follows).
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
from tfdefense.baselines.magnet_nets import (
    MNIST_STRUCTURE_I,
    MNIST_STRUCTURE_II,
    magnet_autoencoder,
)
from tfdefense.baselines.wgan_gp import WGANGP

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
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "magnet_autoencoder",
    "reconstruction_error",
]
