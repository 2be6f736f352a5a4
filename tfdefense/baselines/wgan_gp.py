"""``WGANGP``: the Wasserstein GAN with gradient penalty Defense-GAN trains.

Gulrajani et al. 2017, Algorithm 1, with the settings Defense-GAN uses
(Samangouei et al. 2018 §3.2; official code ``models/gan.py``): ``critic_steps``
= 5 critic updates per generator update, penalty weight λ = 10, Adam with
learning rate 1e-4, β₁ = 0.5, β₂ = 0.9 for both networks, batch 50.

One ``train_step`` takes one batch of real images and splits it into
``critic_steps`` chunks: critic update i sees chunk i, fresh latent codes and
fresh interpolation weights, so each critic update gets its own real batch as
in Algorithm 1 (and the official code). ``fit(batch_size=critic_steps * B)``
therefore trains with real batches of B per critic update, the generator
update uses B codes, and one epoch is ``N / (critic_steps * B)`` generator
updates. The fakes of all critic updates come from one generator call before
them (the generator does not change during the critic updates, so this is the
same computation, batched).

Example:
    >>> import numpy as np
    >>> from tfdefense.baselines import WGANGP, defense_gan_critic, defense_gan_generator
    >>> gan = WGANGP(defense_gan_generator(latent_dim=8, width=4), defense_gan_critic(width=4),
    ...              critic_steps=2, seed=0)
    >>> gan.compile()
    >>> x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    >>> sorted(gan.fit(x, batch_size=8, epochs=1, verbose=0).history)
    ['critic_loss', 'generator_loss', 'gradient_penalty', 'wasserstein_distance']
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdefense.baselines.losses import critic_loss, generator_loss, gradient_penalty
from tfdefense.validation import check_number, check_positive_int

#: WGAN-GP penalty weight (Gulrajani et al. 2017; Defense-GAN default.yml)
PAPER_GP_WEIGHT = 10.0
#: critic updates per generator update (Defense-GAN mnist.yml CRITIC_ITERS)
PAPER_CRITIC_STEPS = 5


def wgan_gp_optimizer() -> keras.optimizers.Optimizer:
    """Adam(1e-4, β₁ = 0.5, β₂ = 0.9): Gulrajani et al. 2017's WGAN-GP optimizer, as
    Defense-GAN's official code trains its GAN with it.

    Example:
        >>> opt = wgan_gp_optimizer()
        >>> type(opt).__name__, round(float(opt.learning_rate), 6), opt.beta_1, opt.beta_2
        ('Adam', 0.0001, 0.5, 0.9)
    """
    return keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.9)


def _images(data):
    return data[0] if isinstance(data, tuple | list) else data


@keras.saving.register_keras_serializable(package="tfdefense")
class WGANGP(keras.Model):
    """Generator + critic trained with ``fit`` on real images; ``call(z)`` generates.

    Args:
        generator: latent (N, d) -> images in [0, 1].
        critic: images -> scores (N, 1).
        critic_steps: critic updates per generator update (paper: 5).
        gp_weight: gradient-penalty weight λ (paper: 10).
        seed: seed of latent codes and interpolation weights.
    """

    def __init__(self, generator, critic, critic_steps: int = PAPER_CRITIC_STEPS,
                 gp_weight: float = PAPER_GP_WEIGHT, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.critic = critic
        self.critic_steps = check_positive_int(critic_steps, "critic_steps")
        self.gp_weight = check_number(gp_weight, "gp_weight", low=0.0)
        self.seed = seed
        self.latent_dim = int(generator.input_shape[-1])
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (
            "critic_loss", "generator_loss", "gradient_penalty", "wasserstein_distance")}
        self.built = bool(generator.built and critic.built)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, optimizer=None, critic_optimizer=None, **kwargs):
        """``optimizer`` updates the generator, ``critic_optimizer`` the critic.

        Both default to ``wgan_gp_optimizer()``.
        """
        super().compile(optimizer=optimizer if optimizer is not None else wgan_gp_optimizer(),
                        **kwargs)
        self.critic_optimizer = (keras.optimizers.get(critic_optimizer)
                                 if critic_optimizer is not None else wgan_gp_optimizer())
        # each optimizer holds the slots of its own network only
        self.optimizer.build(self.generator.trainable_variables)
        self.critic_optimizer.build(self.critic.trainable_variables)

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "critic_optimizer": keras.saving.serialize_keras_object(self.critic_optimizer),
        }

    def compile_from_config(self, config):
        self.compile(
            optimizer=keras.saving.deserialize_keras_object(config["optimizer"]),
            critic_optimizer=keras.saving.deserialize_keras_object(config["critic_optimizer"]),
        )

    def call(self, z, training=False):
        return self.generator(z, training=training)

    def _sample(self, batch):
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        alpha = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator)
        return z, alpha

    def _critic_terms(self, real, fake, alpha, training):
        real_scores = self.critic(real, training=training)
        fake_scores = self.critic(fake, training=training)
        gp = gradient_penalty(lambda v: self.critic(v, training=training), real, fake, alpha)
        loss = tf.nn.compute_average_loss(critic_loss(real_scores, fake_scores)
                                          + self.gp_weight * gp)
        distance = -tf.reduce_mean(critic_loss(real_scores, fake_scores))
        return loss, tf.reduce_mean(gp), distance

    def _generator_loss(self, batch, training):
        z, _ = self._sample(batch)
        scores = self.critic(self.generator(z, training=training), training=training)
        return tf.nn.compute_average_loss(generator_loss(scores))

    def train_step(self, data):
        real = tf.cast(_images(data), tf.float32)
        n = tf.shape(real)[0]
        k = self.critic_steps
        # B real images per critic update (a short last batch wraps around)
        per = tf.maximum(n // k, 1)
        z = keras.random.normal((k * per, self.latent_dim), seed=self.seed_generator)
        fakes = tf.stop_gradient(self.generator(z, training=True))
        for i in range(k):
            chunk = tf.gather(real, (i * per + tf.range(per)) % n)
            fake = fakes[i * per : (i + 1) * per]
            alpha = keras.random.uniform((per, 1, 1, 1), seed=self.seed_generator)
            with tf.GradientTape() as tape:
                c_loss, gp, distance = self._critic_terms(chunk, fake, alpha, training=True)
            grads = tape.gradient(c_loss, self.critic.trainable_variables)
            self.critic_optimizer.apply(grads, self.critic.trainable_variables)
        with tf.GradientTape() as tape:
            g_loss = self._generator_loss(per, training=True)
        grads = tape.gradient(g_loss, self.generator.trainable_variables)
        self.optimizer.apply(grads, self.generator.trainable_variables)
        return self._track(c_loss, g_loss, gp, distance)

    def test_step(self, data):
        real = tf.cast(_images(data), tf.float32)
        z, alpha = self._sample(tf.shape(real)[0])
        fake = self.generator(z, training=False)
        c_loss, gp, distance = self._critic_terms(real, fake, alpha, training=False)
        g_loss = self._generator_loss(tf.shape(real)[0], training=False)
        return self._track(c_loss, g_loss, gp, distance)

    def _track(self, c_loss, g_loss, gp, distance):
        # compute_average_loss divides by the replica count; undo it for the log
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        values = {"critic_loss": c_loss * replicas, "generator_loss": g_loss * replicas,
                  "gradient_penalty": gp, "wasserstein_distance": distance}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def get_config(self):
        config = super().get_config()
        config.update(
            generator=keras.saving.serialize_keras_object(self.generator),
            critic=keras.saving.serialize_keras_object(self.critic),
            critic_steps=self.critic_steps,
            gp_weight=self.gp_weight,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("generator", "critic"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
