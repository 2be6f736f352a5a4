"""ComboVAE: FM-Defense's combo-VAE, z = [z_s, z_u], with a FactorVAE total-correlation term.

FM-Defense §III-B and §III-D. The encoder E_s gives a Normal posterior
q_φ(z_s|x) over m class-shared codes (20 MNIST, 10 FMNIST); a frozen, already
trained ``DGMM`` gives the class-unique features z_u; the decoder
reconstructs x from [z_s, z_u]. Training is two-stage (§III-D): stage 1 fits
the DGMM (``DGMM.fit``), stage 2 fits encoder, decoder and TC discriminator
(``ComboVAE.fit``). The objective of stage 2 (Eq 8, written as a loss):

    L = L_R + β·L_KL + γ·L_TC,   γ = 40 (§IV-A), β = 1 (Eq 8 has none)

with the gradient routing of §III-B: the encoder descends L_KL + L_R + γ·L_TC,
the decoder L_R (the other terms do not depend on it), and the discriminator
D_υ its own loss −½[log D(z) + log(1 − D(permute_dims(z')))] with its own
optimizer. L_TC = E[log D(z)/(1 − D(z))] (Eq 6) is read off the
discriminator's logit.

Choices where the paper is silent (parameters or documented):

* L_R is "the l2 loss" (§III-B): the per-image sum of squared errors
  (``reconstruction="l2"``); ``"bernoulli"`` is FactorVAE's choice;
* the permuted batch B' is the same batch's (detached) codes, permuted per
  dimension, as disentanglement_lib's FactorVAE does;
* ``zu_mode="features"`` feeds the DGMM's features z_u(x) to the decoder;
  ``"class_mean"`` feeds μ_ĉ of the DGMM's most likely class ĉ ("DGMM will
  output the K-dimensional feature vector of the most likely class of x");
* the discriminator is optional: ``None`` (with γ ignored) is the paper's
  "basic combo-VAE without optimization strategies" used for faces;
* the latent can be a vector (N, m) or a feature map (N, h, w, m) — the face
  variant, whose latent factors are channels; KL sums over all elements;
* optimizers default to FactorVAE's: Adam(1e-4) for the VAE, Adam(1e-4,
  β1 = 0.5, β2 = 0.9) for the discriminator.

Example:
    >>> import numpy as np, keras
    >>> from tfdefense.models import DGMM, ComboVAE
    >>> dgmm = DGMM.for_dataset("mnist_5k")
    >>> vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=20, discriminator_units=64,
    ...                            discriminator_depth=2)
    >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> x = np.random.default_rng(0).random((8, 28, 28, 1), dtype="float32")
    >>> _ = vae.fit(x, epochs=1, batch_size=8, verbose=0)
    >>> vae.reconstruct(x).shape
    TensorShape([8, 28, 28, 1])
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfdefense.models.dgmm import DGMM
from tfdefense.validation import check_images, check_number

tfd = tfp.distributions

RECONSTRUCTIONS = ("l2", "bernoulli")
ZU_MODES = ("features", "class_mean")


def _flat(t: tf.Tensor) -> tf.Tensor:
    return tf.reshape(t, (tf.shape(t)[0], -1))


def gaussian_kl(mean: tf.Tensor, log_var: tf.Tensor) -> tf.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over all latent elements, per example (N,). L_KL of Eq 8."""
    kl = 0.5 * (tf.square(mean) + tf.exp(log_var) - 1.0 - log_var)
    return tf.reduce_sum(_flat(kl), -1)


def reconstruction_loss(x: tf.Tensor, x_hat: tf.Tensor, kind: str = "l2") -> tf.Tensor:
    """L_R per example (N,): sum of squared errors (``"l2"``, §III-B) or Bernoulli NLL."""
    if kind == "l2":
        return tf.reduce_sum(_flat(tf.square(x - x_hat)), -1)
    if kind == "bernoulli":
        p = tf.clip_by_value(x_hat, 1e-6, 1.0 - 1e-6)
        return -tf.reduce_sum(_flat(x * tf.math.log(p) + (1.0 - x) * tf.math.log(1.0 - p)), -1)
    raise ValueError(f"reconstruction: expected one of {RECONSTRUCTIONS}, got {kind!r}")


def permute_dims(z: tf.Tensor, seed=None) -> tf.Tensor:
    """Permute each dimension of z (N, d) independently across the batch: a sample of q̄(z).

    FactorVAE's ``permute_dims`` (Kim & Mnih 2018, Alg. 1); ``seed`` is a
    ``keras.random.SeedGenerator`` or an int.
    """
    keys = keras.random.uniform(tf.shape(z), seed=seed)
    order = tf.argsort(keys, axis=0)
    return tf.transpose(tf.gather(tf.transpose(z), tf.transpose(order), batch_dims=1))


def tc_estimate(logits: tf.Tensor) -> tf.Tensor:
    """L_TC per example: log D(z)/(1 − D(z)) = the discriminator's logit (Eq 6), (N,)."""
    return tf.reshape(logits, (-1,))


def discriminator_loss(logits_q: tf.Tensor, logits_perm: tf.Tensor) -> tf.Tensor:
    """−½[log D(z) + log(1 − D(z̃))] per pair, (N,): D's loss of §III-B, D = sigmoid(logit)."""
    lq = tf.reshape(logits_q, (-1,))
    lp = tf.reshape(logits_perm, (-1,))
    return 0.5 * (tf.nn.softplus(-lq) + tf.nn.softplus(lp))


@keras.saving.register_keras_serializable(package="tfdefense")
class ComboVAE(keras.Model):
    """Combo-VAE: ``encode(x) -> (μ, log σ²)`` of z_s, ``reconstruct(x)``; ``call`` = reconstruct.

    Args:
        encoder: x -> concat(mean, log-variance) of z_s on the last axis, (N, 2m)
            or (N, h, w, 2m) (``nets.fm_encoder``, ``nets.fm_face_encoder``).
        decoder: [z_s, z_u] -> images in [0, 1] (``nets.fm_decoder``).
        dgmm: a trained ``DGMM`` giving z_u; frozen here (stage 2).
        discriminator: z_s flattened (N, d) -> logit (``nets.tc_discriminator``),
            or None for no TC term.
        gamma: γ, weight of L_TC (40, §IV-A).
        beta: weight of L_KL (1: Eq 8).
        reconstruction: ``"l2"`` (§III-B) or ``"bernoulli"``.
        zu_mode: ``"features"`` or ``"class_mean"`` (see module docstring).
        seed: seed of the reparameterisation and permutation noise.
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        dgmm: DGMM,
        discriminator: keras.Model | None = None,
        gamma: float = 40.0,
        beta: float = 1.0,
        reconstruction: str = "l2",
        zu_mode: str = "features",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.dgmm = dgmm
        self.discriminator = discriminator
        self.gamma = gamma
        self.beta = beta
        self.reconstruction = reconstruction
        self.zu_mode = zu_mode
        self.seed = seed
        self._check_params()
        self.dgmm.trainable = False
        self.input_shape_ = tuple(encoder.input_shape[1:])
        self.latent_shape = tuple(encoder.output_shape[1:-1]) + (encoder.output_shape[-1] // 2,)
        self.latent_dim = self.latent_shape[-1]
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.discriminator_optimizer = None
        names = ("loss", "reconstruction_loss", "kl_loss", "tc_loss", "discriminator_loss",
                 "discriminator_accuracy")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.built = True

    def _check_params(self) -> None:
        for name in ("encoder", "decoder"):
            if not isinstance(getattr(self, name), keras.Model):
                raise ValueError(f"{name}: expected a keras.Model, "
                                 f"got {type(getattr(self, name)).__name__}")
        if not isinstance(self.dgmm, DGMM):
            raise ValueError(f"dgmm: expected a tfdefense DGMM, got {type(self.dgmm).__name__}")
        if self.discriminator is not None and not isinstance(self.discriminator, keras.Model):
            raise ValueError("discriminator: expected a keras.Model or None, "
                             f"got {type(self.discriminator).__name__}")
        check_number(self.gamma, "gamma", low=0.0)
        check_number(self.beta, "beta", low=0.0)
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction: expected one of {RECONSTRUCTIONS}, "
                             f"got {self.reconstruction!r}")
        if self.zu_mode not in ZU_MODES:
            raise ValueError(f"zu_mode: expected one of {ZU_MODES}, got {self.zu_mode!r}")
        if self.encoder.output_shape[-1] % 2:
            raise ValueError("encoder: expected an even number of outputs on the last axis "
                             f"(mean and log-variance), got {self.encoder.output_shape}")
        if tuple(self.encoder.input_shape[1:]) != tuple(self.dgmm.input_shape_):
            raise ValueError(f"dgmm: expects images {self.dgmm.input_shape_}, the encoder "
                             f"{tuple(self.encoder.input_shape[1:])}")
        dec_in = self.decoder.input_shape
        if not isinstance(dec_in, list) or len(dec_in) != 2:
            raise ValueError(f"decoder: expected two inputs [z_s, z_u], got {dec_in}")
        if dec_in[1][-1] != self.dgmm.feature_dim:
            raise ValueError(f"decoder: expects z_u of width {dec_in[1][-1]}, "
                             f"the DGMM gives {self.dgmm.feature_dim}")

    @classmethod
    def for_dataset(
        cls,
        name: str,
        dgmm: DGMM,
        latent_dim: int = 20,
        discriminator_units: int = 1000,
        discriminator_depth: int = 6,
        **kwargs: Any,
    ) -> ComboVAE:
        """Table I's encoder and decoder for a ``tfdefense.data`` dataset, FactorVAE's D."""
        from tfdefense import data
        from tfdefense.nets import fm_decoder, fm_encoder, tc_discriminator

        spec = data.spec(name)
        return cls(
            fm_encoder(spec.shape, latent_dim),
            fm_decoder(latent_dim, dgmm.feature_dim, spec.shape),
            dgmm,
            tc_discriminator(latent_dim, discriminator_units, discriminator_depth),
            **kwargs,
        )

    def build(self, input_shape=None) -> None:
        self.built = True

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def compile(self, optimizer: Any = None, discriminator_optimizer: Any = None,
                **kwargs: Any) -> None:
        """``keras.Model.compile`` plus the discriminator's own optimizer (FactorVAE defaults)."""
        if optimizer is None:
            optimizer = keras.optimizers.Adam(1e-4)
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.encoder.trainable_variables + self.decoder.trainable_variables)
        if self.discriminator is not None:
            if discriminator_optimizer is None:
                discriminator_optimizer = keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.9)
            self.discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self) -> dict[str, Any] | None:
        config = super().get_compile_config()
        if config is not None and self.discriminator_optimizer is not None:
            config["discriminator_optimizer"] = keras.saving.serialize_keras_object(
                self.discriminator_optimizer)
        return config

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Re-compile on ``keras.models.load_model`` (both optimizers, their state restored)."""
        config = keras.saving.deserialize_keras_object(dict(config))
        self.compile(**config)

    # -- the model's maths -------------------------------------------------------------

    def encode(self, x, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """(μ, log σ²) of q_φ(z_s|x), each (N, m) or (N, h, w, m)."""
        out = self.encoder(x, training=training)
        return out[..., : self.latent_dim], out[..., self.latent_dim:]

    def posterior(self, x) -> tfd.Distribution:
        """q_φ(z_s|x) as a TFP distribution (event = all latent elements)."""
        mean, log_var = self.encode(x)
        return tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * log_var)),
                               reinterpreted_batch_ndims=len(self.latent_shape))

    def class_unique(self, x) -> tf.Tensor:
        """z_u from the frozen DGMM, (N, K), per ``zu_mode``."""
        z_u = self.dgmm.encode(x, training=False)
        if self.zu_mode == "class_mean":
            logits = self.dgmm(x, training=False)
            z_u = self.dgmm.class_means(tf.argmax(logits, -1))
        return tf.stop_gradient(z_u)

    def decode(self, z_s, z_u, training: bool = False) -> tf.Tensor:
        """Images in [0, 1] from [z_s, z_u]."""
        return self.decoder([z_s, z_u], training=training)

    def call(self, x, training: bool = False) -> tf.Tensor:
        """The deterministic reconstruction D([μ(x), z_u(x)]), the purifier of §III-D."""
        mean, _ = self.encode(x, training=training)
        return self.decode(mean, self.class_unique(x), training=training)

    def reconstruct(self, x, batch_size: int = 256) -> tf.Tensor:
        """Purified images for a batch in [0, 1] (validated; ``ValueError`` on bad input)."""
        x = check_images(x, "x", shape=self.input_shape_)
        outs = [self(x[i: i + batch_size]) for i in range(0, len(x), batch_size)]
        return tf.concat(outs, 0)

    def _terms(self, x, training: bool) -> dict[str, tf.Tensor]:
        mean, log_var = self.encode(x, training=training)
        eps = keras.random.normal(tf.shape(mean), seed=self.seed_generator)
        z = mean + tf.exp(0.5 * log_var) * eps
        x_hat = self.decode(z, self.class_unique(x), training=training)
        rec = reconstruction_loss(x, x_hat, self.reconstruction)
        kl = gaussian_kl(mean, log_var)
        terms = {"reconstruction_loss": rec, "kl_loss": kl, "z": z}
        if self.discriminator is not None:
            tc = tc_estimate(self.discriminator(_flat(z), training=training))
        else:
            tc = tf.zeros_like(rec)
        terms["tc_loss"] = tc
        terms["loss"] = rec + self.beta * kl + (self.gamma * tc if self.discriminator else 0.0)
        return terms

    def _discriminator_terms(self, z: tf.Tensor, training: bool):
        z = tf.stop_gradient(_flat(z))
        lq = self.discriminator(z, training=training)
        lp = self.discriminator(permute_dims(z, self.seed_generator), training=training)
        acc = 0.5 * (tf.cast(tf.reshape(lq, (-1,)) > 0, tf.float32)
                     + tf.cast(tf.reshape(lp, (-1,)) < 0, tf.float32))
        return discriminator_loss(lq, lp), acc

    def _images(self, data) -> tf.Tensor:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if x.shape.rank != 4 or tuple(x.shape[1:]) != self.input_shape_:
            raise ValueError(f"images: expected shape (N, {self.input_shape_}), got {x.shape}")
        return tf.cast(x, tf.float32)

    def _update(self, terms, d_loss, d_acc) -> dict[str, tf.Tensor]:
        values = {k: tf.reduce_mean(terms[k]) for k in
                  ("loss", "reconstruction_loss", "kl_loss", "tc_loss")}
        values["discriminator_loss"] = tf.reduce_mean(d_loss)
        values["discriminator_accuracy"] = tf.reduce_mean(d_acc)
        for k, v in values.items():
            self.trackers[k].update_state(v)
        return {k: t.result() for k, t in self.trackers.items()}

    def train_step(self, data):
        x = self._images(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self._terms(x, training=True)
            scaled = tf.reduce_mean(terms["loss"]) / replicas
        variables = self.encoder.trainable_variables + self.decoder.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        if self.discriminator is None:
            return self._update(terms, tf.zeros(()), tf.zeros(()))
        if self.discriminator_optimizer is None:
            raise ValueError("compile() the ComboVAE before fit: the discriminator needs "
                             "its optimizer")
        with tf.GradientTape() as d_tape:
            d_loss, d_acc = self._discriminator_terms(terms["z"], training=True)
            d_scaled = tf.reduce_mean(d_loss) / replicas
        d_vars = self.discriminator.trainable_variables
        self.discriminator_optimizer.apply(d_tape.gradient(d_scaled, d_vars), d_vars)
        return self._update(terms, d_loss, d_acc)

    def test_step(self, data):
        x = self._images(data)
        terms = self._terms(x, training=False)
        if self.discriminator is None:
            return self._update(terms, tf.zeros(()), tf.zeros(()))
        d_loss, d_acc = self._discriminator_terms(terms["z"], training=False)
        return self._update(terms, d_loss, d_acc)

    def fit(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.fit`` on images (labels, if given, are ignored); checks the first batch."""
        if isinstance(x, tf.data.Dataset):
            first = next(iter(x.take(1)), None)
            if first is None:
                raise ValueError("x: the dataset is empty (0 batches)")
            first = first[0] if isinstance(first, tuple | list) else first
            check_images(np.asarray(first), "x (first batch)", shape=self.input_shape_)
        else:
            check_images(x, "x", shape=self.input_shape_)
        return super().fit(x, y, *args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        ser = keras.saving.serialize_keras_object
        config.update({
            "encoder": ser(self.encoder),
            "decoder": ser(self.decoder),
            "dgmm": ser(self.dgmm),
            "discriminator": None if self.discriminator is None else ser(self.discriminator),
            "gamma": self.gamma,
            "beta": self.beta,
            "reconstruction": self.reconstruction,
            "zu_mode": self.zu_mode,
            "seed": self.seed,
        })
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> ComboVAE:
        config = dict(config)
        for key in ("encoder", "decoder", "dgmm", "discriminator"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects)
        return cls(**config)
