"""AdversarialCDVAEDefense: CD-VAE's white-box adversarial training as a ``Defense`` (§3.4).

A trained ``models.AdversarialCDVAE`` predicts with D_G(G(x)), the classifier on the
class-free reconstruction, and never rejects. ``logits`` is that pipeline as one
differentiable function (``AdversarialCDVAE.defended_logits``), the path an adaptive
attacker targets (CD-VAE Table 7 attacks it). With ``sample=True`` G draws z from the
posterior instead of taking its mean: the defense is random (``stochastic``), ``predict``
draws once per call and an attacker averages ``logits`` with ``attacks.eot``.

Example:
    >>> import numpy as np
    >>> from tfdefense import models, nets
    >>> from tfdefense.defend import AdversarialCDVAEDefense
    >>> base = models.CDVAE.for_dataset("mnist_5k", latent_dim=4, width=4)
    >>> d_g = nets.small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> defense = AdversarialCDVAEDefense(models.AdversarialCDVAE.from_cdvae(base, d_g))
    >>> labels, decisions = defense.predict_with_decisions(np.zeros((2, 28, 28, 1), "float32"))
    >>> labels.shape, decisions.tolist(), defense.stochastic
    ((2,), [0, 0], False)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.defend.base import Defense, register_defense
from tfdefense.validation import check_positive_int


@register_defense
class AdversarialCDVAEDefense(Defense):
    """Classify with D_G(G(x)) of an adversarially trained CD-VAE; never rejects.

    Args:
        model: a trained ``models.AdversarialCDVAE``.
        sample: draw z from the posterior (stochastic; attack with EOT) instead of its mean.
        batch_size: images per compiled batch in ``predict``.
    """

    def __init__(self, model, sample: bool = False, batch_size: int = 256):
        from tfdefense.models.adversarial import AdversarialCDVAE

        if not isinstance(model, AdversarialCDVAE):
            raise ValueError(f"model: expected a models.AdversarialCDVAE, got {type(model).__name__}")
        if not isinstance(sample, bool):
            raise ValueError(f"sample: expected True or False, got {sample!r}")
        self.model = model
        self.sample = sample
        self.stochastic = sample
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.input_shape = tuple(model.input_shape_)

    def purify(self, x: tf.Tensor) -> tf.Tensor:
        """G(x), the reconstruction D_G classifies (a posterior draw when ``sample``)."""
        return self.model.generate(tf.cast(x, tf.float32), training=False, sample=self.sample)

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """D_G(G(x)) in inference mode, differentiable through G."""
        return self.model.defended_logits(tf.cast(x, tf.float32), training=False,
                                          sample=self.sample)

    def components(self) -> dict[str, keras.Model]:
        return {"model": self.model}

    def get_config(self) -> dict[str, Any]:
        return {"sample": self.sample, "batch_size": self.batch_size}

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> AdversarialCDVAEDefense:
        return cls(components["model"], **config)
