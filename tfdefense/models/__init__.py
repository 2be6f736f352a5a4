"""Subclassed Keras models that hold the training logic of both papers."""

from tfdefense.models.cdvae import CDVAE, cdvae_optimizer

__all__ = ["CDVAE", "cdvae_optimizer"]
from tfdefense.models.dgmm import DGMM  # noqa: E402, I001  (FM-Defense)

__all__ += ["DGMM"]
from tfdefense.models.combo_vae import ComboVAE  # noqa: E402, I001  (FM-Defense)

__all__ += ["ComboVAE"]
from tfdefense.models.adversarial import AdversarialCDVAE  # noqa: E402, I001  (CD-VAE §3.4)

__all__ += ["AdversarialCDVAE"]
from tfdefense.models.pgd_training import PGDAdversarialTraining  # noqa: E402, I001  (Madry et al.)

__all__ += ["PGDAdversarialTraining"]
from tfdefense.models.vq import VectorQuantizer, VQCDVAE  # noqa: E402, I001  (CD-VAE ImageNet VQ-VAE)

__all__ += ["VQCDVAE", "VectorQuantizer"]
# the recipes' schedules and PyTorch-style SGD register with Keras here, so a saved model whose
# optimizer uses them loads in a fresh process that imports only tfdefense.models
import tfdefense.optimizers  # noqa: E402, F401, I001
import tfdefense.schedules  # noqa: E402, F401, I001
