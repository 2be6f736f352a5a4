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

import numpy as np
import tensorflow as tf

from tfdefense.defend.base import Defense
from tfdefense.validation import check_images, check_positive_int


class GreyBoxDefense(Defense):
    """Predict with ``classifier(G(x))``; never rejects.

    Args:
        cdvae: a trained CD-VAE (``generate``; γ = 2e-3 is the paper's CIFAR-10
            grey-box setting, CD-VAE §4.3).
        classifier: images → logits; the attacked classifier or one trained on G(x).
        clip: clip G(x) to [0, 1] before classifying (classifiers see images in [0, 1]).
        sample: draw z from the posterior (stochastic defense) instead of its mean.
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
        self._graph = tf.function(self.logits, reduce_retracing=True)

    def _check_params(self) -> None:
        if not (hasattr(self.cdvae, "generate") and hasattr(self.cdvae, "input_shape_")):
            raise ValueError(f"cdvae: expected a CD-VAE with generate(x), got {self.cdvae!r}")
        if not callable(self.classifier):
            raise ValueError(f"classifier: expected a callable images -> logits, got {self.classifier!r}")
        for name in ("clip", "sample"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        check_positive_int(self.batch_size, "batch_size")

    def purify(self, x) -> tf.Tensor:
        """G(x) (clipped to [0, 1] when ``clip``), differentiable."""
        g = self.cdvae.generate(tf.cast(x, tf.float32), training=False, sample=self.sample)
        return tf.clip_by_value(g, 0.0, 1.0) if self.clip else g

    def logits(self, x) -> tf.Tensor:
        """classifier(G(x)): the whole defense as one differentiable images → logits function."""
        return self.classifier(self.purify(x), training=False)

    __call__ = logits

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self._graph(tf.constant(x)).numpy(), axis=1)

    def accuracy(self, x, y) -> float:
        """Fraction of ``x`` classified as ``y``."""
        x = check_images(x, "x", shape=self.input_shape)
        y = np.asarray(y)
        if y.shape != (len(x),):
            raise ValueError(f"y: expected {len(x)} labels, got shape {y.shape}")
        return float(np.mean(self.predict(x, self.batch_size) == y))
