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

The starting codes are a function of ``seed`` and the batch's position in the
call, so the same input, seed and batch size give the same projection.

Adaptive attacks: projection has no useful gradient, so ``bpda_logits`` (also
``call``) classifies the projection while passing the gradient straight
through it (BPDA with the identity, Athalye et al. 2018 §4.1, the attack that
broke Defense-GAN).

Example:
    >>> import numpy as np
    >>> from tfdefense.baselines import DefenseGAN, defense_gan_generator
    >>> from tfdefense.nets import small_cnn
    >>> dgan = DefenseGAN(defense_gan_generator(latent_dim=8, width=4),
    ...                   small_cnn(width=4, dense_units=8), iterations=5, restarts=2)
    >>> x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    >>> dgan.project(x, progress=False).shape
    (3, 28, 28, 1)
    >>> dgan.predict(x).shape
    (3,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfdefense.defend.base import Defense
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


@keras.saving.register_keras_serializable(package="tfdefense")
class DefenseGAN(Defense, keras.Model):
    """Defense-GAN: ``predict(x)`` classifies the projection of x onto G's range.

    Args:
        generator: latent (N, d) -> images in [0, 1] (e.g. a trained ``WGANGP.generator``).
        classifier: images in [0, 1] -> logits.
        iterations: gradient-descent steps L (paper: 200).
        restarts: random restarts R (paper: 10).
        learning_rate: step size on z (official code: 10.0).
        momentum: momentum of the descent (official code: 0.7).
        batch_size: input images per compiled projection (each becomes R rows).
        seed: seed of the starting codes.
    """

    def __init__(self, generator, classifier, iterations: int = PAPER_ITERATIONS,
                 restarts: int = PAPER_RESTARTS, learning_rate: float = PAPER_LEARNING_RATE,
                 momentum: float = PAPER_MOMENTUM, batch_size: int = 64, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.classifier = classifier
        self.iterations = iterations
        self.restarts = restarts
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.seed = seed
        self._check_params()
        self.latent_dim = int(generator.input_shape[-1])
        object.__setattr__(self, "input_shape", tuple(generator.output_shape[1:]))
        self.built = True  # generator and classifier come built; nothing of our own to build

    def _check_params(self):
        self.iterations = check_positive_int(self.iterations, "iterations")
        self.restarts = check_positive_int(self.restarts, "restarts")
        self.learning_rate = check_number(self.learning_rate, "learning_rate", low=0.0,
                                          low_inclusive=False)
        self.momentum = check_number(self.momentum, "momentum", low=0.0, high=1.0,
                                     high_inclusive=False)
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        self.seed = check_positive_int(self.seed, "seed", minimum=0)

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

    def _starting_codes(self, batch, offset):
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(offset, tf.int64)])
        return tf.random.stateless_normal((self.restarts, batch, self.latent_dim), seed,
                                          stddev=1.0 / math.sqrt(self.latent_dim))

    def _project_batch(self, x, offset=0, batched=True):
        """Best-restart projection of one batch; tensors in, tensors out."""
        b = tf.shape(x)[0]
        z0 = self._starting_codes(b, offset)
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

    # -- public API -------------------------------------------------------------------------
    def project(self, x, batch_size: int | None = None, progress: bool = True,
                batched: bool = True, details: bool = False):
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
        for i, start in enumerate(tqdm(starts, desc="Defense-GAN projection", unit="batch",
                                       disable=not progress or len(starts) < 2)):
            out = self._project_batch(tf.constant(x[start : start + batch_size]), i, batched)
            parts.append([t.numpy() for t in out])
        images, latents, errors, initial = (np.concatenate([p[k] for p in parts]) for k in range(4))
        per_restart = np.concatenate([p[4] for p in parts], axis=1).T  # (N, R)
        if details:
            return Projection(images, latents, errors, initial, per_restart)
        return images

    def predict(self, x, batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        """Labels of the projections (Defense-GAN never rejects)."""
        projected = self.project(x, batch_size=batch_size, progress=progress)
        logits = self.classifier.predict(projected, batch_size=256, verbose=0)
        return np.argmax(logits, axis=1).astype(np.int64)

    def _predict(self, x):
        return self.predict(x, progress=False)

    def project_tensor(self, x) -> tf.Tensor:
        """G(z*) for a tensor batch in one graph (starting codes from ``seed``), no checks.

        The images -> images function to hand to ``tfdefense.attacks.bpda``;
        call it on validated images.
        """
        return self._project_batch(tf.convert_to_tensor(x, tf.float32))[0]

    def bpda_logits(self, x):
        """Logits of ``classifier(project(x))`` with the identity as the projection's gradient.

        Tensors in, tensors out; one projection graph over the whole batch
        (starting codes from ``seed``), so call it on validated images.
        """
        x = tf.convert_to_tensor(x, tf.float32)

        @tf.custom_gradient
        def projection_identity_gradient(images):
            projected = self.project_tensor(images)

            def grad(upstream, variables=None):
                # identity for the images; the generator's weights get no gradient
                return upstream, [tf.zeros_like(v) for v in variables or ()]

            return projected, grad

        return self.classifier(projection_identity_gradient(x), training=False)

    def call(self, x):
        return self.bpda_logits(x)

    # -- serialization ----------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            generator=keras.saving.serialize_keras_object(self.generator),
            classifier=keras.saving.serialize_keras_object(self.classifier),
            iterations=self.iterations,
            restarts=self.restarts,
            learning_rate=self.learning_rate,
            momentum=self.momentum,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("generator", "classifier"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
