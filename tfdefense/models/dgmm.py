"""DGMM: a network x -> z_u whose features follow a class-conditional Gaussian mixture.

FM-Defense §III-D, stage 1 of the combo-VAE: the class-unique features z_u
(K of them) follow p(z_u) = Σ_c N(z_u; μ_c, Σ_c) p(c) (Eq 9) with learned
means μ_c and diagonal covariances Σ_c and a uniform p(c) = 1/C. The loss is
the large-margin Gaussian-mixture loss of Wan et al. 2018 (the paper's [23]):

    L_GM = L_cls + λ_lkd · L_lkd                                    (Eq 12)
    L_cls = −log N(z; μ_y, Σ_y) / Σ_k N(z; μ_k, Σ_k)                (Eq 10)
    L_lkd = −log N(z; μ_y, Σ_y)                                     (Eq 11)

with λ_lkd = 0.1 (§IV-A). L-GM's margin α multiplies the true class's
Mahalanobis term d_y = ½ (z − μ_y)ᵀ Σ_y⁻¹ (z − μ_y) by (1 + α) inside L_cls
only (α = 0 reproduces Eq 10; the L-GM paper uses α ≈ 0.1–1); its
identity-covariance option fixes Σ_c = I. The mixture is exposed as a TFP
``MixtureSameFamily`` (``DGMM.mixture()``); the loss itself is the pure
function ``lgm_loss``, tested against that distribution.

Choices where the paper is silent: diagonal Σ_c (as L-GM); L_lkd keeps
the constant ½K log 2π so that it equals −log N exactly (it does not change
gradients); means are initialised N(0, 1), log-scales at 0.

Example:
    >>> import numpy as np
    >>> from tfdefense.models import DGMM
    >>> model = DGMM.for_dataset("mnist_5k", feature_dim=10)
    >>> model.compile(optimizer="adam")
    >>> x = np.random.default_rng(0).random((8, 28, 28, 1), dtype="float32")
    >>> y = np.arange(8) % 10
    >>> _ = model.fit(x, y, epochs=1, verbose=0)
    >>> model.predict_labels(x).shape, model.encode(x).shape
    ((8,), TensorShape([8, 10]))
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfdefense.models import input_checks
from tfdefense.validation import check_images, check_number, check_positive_int

tfd = tfp.distributions


def gm_log_likelihoods(z: tf.Tensor, means: tf.Tensor, log_scales: tf.Tensor) -> tf.Tensor:
    """log N(z; μ_c, diag exp(2·log_scales_c)) for every class c; (N, K) -> (N, C). Eq 9."""
    scales = tf.exp(log_scales)
    diff = (z[:, None, :] - means[None]) / scales[None]
    k = tf.cast(tf.shape(z)[-1], z.dtype)
    return (-0.5 * tf.reduce_sum(tf.square(diff), -1) - tf.reduce_sum(log_scales, -1)[None]
            - 0.5 * k * math.log(2.0 * math.pi))


def gm_logits(
    z: tf.Tensor,
    means: tf.Tensor,
    log_scales: tf.Tensor,
    labels: tf.Tensor | None = None,
    margin: float = 0.0,
) -> tf.Tensor:
    """Class logits log N(z; μ_c, Σ_c) + log p(c) (uniform p(c) drops out), (N, C).

    With ``labels`` and ``margin`` α > 0 the true class's Mahalanobis term is
    scaled by (1 + α) (L-GM, Wan et al. 2018, Eq 9 there).
    """
    ll = gm_log_likelihoods(z, means, log_scales)
    if labels is None or margin == 0.0:
        return ll
    scales = tf.exp(log_scales)
    d = 0.5 * tf.reduce_sum(tf.square((z[:, None, :] - means[None]) / scales[None]), -1)
    onehot = tf.one_hot(labels, tf.shape(means)[0], dtype=z.dtype)
    return ll - margin * onehot * d


def lgm_loss(
    z: tf.Tensor,
    labels: tf.Tensor,
    means: tf.Tensor,
    log_scales: tf.Tensor,
    lambda_lkd: float = 0.1,
    margin: float = 0.0,
) -> dict[str, tf.Tensor]:
    """Per-example L_GM = L_cls + λ_lkd·L_lkd (Eq 10–12); dict of (N,) tensors.

    Keys: ``loss``, ``cls_loss`` (Eq 10, with L-GM margin α), ``lkd_loss`` (Eq 11).
    """
    labels = tf.cast(labels, tf.int64)
    ll = gm_log_likelihoods(z, means, log_scales)
    logits = gm_logits(z, means, log_scales, labels, margin)
    cls = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    lkd = -tf.gather(ll, labels, axis=1, batch_dims=1)
    return {"loss": cls + lambda_lkd * lkd, "cls_loss": cls, "lkd_loss": lkd}


@keras.saving.register_keras_serializable(package="tfdefense")
class DGMM(keras.Model):
    """Deep Gaussian-mixture model: ``encode(x) -> z_u``, ``call(x) -> class logits``.

    Args:
        network: a Keras model x -> z_u of shape (N, K) (``nets.fm_dgmm_network``).
        num_classes: C.
        lambda_lkd: λ_lkd of Eq 12 (0.1, §IV-A).
        margin: L-GM margin α (0: Eq 10 as printed).
        identity_covariance: fix Σ_c = I (L-GM's simplified variant).
        seed: seed of the mean initialisation.
    """

    def __init__(
        self,
        network: keras.Model,
        num_classes: int = 10,
        lambda_lkd: float = 0.1,
        margin: float = 0.0,
        identity_covariance: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(network, keras.Model):
            raise ValueError(f"network: expected a keras.Model, got {type(network).__name__}")
        self.network = network
        self.num_classes = num_classes
        self.lambda_lkd = lambda_lkd
        self.margin = margin
        self.identity_covariance = identity_covariance
        self.seed = seed
        self._check_params()
        self.feature_dim = int(network.output_shape[-1])
        self.input_shape_ = tuple(network.input_shape[1:])
        self.means = self.add_weight(
            shape=(num_classes, self.feature_dim), name="means",
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed))
        self.log_scales = self.add_weight(
            shape=(num_classes, self.feature_dim), name="log_scales", initializer="zeros",
            trainable=not identity_covariance)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.cls_tracker = keras.metrics.Mean(name="cls_loss")
        self.lkd_tracker = keras.metrics.Mean(name="lkd_loss")
        self.acc_tracker = keras.metrics.Mean(name="accuracy")
        self.built = True

    def _check_params(self) -> None:
        check_positive_int(self.num_classes, "num_classes", minimum=2)
        check_number(self.lambda_lkd, "lambda_lkd", low=0.0)
        check_number(self.margin, "margin", low=0.0)
        if not isinstance(self.identity_covariance, bool):
            raise ValueError(
                f"identity_covariance: expected a bool, got {self.identity_covariance!r}")
        if len(self.network.output_shape) != 2:
            raise ValueError(
                f"network: expected output (N, K), got {self.network.output_shape}")

    @classmethod
    def for_dataset(cls, name: str = "mnist_5k", feature_dim: int = 10, **kwargs: Any) -> DGMM:
        """A DGMM with Table I's network for a dataset of ``tfdefense.data``."""
        from tfdefense import data
        from tfdefense.nets import fm_dgmm_network

        spec = data.spec(name)
        return cls(fm_dgmm_network(spec.shape, feature_dim), num_classes=spec.num_classes,
                   **kwargs)

    def build(self, input_shape=None) -> None:
        self.built = True

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.cls_tracker, self.lkd_tracker, self.acc_tracker]

    def encode(self, x, training: bool = False) -> tf.Tensor:
        """z_u, the K class-unique features, (N, K)."""
        return self.network(x, training=training)

    def call(self, x, training: bool = False) -> tf.Tensor:
        """Class logits log q(c|z_u) up to a constant (no margin), (N, C)."""
        return gm_logits(self.encode(x, training), self.means, self._log_scales())

    def _log_scales(self) -> tf.Tensor:
        if self.identity_covariance:
            return tf.zeros_like(self.means)
        return self.log_scales

    def mixture(self) -> tfd.MixtureSameFamily:
        """p(z_u) of Eq 9 as a TFP ``MixtureSameFamily`` with uniform p(c)."""
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.zeros(self.num_classes)),
            components_distribution=tfd.MultivariateNormalDiag(
                loc=tf.convert_to_tensor(self.means),
                scale_diag=tf.exp(self._log_scales())),
        )

    def class_means(self, labels) -> tf.Tensor:
        """μ_c for each label, (N, K)."""
        return tf.gather(self.means, tf.cast(labels, tf.int64))

    def predict_labels(self, x, batch_size: int = 256) -> np.ndarray:
        """argmax_c q(c|z_u) for images in [0, 1]; int64 (N,)."""
        x = check_images(x, "x", shape=self.input_shape_)
        logits = self.predict(x, batch_size=batch_size, verbose=0)
        return np.argmax(logits, axis=-1).astype(np.int64)

    def _terms(self, x, y, training: bool) -> dict[str, tf.Tensor]:
        z = self.encode(x, training=training)
        terms = lgm_loss(z, y, self.means, self._log_scales(), self.lambda_lkd, self.margin)
        pred = tf.argmax(gm_logits(z, self.means, self._log_scales()), -1)
        terms["accuracy"] = tf.cast(tf.equal(pred, tf.cast(y, tf.int64)), tf.float32)
        return terms

    def _update(self, terms: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        for tracker, key in zip(self.metrics, ("loss", "cls_loss", "lkd_loss", "accuracy"),
                                strict=True):
            tracker.update_state(tf.reduce_mean(terms[key]))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = input_checks.unpack(data)
        x, y = input_checks.checked_batch(x, y, self.input_shape_, self.num_classes)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self._terms(x, y, training=True)
            scaled = tf.reduce_mean(terms["loss"]) / replicas
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return self._update(terms)

    def test_step(self, data):
        x, y = input_checks.unpack(data)
        x, y = input_checks.checked_batch(x, y, self.input_shape_, self.num_classes)
        return self._update(self._terms(x, y, training=False))

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        """``keras.Model.fit`` after checking the first batch (``ValueError`` on bad input)."""
        input_checks.check_fit_inputs(x, y, self.input_shape_, self.num_classes)
        if validation_data is not None and not isinstance(validation_data, tf.data.Dataset):
            vx, vy = validation_data[:2]
            input_checks.check_fit_inputs(vx, vy, self.input_shape_, self.num_classes,
                                          name="validation_data")
        with input_checks.translate_input_errors():
            return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "network": keras.saving.serialize_keras_object(self.network),
            "num_classes": self.num_classes,
            "lambda_lkd": self.lambda_lkd,
            "margin": self.margin,
            "identity_covariance": self.identity_covariance,
            "seed": self.seed,
        })
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> DGMM:
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(
            config["network"], custom_objects=custom_objects)
        return cls(**config)
