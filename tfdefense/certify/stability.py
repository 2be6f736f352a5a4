"""Fine-tune a denoiser G for denoised smoothing with Salman et al.'s stability objective.

Salman, Sun, Yang, Kapoor & Kolter 2020 (*Denoised Smoothing*) train a denoiser D in front
of a frozen classifier f so that f(D(x + δ)), δ ~ N(0, σ² I), keeps f's label of the clean
image: the *stability* objective (their §3, "Stab")

    L_Stab = E_{x, δ} CE( f(D(x + δ)), f(x) ),

with f's own prediction on x as the target (no true labels needed) and f's weights frozen;
their "Stab+MSE" denoisers start from one trained by MSE and are then fine-tuned by it.
``StabilityTraining`` does that second step for CD-VAE's G (``generate``, the class-preserving
reconstructor, already trained to reconstruct) or any Keras model images → images: only G's
weights change (a CD-VAE's own classifier D and the frozen f are left out), G's
batch-normalization layers run in training mode so their statistics move to noisy inputs,
and z is the posterior mean (``sample=False``), as at certification.

Example:
    >>> import numpy as np
    >>> from tfdefense import models, nets
    >>> from tfdefense.certify import StabilityTraining
    >>> cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8)
    >>> trainer = StabilityTraining(cdvae, nets.small_cnn(width=4, dense_units=8), sigma=0.25)
    >>> trainer.compile(optimizer="adam")
    >>> x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    >>> sorted(trainer.fit(x, epochs=1, batch_size=4, verbose=0).history)
    ['agreement', 'loss']
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfdefense.certify.smoothing import DEFAULT_SIGMA
from tfdefense.validation import check_number, check_positive_int

__all__ = ["StabilityTraining"]


@keras.saving.register_keras_serializable(package="tfdefense")
class StabilityTraining(keras.Model):
    """``fit(x)`` fine-tunes ``denoiser`` so that ``classifier`` keeps its clean label under noise.

    Args:
        denoiser: a CD-VAE (``generate``) or a Keras model images → images; trained in place.
        classifier: images in [0, 1] → logits; frozen (its weights never change).
        sigma: the noise level σ the denoiser is fine-tuned for (the certification's).
        clip: clip G's output to [0, 1] before the classifier (as ``SmoothedClassifier`` does).
        seed: seed of the noise draws.

    ``fit`` reads images only (labels, if given, are ignored: the target is f(x)); it logs
    ``loss`` (L_Stab) and ``agreement``, the fraction of noisy images whose f(G(x + δ)) is f(x).
    """

    def __init__(self, denoiser: keras.Model, classifier: keras.Model, sigma: float = DEFAULT_SIGMA,
                 clip: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not (hasattr(denoiser, "generate") or isinstance(denoiser, keras.Model)):
            raise ValueError(f"denoiser: expected a CD-VAE or a Keras model, got {denoiser!r}")
        if not isinstance(classifier, keras.Model):
            raise ValueError(f"classifier: expected a Keras model images -> logits, got {classifier!r}")
        if not isinstance(clip, bool):
            raise ValueError(f"clip: expected True or False, got {clip!r}")
        self.denoiser = denoiser
        self.classifier = classifier
        self.sigma = check_number(sigma, "sigma", low=0.0, low_inclusive=False)
        self.clip = clip
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.agreement_tracker = keras.metrics.Mean(name="agreement")

    @property
    def metrics(self):
        return [self.loss_tracker, self.agreement_tracker]

    def denoiser_variables(self) -> list:
        """G's trainable weights: the denoiser's, less those of a CD-VAE's own classifier D and
        of the frozen classifier."""
        frozen = {id(v) for v in self.classifier.variables}
        own_classifier = getattr(self.denoiser, "classifier", None)
        if isinstance(own_classifier, keras.layers.Layer):
            frozen |= {id(v) for v in own_classifier.variables}
        return [v for v in self.denoiser.trainable_variables if id(v) not in frozen]

    def denoise(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """G(x) (clipped to [0, 1] when ``clip``)."""
        if hasattr(self.denoiser, "generate"):
            g = self.denoiser.generate(x, training=training, sample=False)
        else:
            g = self.denoiser(x, training=training)
        g = tf.cast(g, tf.float32)
        return tf.clip_by_value(g, 0.0, 1.0) if self.clip else g

    def call(self, x, training: bool = False):
        """f(G(x)): the classifier's logits behind the denoiser."""
        return self.classifier(self.denoise(tf.cast(x, tf.float32), training=training), training=False)

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        x = tf.cast(x, tf.float32)
        target = tf.argmax(self.classifier(x, training=False), axis=-1)
        noisy = x + self.sigma * keras.random.normal(tf.shape(x), seed=self.seed_generator)
        variables = self.denoiser_variables()
        with tf.GradientTape() as tape:
            logits = self.classifier(self.denoise(noisy, training=True), training=False)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                target, logits, from_logits=True))
        # the posterior's log-variance does not reach G(x) at z = its mean: no gradient, left out
        pairs = [(g, v) for g, v in zip(tape.gradient(loss, variables), variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        self.loss_tracker.update_state(loss)
        self.agreement_tracker.update_state(tf.cast(tf.equal(tf.argmax(logits, axis=-1), target),
                                                    tf.float32))
        return {m.name: m.result() for m in self.metrics}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(),
                "denoiser": keras.saving.serialize_keras_object(self.denoiser),
                "classifier": keras.saving.serialize_keras_object(self.classifier),
                "sigma": self.sigma, "clip": self.clip, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StabilityTraining:
        config = dict(config)
        for key in ("denoiser", "classifier"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
