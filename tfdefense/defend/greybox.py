"""GreyBoxDefense: classify G(x′) instead of x′ (CD-VAE §3.4, Table 6).

The attacker knows the classifier (pre-trained on clean x) but not the
CD-VAE. Adversarial perturbations mostly land in R(x) = x − G(x) (CD-VAE
§3.2), so G(x′) keeps the class information the attack did not reach. The
paper leaves open which classifier reads G(x′); both are offered:

* the classifier the attacker targeted (pre-trained on x), ``classifier=D̂``;
* a classifier trained on G(x) of clean training images (§3.4's "classifier
  trained on G(x′)").

``logits(x)`` is the whole pipeline x → G(x) → classifier as one
differentiable TensorFlow function, so a white-box attacker can run any
gradient attack through it (an adaptive evaluation the paper does not
report). With ``sample=True`` G draws z from the posterior instead of taking
its mean; attack that variant through ``attacks.eot(defense.logits, n)``.

Example:
    >>> import numpy as np
    >>> from tfdefense import models, nets
    >>> from tfdefense.defend import GreyBoxDefense
    >>> cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8, gamma=2e-3)
    >>> defense = GreyBoxDefense(cdvae, nets.small_cnn(width=4, dense_units=8))
    >>> defense.predict(np.zeros((3, 28, 28, 1), "float32")).shape
    (3,)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.defend.base import Defense, register_defense
from tfdefense.validation import check_positive_int


@register_defense
class GreyBoxDefense(Defense):
    """Predict with ``classifier(G(x))``; never rejects.

    Args:
        cdvae: a trained CD-VAE (``generate``; γ = 2e-3 is the paper's CIFAR-10
            grey-box setting, CD-VAE §4.3).
        classifier: images → logits; the attacked classifier or one trained on G(x)
            (a Keras model to ``save`` or export the defense).
        clip: clip G(x) to [0, 1] before classifying (classifiers see images in [0, 1]).
        sample: draw z from the posterior (a stochastic defense: ``stochastic`` is True,
            ``predict`` draws once per call and an attacker needs EOT) instead of its mean.
        batch_size: images per compiled batch in ``predict``.
    """

    def __init__(self, cdvae, classifier, clip: bool = True, sample: bool = False,
                 batch_size: int = 256):
        self.cdvae = cdvae
        self.classifier = classifier
        self.clip = clip
        self.sample = sample
        self.batch_size = batch_size
        self._check_params()
        self.input_shape = tuple(cdvae.input_shape_)
        self.stochastic = sample

    def _check_params(self) -> None:
        if not (hasattr(self.cdvae, "generate") and hasattr(self.cdvae, "input_shape_")):
            raise ValueError(f"cdvae: expected a CD-VAE with generate(x), got {self.cdvae!r}")
        if not callable(self.classifier):
            raise ValueError(f"classifier: expected a callable images -> logits, got {self.classifier!r}")
        for name in ("clip", "sample"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        check_positive_int(self.batch_size, "batch_size")

    def purify(self, x: tf.Tensor) -> tf.Tensor:
        """G(x) (clipped to [0, 1] when ``clip``), differentiable."""
        g = self.cdvae.generate(tf.cast(x, tf.float32), training=False, sample=self.sample)
        return tf.clip_by_value(g, 0.0, 1.0) if self.clip else g

    def logits(self, x) -> tf.Tensor:
        """classifier(G(x)): the whole defense as one differentiable images → logits function."""
        return self.classifier(self.purify(x), training=False)

    __call__ = logits

    # ------------------------------------------------------------------ save and serve
    def components(self) -> dict[str, keras.Model]:
        """The CD-VAE and the classifier (both must be Keras models to save or export)."""
        if not isinstance(self.classifier, keras.Model):
            raise ValueError("classifier: a plain callable cannot be saved or exported; "
                             "build the defense with a Keras model")
        return {"cdvae": self.cdvae, "classifier": self.classifier}

    def get_config(self) -> dict[str, Any]:
        return {"clip": self.clip, "sample": self.sample, "batch_size": self.batch_size}

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> GreyBoxDefense:
        return cls(components["cdvae"], components["classifier"], **config)

    def serving_spec(self):
        """The base signatures plus ``purify``: G(x) as the defense feeds it to the classifier."""
        from tfdefense.serving import Signature

        spec = super().serving_spec()
        spec.signatures.append(Signature("purify", lambda x: {"purified": self.purify(x)}, {
            "purified": "float32 (N, H, W, C) G(x), clipped to [0, 1] when the defense clips"}))
        shape = getattr(self.classifier, "output_shape", None)
        spec.metadata["num_classes"] = int(shape[-1]) if shape else None
        return spec
