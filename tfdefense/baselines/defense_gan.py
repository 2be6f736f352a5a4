"""``DefenseGAN``: project the input onto the generator's range, classify that.

Samangouei et al. 2018 ("Defense-GAN", §3.3, Fig. 2): for an input x, run L
steps of gradient descent on ``||G(z) - x||²`` from R random starting codes,
keep the code with the smallest error, classify ``G(z*)``. Paper defaults
L = 200, R = 10 (Table 1's MNIST setting; official ``mnist.yml`` REC_ITERS,
REC_RR). The optimiser follows the official code (``models/gan.py``,
``reconstruct``): momentum 0.7, learning rate 10 (REC_LR) divided by 10 after
80% of the steps, starting codes ~ N(0, I / latent_dim), per-image error the
mean squared pixel difference.

All R restarts of a batch run in one graph: the batch is tiled R times and the
R·B codes descend together (the losses are summed, so each code's gradient is
its own). ``project(..., batched=False)`` runs the same descent restart by
restart, from the same starting codes, for comparison
(``bench/defense_gan_projection.py``).

Starting codes: with an integer ``seed`` (the default) the R starting codes are
drawn once from ``seed`` and every image starts from the same R codes, so the
projection of an image depends on the image alone, not on its batch or its
position in it: ``predict``, ``project``, the serving ``defend`` signature and an
attacker's forward pass all see the same defense, which is deterministic
(``stochastic = False``). With ``seed=None`` every call draws fresh codes for
every image (the official code's behaviour): ``stochastic = True`` and an attacker
averages over draws (``tfdefense.attacks.eot``).

As a ``Defense``: ``defend(x)`` classifies the projection in one graph and accepts
every input (the projection is applied unconditionally, so it is part of the
classifier; Defense-GAN never rejects). ``logits(x)`` is the adaptive attacker's
path: the projection has no useful gradient (an L-step optimisation), so it is
wrapped in ``bpda`` (``tfdefense.perturbation``) with the identity as its gradient (BPDA,
Athalye et al. 2018 §4.1, the attack that broke Defense-GAN).

Example:
    >>> import numpy as np
    >>> from tfdefense.baselines import DefenseGAN, defense_gan_generator
    >>> from tfdefense.nets import small_cnn
    >>> dgan = DefenseGAN(defense_gan_generator(latent_dim=8, width=4),
    ...                   small_cnn(width=4, dense_units=8), iterations=5, restarts=2)
    >>> x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    >>> dgan.project(x, progress=False).shape
    (3, 28, 28, 1)
    >>> labels, decisions = dgan.predict_with_decisions(x)
    >>> labels.shape, decisions.tolist()
    ((3,), [0, 0, 0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfdefense.defend.base import Defense, register_defense
from tfdefense.perturbation import bpda
from tfdefense.validation import check_images, check_number, check_positive_int

#: gradient-descent steps L (Samangouei et al. 2018, MNIST; official mnist.yml)
PAPER_ITERATIONS = 200
#: random restarts R (Samangouei et al. 2018, MNIST; official mnist.yml)
PAPER_RESTARTS = 10
#: projection learning rate (official mnist.yml REC_LR)
PAPER_LEARNING_RATE = 10.0
#: projection momentum (official models/gan.py)
PAPER_MOMENTUM = 0.7
#: the learning rate drops by this factor ... (official models/gan.py)
LR_DECAY = 0.1
#: ... after this fraction of the steps (official models/gan.py)
LR_DECAY_AT = 0.8


@dataclass
class Projection:
    """What ``project(..., details=True)`` returns, one row per input image.

    Attributes:
        images: G(z*) for the best restart, (N, H, W, C).
        latents: z*, (N, latent_dim).
        errors: mean squared error ``||G(z*) - x||² / pixels``, (N,).
        initial_errors: the same error at the best restart's starting code, (N,).
        restart_errors: final error of every restart, (N, R).
    """

    images: np.ndarray
    latents: np.ndarray
    errors: np.ndarray
    initial_errors: np.ndarray
    restart_errors: np.ndarray


def _pixel_mse(a, b):
    return tf.reduce_mean(tf.reshape(tf.square(a - b), [tf.shape(a)[0], -1]), axis=1)


@register_defense
class DefenseGAN(Defense):
    """Defense-GAN: classifies the projection of x onto G's range; never rejects.

    Args:
        generator: latent (N, d) -> images in [0, 1] (e.g. a trained ``WGANGP.generator``).
        classifier: images in [0, 1] -> logits.
        iterations: gradient-descent steps L (paper: 200).
        restarts: random restarts R (paper: 10).
        learning_rate: step size on z (official code: 10.0).
        momentum: momentum of the descent (official code: 0.7).
        batch_size: input images per compiled projection (each becomes R rows).
        seed: seed of the R starting codes every image shares; ``None`` draws fresh
            codes per image and call (then ``stochastic`` is True).
    """

    detects = False

    def __init__(self, generator: keras.Model, classifier: keras.Model,
                 iterations: int = PAPER_ITERATIONS, restarts: int = PAPER_RESTARTS,
                 learning_rate: float = PAPER_LEARNING_RATE, momentum: float = PAPER_MOMENTUM,
                 batch_size: int = 64, seed: int | None = 0):
        self.generator = generator
        self.classifier = classifier
        self.iterations = check_positive_int(iterations, "iterations")
        self.restarts = check_positive_int(restarts, "restarts")
        self.learning_rate = check_number(learning_rate, "learning_rate", low=0.0,
                                          low_inclusive=False)
        self.momentum = check_number(momentum, "momentum", low=0.0, high=1.0,
                                     high_inclusive=False)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = None if seed is None else check_positive_int(seed, "seed", minimum=0)
        self.latent_dim = int(generator.input_shape[-1])
        self.input_shape = tuple(generator.output_shape[1:])
        # fresh starting codes per call (seed=None) come from a nondeterministic generator
        self._rng = tf.random.Generator.from_non_deterministic_state() if seed is None else None

    @property
    def stochastic(self) -> bool:
        """True when the starting codes are drawn afresh per call (``seed=None``)."""
        return self.seed is None

    # -- the compiled descent ------------------------------------------------------------
    @tf.function(reduce_retracing=True)
    def _descend(self, x, z0):
        """L momentum steps on each row's own error; returns (z, final, initial errors)."""
        decay_step = math.ceil(self.iterations * LR_DECAY_AT)
        initial = _pixel_mse(self.generator(z0, training=False), x)
        z, velocity = z0, tf.zeros_like(z0)
        for step in tf.range(self.iterations):
            lr = tf.where(step < decay_step, self.learning_rate, self.learning_rate * LR_DECAY)
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = tf.reduce_sum(_pixel_mse(self.generator(z, training=False), x))
            velocity = self.momentum * velocity + tape.gradient(loss, z)
            z = z - lr * velocity
        final = _pixel_mse(self.generator(z, training=False), x)
        return z, final, initial

    def starting_codes(self, batch) -> tf.Tensor:
        """(R, batch, latent_dim) starting codes ~ N(0, I / latent_dim).

        With a seed: the same R codes for every image (drawn from ``seed``); with
        ``seed=None``: fresh codes per image and call.
        """
        stddev = 1.0 / math.sqrt(self.latent_dim)
        if self._rng is not None:
            return self._rng.normal((self.restarts, batch, self.latent_dim), stddev=stddev)
        seed = tf.constant([self.seed, 0], tf.int64)
        codes = tf.random.stateless_normal((self.restarts, 1, self.latent_dim), seed, stddev=stddev)
        return tf.broadcast_to(codes, tf.stack([self.restarts, batch, self.latent_dim]))

    def _project_batch(self, x, batched=True):
        """Best-restart projection of one batch; tensors in, tensors out."""
        b = tf.shape(x)[0]
        z0 = self.starting_codes(b)
        if batched:
            tiled = tf.tile(x, [self.restarts, 1, 1, 1])
            z, final, initial = self._descend(tiled, tf.reshape(z0, [-1, self.latent_dim]))
            z = tf.reshape(z, [self.restarts, b, self.latent_dim])
            final = tf.reshape(final, [self.restarts, b])
            initial = tf.reshape(initial, [self.restarts, b])
        else:
            outs = [self._descend(x, z0[r]) for r in range(self.restarts)]
            z, final, initial = (tf.stack(parts) for parts in zip(*outs, strict=True))
        best = tf.argmin(final, axis=0, output_type=tf.int32)  # (b,)
        pick = tf.stack([best, tf.range(b)], axis=1)
        z_best = tf.gather_nd(z, pick)
        images = self.generator(z_best, training=False)
        return images, z_best, tf.gather_nd(final, pick), tf.gather_nd(initial, pick), final

    # -- tensors in, tensors out -------------------------------------------------------------
    def project_tensor(self, x: tf.Tensor) -> tf.Tensor:
        """G(z*) for a tensor batch in one graph, no checks: call it on validated images."""
        return self._project_batch(tf.convert_to_tensor(x, tf.float32))[0]

    def serving_logits(self, x: tf.Tensor) -> tf.Tensor:
        """``classifier(G(z*))``: the logits ``defend`` and ``serving_default`` use."""
        return self.classifier(self.project_tensor(x), training=False)

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        """``classifier(project(x))`` with the identity as the projection's gradient (BPDA).

        Forward: exactly ``serving_logits``; backward: the classifier's gradient at the
        projection, passed straight through the projection to ``x`` (the generator's
        weights get none). One projection graph over the whole batch.
        """
        projected = bpda(self.project_tensor)(tf.convert_to_tensor(x, tf.float32))
        return self.classifier(projected, training=False)

    # -- numpy front door -----------------------------------------------------------------------
    def project(self, x, batch_size: int | None = None, progress: bool = True,
                batched: bool = True, details: bool = False) -> np.ndarray | Projection:
        """Project images onto the generator's range: G(z*) per image.

        Args:
            x: images, float32 NHWC in [0, 1].
            batch_size: input images per compiled call (default: ``self.batch_size``).
            progress: show a tqdm bar over batches.
            batched: all restarts in one graph (True) or one restart at a time.
            details: return a ``Projection`` with latents and errors instead of images.
        """
        x = check_images(x, "x", shape=self.input_shape)
        batch_size = check_positive_int(batch_size or self.batch_size, "batch_size")
        parts = []
        starts = range(0, len(x), batch_size)
        for start in tqdm(starts, desc="Defense-GAN projection", unit="batch",
                          disable=not progress or len(starts) < 2):
            out = self._project_batch(tf.constant(x[start : start + batch_size]), batched)
            parts.append([t.numpy() for t in out])
        images, latents, errors, initial = (np.concatenate([p[k] for p in parts]) for k in range(4))
        per_restart = np.concatenate([p[4] for p in parts], axis=1).T  # (N, R)
        if details:
            return Projection(images, latents, errors, initial, per_restart)
        return images

    # -- save -------------------------------------------------------------------------------------
    def components(self) -> dict[str, keras.Model]:
        """The generator and the classifier."""
        return {"generator": self.generator, "classifier": self.classifier}

    def get_config(self) -> dict[str, Any]:
        """The projection's hyperparameters, ``batch_size`` and ``seed``."""
        return {"iterations": self.iterations, "restarts": self.restarts,
                "learning_rate": self.learning_rate, "momentum": self.momentum,
                "batch_size": self.batch_size, "seed": self.seed}

    @classmethod
    def from_parts(cls, config: dict[str, Any], components: dict[str, keras.Model],
                   state: dict[str, np.ndarray]) -> DefenseGAN:
        """Rebuild from ``get_config()`` and the generator and classifier."""
        return cls(components["generator"], components["classifier"], **config)

    def serving_spec(self):
        """The base's ``serving_default`` and ``defend`` (a ``seed=None`` defense also tracks
        its random generator, so the served projection draws fresh codes too)."""
        spec = super().serving_spec()
        if self._rng is not None:
            spec.track.append(self._rng)
        return spec
