"""``DenoisingAutoEncoder``: trains a MagNet autoencoder with ``model.fit``.

Meng & Chen 2017, §5.1 and official ``defensive_models.py``: the input gets
Gaussian noise of volume ``noise_std`` = 0.1, is clipped to [0, 1], and the
autoencoder is trained to return the clean image under mean squared error
(plus the autoencoder's activity regularization losses). Adam, 100 epochs,
batch 256 in the paper's MNIST setting.

Example:
    >>> import numpy as np
    >>> from tfdefense.baselines import DenoisingAutoEncoder, magnet_autoencoder
    >>> dae = DenoisingAutoEncoder(magnet_autoencoder((3,)), noise_std=0.1, seed=0)
    >>> dae.compile(optimizer="adam")
    >>> x = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    >>> history = dae.fit(x, batch_size=8, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss', 'reconstruction_loss']
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdefense.baselines.losses import reconstruction_error
from tfdefense.validation import check_number


def _images(data):
    return data[0] if isinstance(data, tuple | list) else data


@keras.saving.register_keras_serializable(package="tfdefense")
class DenoisingAutoEncoder(keras.Model):
    """Wraps an images -> images autoencoder; ``call`` is the autoencoder itself.

    Args:
        autoencoder: a Keras model mapping images in [0, 1] to images in [0, 1].
        noise_std: standard deviation of the training noise (MagNet: 0.1).
        seed: seed of the noise.
    """

    def __init__(self, autoencoder, noise_std: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.autoencoder = autoencoder
        self.noise_std = check_number(noise_std, "noise_std", low=0.0)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.built = bool(getattr(autoencoder, "built", False))

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker]

    def call(self, x, training=False):
        return self.autoencoder(x, training=training)

    def _compute_losses(self, clean, noisy, training):
        reconstruction = self.autoencoder(noisy, training=training)
        per_example = reconstruction_error(clean, reconstruction, p=2)
        recon = tf.nn.compute_average_loss(per_example)
        regularization = tf.add_n(self.autoencoder.losses) if self.autoencoder.losses else 0.0
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        regularization = regularization / replicas
        return recon + regularization, recon, replicas

    def train_step(self, data):
        clean = tf.cast(_images(data), tf.float32)
        noise = keras.random.normal(tf.shape(clean), stddev=self.noise_std,
                                    seed=self.seed_generator)
        noisy = tf.clip_by_value(clean + noise, 0.0, 1.0)
        with tf.GradientTape() as tape:
            loss, recon, replicas = self._compute_losses(clean, noisy, training=True)
        grads = tape.gradient(loss, self.autoencoder.trainable_variables)
        self.optimizer.apply(grads, self.autoencoder.trainable_variables)
        return self._track(loss, recon, replicas)

    def test_step(self, data):
        clean = tf.cast(_images(data), tf.float32)
        loss, recon, replicas = self._compute_losses(clean, clean, training=False)
        return self._track(loss, recon, replicas)

    def _track(self, loss, recon, replicas):
        # compute_average_loss divides by the replica count; undo it for the log
        self.loss_tracker.update_state(loss * replicas)
        self.reconstruction_tracker.update_state(recon * replicas)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(
            autoencoder=keras.saving.serialize_keras_object(self.autoencoder),
            noise_std=self.noise_std,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["autoencoder"] = keras.saving.deserialize_keras_object(config["autoencoder"])
        return cls(**config)
