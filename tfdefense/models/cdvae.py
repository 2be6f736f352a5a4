"""CDVAE: the class-disentangled VAE of CD-VAE §3.1, trained with ``model.fit``.

x = G(x) + R(x): a VAE G reconstructs x while a classifier D predicts y from
R(x) = x − G(x). The joint objective (Eq. 1–3) is

    L = w_rec · ‖x̃ − G̃(x)‖²/P + β · KL(q(z|x) ‖ N(0, I)) + γ · CE(D(R(x)), y)

with x̃ the per-channel normalised image (the VAE works on the normalised
scale, as the official code does), β = 0.2 (CD-VAE §5) and γ = 2 (the sweet
spot of the γ study, TABLES.md). The posterior is a TFP ``Normal``
(reparameterised sample in training, the mean at inference unless asked to
sample); the KL comes from TFP. Optimiser: AdamW, lr 1e-3, ε 1e-8, weight decay
1e-6 (official code) when ``compile`` gets no optimizer.

Example:
    >>> from tfdefense import data, models
    >>> train = data.load("mnist_5k", "train").take(64).batch(32)
    >>> model = models.CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8)
    >>> model.compile()
    >>> history = model.fit(train, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'ce', 'kl', 'loss', 'reconstruction', 'reconstruction_accuracy']
    >>> x, _ = next(iter(train))
    >>> g, r = model.decompose(x)
    >>> bool(abs(g + r - x).numpy().max() < 1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfdefense import data as data_lib
from tfdefense import nets
from tfdefense.models import input_checks, vae_losses
from tfdefense.validation import check_images, check_number

#: per-channel (mean, std) normalisation of the VAE's input, by image shape
MNIST_NORMALIZATION = ((0.1307,), (0.3081,))
CIFAR_NORMALIZATION = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # official code

CLASSIFIER_INPUTS = ("residual", "input", "generated")


#: Adam's epsilon of the official AdamW (kai-wen-yang/CD-VAE @0c92c65 utils/set.py:171
#: ``AdamW.__init__(..., eps=1e-8, ...)``, which tools/disentangle_cifar.py does not override;
#: Keras's default is 1e-7)
ADAMW_EPSILON = 1e-8


def cdvae_optimizer() -> keras.optimizers.Optimizer:
    """AdamW(lr 1e-3, β = (0.9, 0.999), ε 1e-8, weight decay 1e-6): the official CD-VAE optimiser.

    Example:
        >>> opt = cdvae_optimizer()
        >>> type(opt).__name__, round(float(opt.learning_rate), 6), opt.epsilon, opt.weight_decay
        ('AdamW', 0.001, 1e-08, 1e-06)
    """
    return keras.optimizers.AdamW(learning_rate=1e-3, beta_1=0.9, beta_2=0.999,
                                  epsilon=ADAMW_EPSILON, weight_decay=1e-6)


@keras.saving.register_keras_serializable(package="tfdefense")
class CDVAE(input_checks.CheckedInputs, keras.Model):
    """Class-disentangled VAE: ``decompose(x) -> (G(x), R(x))``, ``call(x) -> D's logits``.

    Args:
        encoder: functional model, normalised images → (μ, log σ²).
        decoder: functional model, z → G(x) on the normalised scale.
        classifier: functional model D, images → logits.
        beta: KL weight β (Eq. 2; 0.2, CD-VAE §5).
        gamma: cross-entropy weight γ (Eq. 1; 2 is the paper's sweet spot,
            2e-3 its grey-box defense setting on CIFAR-10).
        reconstruction_weight: weight of the reconstruction term (official
            ``--re``, 1). Held in a non-trainable variable (``model.reconstruction_weight``)
            so a ``schedules.CurriculumCallback`` can change it between epochs of a
            compiled ``fit`` (the official 10x / 5x / 1x curriculum); the config keeps
            the constructor's value.
        classifier_input: what D sees: ``"residual"`` R(x) (the paper),
            ``"input"`` x or ``"generated"`` G(x) (Table 3's variants).
        mixup_alpha: Beta(α, α) input mixup as the official code trains
            (α = 2 there); 0 disables it (default).
        normalization_mean, normalization_std: per-channel statistics the VAE
            normalises its input with; G(x) is returned in pixel scale.
        seed: seed of the posterior sampling and mixup.
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        classifier: keras.Model,
        beta: float = 0.2,
        gamma: float = 2.0,
        reconstruction_weight: float = 1.0,
        classifier_input: str = "residual",
        mixup_alpha: float = 0.0,
        normalization_mean: tuple[float, ...] = (0.0,),
        normalization_std: tuple[float, ...] = (1.0,),
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.classifier = classifier
        self.beta = beta
        self.gamma = gamma
        self.reconstruction_weight = reconstruction_weight  # checked, then made a variable
        self.classifier_input = classifier_input
        self.mixup_alpha = mixup_alpha
        self.normalization_mean = tuple(float(v) for v in normalization_mean)
        self.normalization_std = tuple(float(v) for v in normalization_std)
        self.seed = seed
        self._check_params()
        self._initial_reconstruction_weight = float(reconstruction_weight)
        # a variable, not a Python number: a traced train_step would freeze a number
        self.reconstruction_weight = keras.Variable(
            self._initial_reconstruction_weight, trainable=False, dtype="float32",
            autocast=False, name="reconstruction_weight")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._mean = tf.constant(self.normalization_mean, tf.float32)
        self._std = tf.constant(self.normalization_std, tf.float32)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.reconstruction_accuracy_tracker = keras.metrics.Mean(name="reconstruction_accuracy")
        self.built = True

    # ------------------------------------------------------------------ setup
    def _check_params(self) -> None:
        check_number(self.beta, "beta", low=0.0)
        check_number(self.gamma, "gamma", low=0.0)
        check_number(self.reconstruction_weight, "reconstruction_weight", low=0.0)
        check_number(self.mixup_alpha, "mixup_alpha", low=0.0)
        if self.classifier_input not in CLASSIFIER_INPUTS:
            raise ValueError(
                f"classifier_input: expected one of {CLASSIFIER_INPUTS}, got {self.classifier_input!r}"
            )
        channels = self.input_shape_[-1]
        for name in ("normalization_mean", "normalization_std"):
            values = getattr(self, name)
            if len(values) not in (1, channels):
                raise ValueError(f"{name}: expected 1 or {channels} values, got {len(values)}")
        if min(self.normalization_std) <= 0:
            raise ValueError(f"normalization_std: expected positive values, got {self.normalization_std}")
        if tuple(self.decoder.output_shape[1:]) != self.input_shape_:
            raise ValueError(
                f"decoder: expected output shape {self.input_shape_} (the encoder's input), "
                f"got {tuple(self.decoder.output_shape[1:])}"
            )

    @property
    def input_shape_(self) -> tuple[int, int, int]:
        """Per-image shape (H, W, C) the model takes."""
        return tuple(self.encoder.input_shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.classifier.output_shape[-1])

    @classmethod
    def for_dataset(
        cls,
        name: str,
        *,
        latent_dim: int | None = None,
        width: int | None = None,
        classifier: str | keras.Model = "auto",
        wrn_depth: int = 28,
        wrn_width: int = 10,
        **kwargs: Any,
    ) -> CDVAE:
        """A CD-VAE with the architecture for a dataset of ``tfdefense.data``.

        32x32x3 data gets the official CIFAR VAE (d = 32, latent 2048) and a
        WRN-28-10 D; 28x28x1 data gets the 28x28 variant (d = 32, latent 64)
        and ``small_cnn``. ``width`` overrides d; ``classifier`` is
        ``"auto"``, ``"small_cnn"``, ``"wrn"`` or a Keras model.
        """
        spec = data_lib.spec(name)
        shape = spec.shape
        enc = nets.cdvae_encoder(shape, d=width, latent_dim=latent_dim)
        dec = nets.cdvae_decoder(shape, d=width, latent_dim=latent_dim)
        if classifier == "auto":
            classifier = "small_cnn" if shape[-1] == 1 else "wrn"
        if classifier == "small_cnn":
            clf = nets.small_cnn(shape, spec.num_classes, name="classifier")
        elif classifier == "wrn":
            clf = nets.wide_resnet(shape, spec.num_classes, depth=wrn_depth, width=wrn_width,
                                   name="classifier")
        elif isinstance(classifier, keras.Model):
            clf = classifier
        else:
            raise ValueError(
                f"classifier: expected 'auto', 'small_cnn', 'wrn' or a keras.Model, got {classifier!r}"
            )
        mean, std = MNIST_NORMALIZATION if shape[-1] == 1 else CIFAR_NORMALIZATION
        kwargs.setdefault("normalization_mean", mean)
        kwargs.setdefault("normalization_std", std)
        return cls(enc, dec, clf, **kwargs)

    def compile(self, optimizer: Any = None, **kwargs) -> None:
        """``keras.Model.compile``; no optimizer means CD-VAE's AdamW (``cdvae_optimizer``)."""
        super().compile(optimizer=optimizer if optimizer is not None else cdvae_optimizer(),
                        **kwargs)
        if self.built and self.optimizer is not None:
            # its slots now, not inside the first traced train_step: Keras traces that step
            # twice when the optimizer creates variables in it (about twice the first fit)
            self.optimizer.build(self.trainable_variables)

    def get_compile_config(self) -> dict[str, Any] | None:
        if not self.compiled:  # never compiled (or loaded with compile=False): no optimizer
            return None
        if self.optimizer is None:
            return {}
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer)}

    def compile_from_config(self, config: dict[str, Any]) -> None:
        optimizer = config.get("optimizer")
        self.compile(keras.optimizers.deserialize(optimizer) if optimizer else None)

    # --------------------------------------------------------------- forward
    def normalize(self, x: tf.Tensor) -> tf.Tensor:
        return (x - self._mean) / self._std

    def denormalize(self, x: tf.Tensor) -> tf.Tensor:
        return x * self._std + self._mean

    def posterior(self, x: tf.Tensor, training: bool = False):
        """q(z|x) as a TFP ``Normal`` over the latent (N, latent_dim)."""
        mu, log_var = self.encoder(self.normalize(x), training=training)
        # float32 posterior and outputs under a mixed precision policy (tfdefense.distribute)
        mu, log_var = tf.cast(mu, tf.float32), tf.cast(log_var, tf.float32)
        return vae_losses.gaussian_posterior(mu, log_var)

    def latent(self, x: tf.Tensor, training: bool = False, sample: bool | None = None):
        """(z, per-example latent loss) — the one hook a generator variant overrides.

        The Gaussian VAE samples z from q(z|x) in training (or when ``sample``)
        and returns the posterior mean otherwise; its latent loss is the KL.
        """
        q = self.posterior(x, training=training)
        sample = training if sample is None else sample
        z = q.sample(seed=self._tf_seed()) if sample else q.mean()
        return z, vae_losses.kl_to_standard_normal(q)

    def _tf_seed(self) -> tf.Tensor:
        return keras.random.randint((2,), 0, 2**30, seed=self.seed_generator, dtype="int32")

    def generate_normalized(self, x: tf.Tensor, training: bool = False, sample=None):
        z, latent_loss = self.latent(x, training=training, sample=sample)
        return tf.cast(self.decoder(z, training=training), tf.float32), latent_loss, z

    def generate(self, x: tf.Tensor, training: bool = False, sample: bool | None = None):
        """G(x) in pixel scale (not clipped to [0, 1]: R(x) = x − G(x) must add up)."""
        g_n, _, _ = self.generate_normalized(x, training=training, sample=sample)
        return self.denormalize(g_n)

    def classifier_inputs(self, x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        if self.classifier_input == "residual":
            return x - g
        if self.classifier_input == "generated":
            return g
        return x

    def call(self, x, training: bool = False):
        """Logits of D on R(x) (or on x / G(x), per ``classifier_input``)."""
        x = tf.cast(x, tf.float32)
        g = self.generate(x, training=training)
        return tf.cast(self.classifier(self.classifier_inputs(x, g), training=training), tf.float32)

    def decompose(self, x, sample: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """(G(x), R(x) = x − G(x)) for images in [0, 1]; G(x) + R(x) == x.

        Eager calls validate ``x`` (``ValueError`` for wrong shape, dtype, range
        or NaN); inside a ``tf.function`` only the static checks run.
        """
        if tf.executing_eagerly():
            x = check_images(x, "x", shape=self.input_shape_)
        x = tf.cast(x, tf.float32)
        g = self.generate(x, training=False, sample=sample)
        return g, x - g

    # --------------------------------------------------------------- training
    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.reconstruction_tracker,
            self.kl_tracker,
            self.ce_tracker,
            self.accuracy_tracker,
            self.reconstruction_accuracy_tracker,
        ]

    def _mixup(self, x, y):
        """Mix the batch with a shuffled copy by λ ~ Beta(α, α) (one λ per batch, official)."""
        n = tf.shape(x)[0]
        if not self.mixup_alpha:
            return x, y, y, tf.constant(1.0)
        lam = keras.random.beta((), self.mixup_alpha, self.mixup_alpha, seed=self.seed_generator)
        perm = keras.random.shuffle(tf.range(n), seed=self.seed_generator)
        x = lam * x + (1.0 - lam) * tf.gather(x, perm)
        return x, y, tf.gather(y, perm), lam

    def compute_losses(self, x, y, training: bool) -> dict[str, tf.Tensor]:
        """Per-example loss terms of Eq. 1–3 and the outputs the trackers need."""
        if training:
            x, y_a, y_b, lam = self._mixup(x, y)
        else:
            y_a, y_b, lam = y, y, tf.constant(1.0)
        g_n, latent_loss, _ = self.generate_normalized(x, training=training)
        g = self.denormalize(g_n)
        logits = tf.cast(self.classifier(self.classifier_inputs(x, g), training=training), tf.float32)
        rec = vae_losses.reconstruction_error(self.normalize(x), g_n)
        ce = vae_losses.mixup_cross_entropy(y_a, y_b, logits, lam)
        total = self.reconstruction_weight * rec + self.beta * latent_loss + self.gamma * ce
        return {
            "loss": total,
            "reconstruction": rec,
            "kl": latent_loss,
            "ce": ce,
            "logits": logits,
            "labels": y_a,
            "reconstruction_accuracy": vae_losses.reconstruction_accuracy(x, g),
        }

    def update_trackers(self, terms: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        self.loss_tracker.update_state(terms["loss"])
        self.reconstruction_tracker.update_state(terms["reconstruction"])
        self.kl_tracker.update_state(terms["kl"])
        self.ce_tracker.update_state(terms["ce"])
        self.accuracy_tracker.update_state(terms["labels"], terms["logits"])
        self.reconstruction_accuracy_tracker.update_state(terms["reconstruction_accuracy"])
        return {m.name: m.result() for m in self.metrics}

    def _batch(self, data):
        x, y = input_checks.unpack(data)
        return input_checks.checked_batch(x, y, self.input_shape_, self.num_classes)

    def train_step(self, data):
        x, y = self._batch(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self.compute_losses(x, y, training=True)
            loss = tf.reduce_mean(terms["loss"])
            if self.losses:
                loss += tf.add_n(self.losses)
            # Keras sums replica gradients: scale the hand-written mean (ECOSYSTEM_NOTES).
            scaled = loss / tf.cast(replicas, loss.dtype)
            # LossScaleOptimizer (mixed_float16) scales here and unscales in apply
            scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.update_trackers(terms)

    def test_step(self, data):
        x, y = self._batch(data)
        return self.update_trackers(self.compute_losses(x, y, training=False))

    # fit / evaluate / predict check their input: input_checks.CheckedInputs

    # ---------------------------------------------------------- serialization
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder),
                "classifier": keras.saving.serialize_keras_object(self.classifier),
                "beta": self.beta,
                "gamma": self.gamma,
                "reconstruction_weight": self._initial_reconstruction_weight,
                "classifier_input": self.classifier_input,
                "mixup_alpha": self.mixup_alpha,
                "normalization_mean": list(self.normalization_mean),
                "normalization_std": list(self.normalization_std),
                "seed": self.seed,
            }
        )
        return config

    def load_own_variables(self, store) -> None:
        """Load the reconstruction-weight variable; a file saved before it existed (no
        variables of the model's own) keeps the config's weight."""
        if len(store.keys()) == 0:
            return
        super().load_own_variables(store)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> CDVAE:
        config = dict(config)
        for key in ("encoder", "decoder", "classifier"):
            config[key] = keras.saving.deserialize_keras_object(config[key],
                                                                custom_objects=custom_objects)
        return cls(**config)
