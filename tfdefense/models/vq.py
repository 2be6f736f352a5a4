"""VQ-VAE generator for CD-VAE (restricted ImageNet, CD-VAE §4): codebook layer and ``VQCDVAE``.

Vector quantisation (van den Oord et al. 2017, "Neural Discrete Representation
Learning", §3.1–3.2): the encoder's grid z_e(x) of d-dimensional vectors is
replaced position by position by the nearest of k codebook vectors e_j,

    z_q(x) = e_j,  j = argmin_j ‖z_e(x) − e_j‖²,

and the decoder reads z_q. The forward pass uses z_q; gradients pass
*straight through* to z_e (z_e + sg[z_q − z_e]). Eq. 3's two latent terms:

    codebook   = ‖sg[z_e(x)] − e‖²   (moves the codes; no gradient to the encoder)
    commitment = ‖z_e(x) − sg[e]‖²   (keeps the encoder near its codes)

each per example as the squared ℓ2 distance over the d code dimensions,
averaged over grid positions. CD-VAE's ImageNet objective (the authors'
answer on kai-wen-yang/CD-VAE issue #4, with d = 64 and k = 128):

    L = MSE(x, G(x)) + 0.1 · (codebook + 0.5 · commitment) + γ · CE(D(R(x)), y)

``VQCDVAE`` is ``CDVAE`` with one overridden hook, ``latent`` (no KL: the
latent loss is codebook + 0.5 · commitment, weighted by β = 0.1), so it trains
with the same ``train_step``/``test_step``; the loss key that the Gaussian
CD-VAE calls ``kl`` is logged as ``vq``. Optionally the codebook follows
exponential moving averages of its assigned encoder outputs instead of the
codebook loss (van den Oord et al. appendix A.1; decay 0.99, Laplace
smoothing ε = 1e-5).

Example:
    >>> import numpy as np
    >>> from tfdefense.models import VQCDVAE
    >>> from tfdefense import nets
    >>> model = VQCDVAE(nets.vq_encoder((32, 32, 3), d=4), nets.vq_decoder((32, 32, 3), d=4),
    ...                 nets.small_cnn((32, 32, 3), 9, width=4, dense_units=8), num_codes=8)
    >>> g, r = model.decompose(np.full((2, 32, 32, 3), 0.5, np.float32))
    >>> g.shape, float(abs(g + r - 0.5).numpy().max()) < 1e-5
    (TensorShape([2, 32, 32, 3]), True)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfdefense import data as data_lib
from tfdefense import nets
from tfdefense.models.cdvae import CDVAE
from tfdefense.validation import check_images

#: ImageNet per-channel (mean, std), the normalisation of torchvision / the robustness library
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: CD-VAE authors' ImageNet VQ-VAE settings (issue #4): k codes, latent weight, commitment weight
PAPER_NUM_CODES = 128
PAPER_VQ_WEIGHT = 0.1
PAPER_COMMITMENT_WEIGHT = 0.5


# ------------------------------------------------------------------ loss maths
def _per_example_mean(squared_distance: tf.Tensor) -> tf.Tensor:
    flat = tf.reshape(squared_distance, (tf.shape(squared_distance)[0], -1))
    return tf.reduce_mean(flat, axis=-1)


def codebook_loss(z_e: tf.Tensor, z_q: tf.Tensor) -> tf.Tensor:
    """‖sg[z_e] − z_q‖² over code dimensions, mean over positions; (N,). Eq. 3, 2nd term."""
    return _per_example_mean(tf.reduce_sum(tf.square(z_q - tf.stop_gradient(z_e)), axis=-1))


def commitment_loss(z_e: tf.Tensor, z_q: tf.Tensor) -> tf.Tensor:
    """‖z_e − sg[z_q]‖² over code dimensions, mean over positions; (N,). Eq. 3, 3rd term."""
    return _per_example_mean(tf.reduce_sum(tf.square(z_e - tf.stop_gradient(z_q)), axis=-1))


def nearest_code(z_e: tf.Tensor, codebook: tf.Tensor) -> tf.Tensor:
    """Index of the nearest code for every vector of ``z_e`` (..., d); codebook (k, d)."""
    flat = tf.reshape(z_e, (-1, tf.shape(codebook)[1]))
    distances = (tf.reduce_sum(tf.square(flat), 1, keepdims=True)
                 - 2.0 * tf.matmul(flat, codebook, transpose_b=True)
                 + tf.reduce_sum(tf.square(codebook), 1)[None, :])
    return tf.reshape(tf.argmin(distances, axis=1, output_type=tf.int32), tf.shape(z_e)[:-1])


# ------------------------------------------------------------------ the layer
@keras.saving.register_keras_serializable(package="tfdefense")
class VectorQuantizer(keras.layers.Layer):
    """Codebook of ``num_codes`` vectors of ``code_dim``; ``call(z_e) -> (z_st, codebook, commitment, idx)``.

    ``z_st`` equals z_q in the forward pass and passes gradients straight
    through to z_e; the two losses are per example (``codebook_loss``,
    ``commitment_loss``). Codes start at N(0, 0.02) (official code). With
    ``ema=True`` the codebook is not trained by gradients: in training calls
    each code moves to the exponential moving average of the encoder outputs
    assigned to it (van den Oord et al. appendix A.1), starting from a
    pseudo-count of one at its initial value. Computes in float32 under
    mixed precision.

    Args:
        num_codes: k, at least 2 (128 for CD-VAE's ImageNet VQ-VAE).
        code_dim: d, the encoder's channel count (64 on ImageNet).
        ema: EMA codebook updates instead of the codebook loss.
        decay: EMA decay γ (0.99, van den Oord et al.).
        epsilon: Laplace smoothing of the EMA cluster sizes (1e-5).
    """

    def __init__(self, num_codes: int = PAPER_NUM_CODES, code_dim: int = 64, ema: bool = False,
                 decay: float = 0.99, epsilon: float = 1e-5, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.ema = ema
        self.decay = decay
        self.epsilon = epsilon
        self._check_params()

    def _check_params(self) -> None:
        for name, low in (("num_codes", 2), ("code_dim", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if not isinstance(self.ema, bool):
            raise ValueError(f"ema: expected a bool, got {self.ema!r}")
        if not 0.0 < float(self.decay) < 1.0:
            raise ValueError(f"decay: expected a float in (0, 1), got {self.decay!r}")
        if not float(self.epsilon) > 0.0:
            raise ValueError(f"epsilon: expected a positive float, got {self.epsilon!r}")

    def build(self, input_shape):
        if input_shape[-1] is not None and int(input_shape[-1]) != self.code_dim:
            raise ValueError(f"z_e: expected {self.code_dim} channels (code_dim), got {input_shape[-1]}")
        init = keras.initializers.RandomNormal(0.0, 0.02)
        self.codebook = self.add_weight(shape=(self.num_codes, self.code_dim), initializer=init,
                                        trainable=not self.ema, name="codebook", aggregation="mean")
        if self.ema:
            self.ema_count = self.add_weight(shape=(self.num_codes,), initializer="ones",
                                             trainable=False, name="ema_count", aggregation="mean")
            self.ema_sum = self.add_weight(shape=(self.num_codes, self.code_dim), initializer="zeros",
                                           trainable=False, name="ema_sum", aggregation="mean")
            self.ema_sum.assign(self.codebook)

    def indices(self, z_e: tf.Tensor) -> tf.Tensor:
        """Nearest-code indices (N, h, w) of encoder outputs (N, h, w, d)."""
        return nearest_code(tf.cast(z_e, tf.float32), tf.convert_to_tensor(self.codebook))

    def call(self, z_e, training: bool = False):
        z_e = tf.cast(z_e, tf.float32)
        idx = self.indices(z_e)
        if training and self.ema:
            self._ema_update(z_e, idx)
        z_q = tf.gather(tf.convert_to_tensor(self.codebook), idx)
        z_st = z_e + tf.stop_gradient(z_q - z_e)  # straight-through estimator
        return z_st, codebook_loss(z_e, z_q), commitment_loss(z_e, z_q), idx

    def _ema_update(self, z_e, idx) -> None:
        flat = tf.reshape(tf.stop_gradient(z_e), (-1, self.code_dim))
        onehot = tf.one_hot(tf.reshape(idx, (-1,)), self.num_codes, dtype=tf.float32)
        count = self.decay * self.ema_count + (1.0 - self.decay) * tf.reduce_sum(onehot, 0)
        total = self.decay * self.ema_sum + (1.0 - self.decay) * tf.matmul(onehot, flat,
                                                                              transpose_a=True)
        n = tf.reduce_sum(count)
        smoothed = (count + self.epsilon) / (n + self.num_codes * self.epsilon) * n
        self.ema_count.assign(count)
        self.ema_sum.assign(total)
        self.codebook.assign(total / smoothed[:, None])

    def compute_output_spec(self, z_e, training=None):
        n, spatial = z_e.shape[0], tuple(z_e.shape[1:-1])
        return (keras.KerasTensor(z_e.shape, "float32"), keras.KerasTensor((n,), "float32"),
                keras.KerasTensor((n,), "float32"), keras.KerasTensor((n, *spatial), "int32"))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"num_codes": self.num_codes, "code_dim": self.code_dim, "ema": self.ema,
                       "decay": self.decay, "epsilon": self.epsilon})
        return config


# ------------------------------------------------------------------ the model
@keras.saving.register_keras_serializable(package="tfdefense")
class VQCDVAE(CDVAE):
    """CD-VAE with a VQ-VAE generator (restricted ImageNet, CD-VAE §4); overrides ``latent`` only.

    Args:
        encoder: functional model, normalised images → z_e (N, h, w, d).
        decoder: functional model, flattened z_q (N, h·w·d) → G(x), normalised scale.
        classifier: D, images → logits (ResNet-50 on ImageNet).
        num_codes: k (128, CD-VAE authors). The code dimension is the encoder's d.
        commitment_weight: weight of the commitment term inside the latent loss (0.5).
        ema, ema_decay, ema_epsilon: EMA codebook updates (``VectorQuantizer``).
        beta: weight of the latent loss codebook + 0.5·commitment (0.1, CD-VAE authors'
            ImageNet answer; the paper's β = 0.2 is the Gaussian VAE's KL weight).
        gamma: cross-entropy weight γ (2 the sweet spot; 2e-1 for the ImageNet grey-box defense).
        **kwargs: the rest of ``CDVAE``'s arguments.
    """

    def __init__(self, encoder: keras.Model, decoder: keras.Model, classifier: keras.Model,
                 num_codes: int = PAPER_NUM_CODES, commitment_weight: float = PAPER_COMMITMENT_WEIGHT,
                 ema: bool = False, ema_decay: float = 0.99, ema_epsilon: float = 1e-5,
                 beta: float = PAPER_VQ_WEIGHT, gamma: float = 2.0, **kwargs):
        super().__init__(encoder, decoder, classifier, beta=beta, gamma=gamma, **kwargs)
        self.num_codes = num_codes
        self.commitment_weight = commitment_weight
        self.ema = ema
        self.ema_decay = ema_decay
        self.ema_epsilon = ema_epsilon
        self._check_vq_params()
        self.quantizer = VectorQuantizer(num_codes, self.code_dim, ema=ema, decay=ema_decay,
                                         epsilon=ema_epsilon, name="quantizer")
        self.quantizer.build(encoder.output_shape)
        self.kl_tracker = keras.metrics.Mean(name="vq")  # the latent loss is not a KL here

    def _check_vq_params(self) -> None:
        from tfdefense.validation import check_number

        check_number(self.commitment_weight, "commitment_weight", low=0.0)
        out = self.encoder.output_shape
        if not isinstance(out, tuple) or len(out) != 4:
            raise ValueError(f"encoder: expected one output z_e of shape (N, h, w, d), got {out}")
        grid = int(np.prod(out[1:]))
        if self.decoder.input_shape[-1] != grid or len(self.decoder.input_shape) != 2:
            raise ValueError(
                f"decoder: expected input (N, {grid}) = the encoder's flattened grid {out[1:]} "
                f"(same d and resolution), got {self.decoder.input_shape}"
            )

    @property
    def code_dim(self) -> int:
        """d, the code dimension (the encoder's channel count)."""
        return int(self.encoder.output_shape[-1])

    @classmethod
    def for_dataset(cls, name: str, *, latent_dim: int | None = None, width: int | None = None,
                    classifier: str | keras.Model = "auto", wrn_depth: int = 28, wrn_width: int = 10,
                    resnet_weights: str | None = None, **kwargs: Any) -> VQCDVAE:
        """A VQ CD-VAE for a dataset of ``tfdefense.data``: the official ImageNet VQ-VAE and ResNet-50.

        ``width`` (or ``latent_dim``, which must then agree) is the code
        dimension d (64); ``classifier`` is ``"auto"``/``"resnet50"``
        (``nets.resnet50`` with ``resnet_weights``), ``"wrn"``, ``"small_cnn"``
        or a Keras model. Same keyword arguments as ``CDVAE.for_dataset``.
        """
        if latent_dim is not None and width is not None and latent_dim != width:
            raise ValueError(f"latent_dim and width: the VQ-VAE's code dimension is its channel "
                             f"width d, so they must agree, got {latent_dim} and {width}")
        d = width or latent_dim or nets.vq_nets.IMAGENET_D
        spec = data_lib.spec(name)
        shape = spec.shape
        enc, dec = nets.vq_encoder(shape, d=d), nets.vq_decoder(shape, d=d)
        if classifier in ("auto", "resnet50"):
            clf = nets.resnet50(shape, spec.num_classes, weights=resnet_weights, name="classifier")
        elif classifier == "small_cnn":
            clf = nets.small_cnn(shape, spec.num_classes, name="classifier")
        elif classifier == "wrn":
            clf = nets.wide_resnet(shape, spec.num_classes, depth=wrn_depth, width=wrn_width,
                                   name="classifier")
        elif isinstance(classifier, keras.Model):
            clf = classifier
        else:
            raise ValueError("classifier: expected 'auto', 'resnet50', 'small_cnn', 'wrn' or a "
                             f"keras.Model, got {classifier!r}")
        mean, std = IMAGENET_NORMALIZATION
        kwargs.setdefault("normalization_mean", mean[: shape[-1]] if shape[-1] == 3 else (0.5,))
        kwargs.setdefault("normalization_std", std[: shape[-1]] if shape[-1] == 3 else (0.5,))
        return cls(enc, dec, clf, **kwargs)

    # ------------------------------------------------------------ the hook
    def encode(self, x: tf.Tensor, training: bool = False):
        """(z_e, z_q straight-through, codebook loss, commitment loss, code indices) of images."""
        z_e = tf.cast(self.encoder(self.normalize(x), training=training), tf.float32)
        z_st, cb, commit, idx = self.quantizer(z_e, training=training)
        return z_e, z_st, cb, commit, idx

    def latent(self, x: tf.Tensor, training: bool = False, sample: bool | None = None):
        """(flattened z_q, per-example codebook + 0.5·commitment): the VQ-VAE's answer to the hook.

        The VQ posterior is deterministic (one-hot on the nearest code, van den
        Oord et al. §3.1), so ``sample`` changes nothing. With EMA updates the
        codebook term is left out (the codebook does not learn by gradient).
        """
        _, z_st, cb, commit, _ = self.encode(x, training=training)
        loss = self.commitment_weight * commit + (0.0 if self.ema else cb)
        return tf.reshape(z_st, (tf.shape(z_st)[0], -1)), loss

    def posterior(self, x: tf.Tensor, training: bool = False):
        """q(z|x) as a TFP ``Deterministic`` at the flattened z_q (the VQ posterior is one-hot)."""
        z, _ = self.latent(x, training=training)
        return tfp.distributions.Deterministic(loc=z)

    def codebook_usage(self, x, batch_size: int = 64) -> dict[str, float]:
        """How many codes the images use: ``{"codes_used", "fraction_used", "perplexity"}``.

        Perplexity is exp(entropy) of the code histogram over every grid
        position (k when all codes are equally used, 1 when one code is).
        """
        x = check_images(x, "x", shape=self.input_shape_)
        counts = np.zeros(self.num_codes, np.int64)
        for i in range(0, len(x), batch_size):
            idx = self.encode(tf.constant(x[i:i + batch_size]))[-1].numpy()
            counts += np.bincount(idx.ravel(), minlength=self.num_codes)
        p = counts / counts.sum()
        entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
        used = int(np.count_nonzero(counts))
        return {"codes_used": used, "fraction_used": used / self.num_codes,
                "perplexity": float(np.exp(entropy))}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"num_codes": self.num_codes, "commitment_weight": self.commitment_weight,
                       "ema": self.ema, "ema_decay": self.ema_decay, "ema_epsilon": self.ema_epsilon})
        return config
