"""Defenses with one interface (``tfdefense.defend.base.Defense``): predict, attack, save, serve.

``GreyBoxDefense`` (classifier on G(x), CD-VAE §3.4), ``AdversarialCDVAEDefense``
(D_G(G(x)) of the adversarially trained CD-VAE), ``ClassifierDefense`` (any Keras
classifier: the "Normal" and PGD-AT rows), ``FMDefense`` (FM-Defense); MagNet and
Defense-GAN live in ``tfdefense.baselines``. ``load(path)`` rebuilds any saved one.
"""

from tfdefense.decisions import Decision
from tfdefense.defend.base import REJECTED, Defense, load, register_defense, registered_defenses

__all__ = ["REJECTED", "Decision", "Defense", "load", "register_defense", "registered_defenses"]
from tfdefense.defend.fm_defense import FMDefense, defense_accuracy  # noqa: E402, I001

__all__ += ["FMDefense", "defense_accuracy"]
from tfdefense.defend.greybox import GreyBoxDefense  # noqa: E402, I001
from tfdefense.defend.classifier import ClassifierDefense  # noqa: E402, I001
from tfdefense.defend.adversarial_cdvae import AdversarialCDVAEDefense  # noqa: E402, I001

__all__ += ["AdversarialCDVAEDefense", "ClassifierDefense", "GreyBoxDefense"]
