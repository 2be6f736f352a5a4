"""PGDAdversarialTraining: Madry et al. (2018) PGD adversarial training of a classifier.

The baseline "AT PGD-ℓ∞" of CD-VAE Table 7. Each batch, in one compiled graph:
craft x′ by Linf PGD on the cross-entropy (uniform random start, ``steps``
steps of ``step_size``, projection onto the eps ball and [0, 1]; the
classifier in inference mode), then minimise CE(f(x′), y) (Madry et al. 2018,
Eq. 2.1); ``clean_weight`` > 0 adds the clean CE (Goodfellow et al. 2015's
mix), 0 is pure Madry. The attack is ``tfdefense.perturbation``'s PGD graph,
the same one the evaluation's PGD (``tfdefense.attacks.PGD``) runs.

Defaults give the same budget as ``AdversarialCDVAE``: eps 8/255, 10 steps of
eps/√10 (Madry's CIFAR-10 setting is 7 steps of 2/255; MNIST 40 of 0.01).

Example:
    >>> import numpy as np
    >>> from tfdefense import models, nets
    >>> clf = nets.small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> model = models.PGDAdversarialTraining(clf, eps=0.3, attack_steps=2)
    >>> model.compile()
    >>> x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    >>> sorted(model.fit(x, np.arange(8) % 10, epochs=1, verbose=0).history)
    ['accuracy', 'adversarial_accuracy', 'loss']
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from tfdefense.models import input_checks
from tfdefense.perturbation import iterative_attack
from tfdefense.validation import check_number, check_positive_int

#: Adam's epsilon of Madry et al.'s PGD training (MadryLab/mnist_challenge train.py:39
#: ``tf.train.AdamOptimizer(1e-4)``: TF1's default epsilon 1e-8; Keras's is 1e-7). The official
#: CD-VAE code has no PGD-AT; its own optimisers have no epsilon (SGD) or 1e-8 (AdamW).
ADAM_EPSILON = 1e-8

# Keras runs ``train_step`` without AutoGraph; the attack's loop needs it (see adversarial.py).
_attack_graph = tf.function(iterative_attack, autograph=True)


@keras.saving.register_keras_serializable(package="tfdefense")
class PGDAdversarialTraining(input_checks.CheckedInputs, keras.Model):
    """A classifier trained on PGD adversarial examples; ``call(x)`` is its logits.

    Args:
        classifier: functional model, images in [0, 1] → logits.
        eps: Linf budget; 8/255 (CIFAR-10; 0.3 on MNIST, Madry et al. 2018).
        attack_steps: PGD steps per batch; 10 (same as ``AdversarialCDVAE``).
        attack_step_size: step; ``None`` is eps/√steps.
        clean_weight: weight of the clean cross-entropy added to the adversarial
            one; 0 (Madry et al.).
        seed: seed of the random starts.
    """

    def __init__(
        self,
        classifier: keras.Model,
        eps: float = 8 / 255,
        attack_steps: int = 10,
        attack_step_size: float | None = None,
        clean_weight: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.eps = eps
        self.attack_steps = attack_steps
        self.attack_step_size = attack_step_size
        self.clean_weight = clean_weight
        self.seed = seed
        self._check_params()
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.adversarial_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="adversarial_accuracy")
        self.built = True

    def _check_params(self) -> None:
        if not isinstance(self.classifier, keras.Model):
            raise ValueError(f"classifier: expected a keras.Model, got {self.classifier!r}")
        if len(self.classifier.output_shape) != 2 or (self.classifier.output_shape[-1] or 0) < 2:
            raise ValueError(f"classifier: expected logits (N, num_classes >= 2), got output "
                             f"shape {self.classifier.output_shape}")
        check_number(self.eps, "eps", low=0.0, high=1.0, low_inclusive=False)
        check_positive_int(self.attack_steps, "attack_steps")
        if self.attack_step_size is not None:
            check_number(self.attack_step_size, "attack_step_size", low=0.0, low_inclusive=False)
        check_number(self.clean_weight, "clean_weight", low=0.0)

    @property
    def input_shape_(self) -> tuple[int, ...]:
        return tuple(self.classifier.input_shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.classifier.output_shape[-1])

    @property
    def step_size(self) -> float:
        if self.attack_step_size is not None:
            return float(self.attack_step_size)
        return self.eps / math.sqrt(self.attack_steps)

    def compile(self, optimizer: Any = None, **kwargs) -> None:
        """``keras.Model.compile``; no optimizer means Adam(lr 1e-3, ε ``ADAM_EPSILON``) (Madry
        et al. use Adam, at lr 1e-4 on MNIST)."""
        super().compile(optimizer=optimizer if optimizer is not None
                        else keras.optimizers.Adam(1e-3, epsilon=ADAM_EPSILON), **kwargs)

    def get_compile_config(self) -> dict[str, Any] | None:
        if not self.compiled:  # never compiled (or loaded with compile=False): no optimizer
            return None
        if self.optimizer is None:
            return {}
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer)}

    def compile_from_config(self, config: dict[str, Any]) -> None:
        optimizer = config.get("optimizer")
        self.compile(keras.optimizers.deserialize(optimizer) if optimizer else None)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def call(self, x, training: bool = False):
        return self.classifier(tf.cast(x, tf.float32), training=training)

    def craft(self, x, y, seed: tf.Tensor | None = None) -> tf.Tensor:
        """Linf PGD x′ on the cross-entropy, classifier in inference mode; in-graph."""
        seed = keras.random.randint((2,), 0, 2**30, seed=self.seed_generator, dtype="int32") \
            if seed is None else seed
        model_fn = tf.autograph.experimental.do_not_convert(
            lambda images: self.classifier(images, training=False))
        x_adv = _attack_graph(model_fn, tf.cast(x, tf.float32), tf.cast(y, tf.int64), seed,
                              eps=self.eps, step=self.step_size, steps=self.attack_steps,
                              norm="linf", loss="ce", rand_init=True)
        return tf.stop_gradient(x_adv)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, self.adversarial_accuracy_tracker]

    def _loss_terms(self, x, x_adv, y, training: bool):
        adv_logits = self.classifier(x_adv, training=training)
        clean_logits = self.classifier(x, training=training)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits
        per_example = ce(labels=y, logits=adv_logits) + self.clean_weight * ce(labels=y,
                                                                               logits=clean_logits)
        return per_example, clean_logits, adv_logits

    def _update(self, y, per_example, clean_logits, adv_logits):
        self.loss_tracker.update_state(per_example)
        self.accuracy_tracker.update_state(y, clean_logits)
        self.adversarial_accuracy_tracker.update_state(y, adv_logits)
        return {m.name: m.result() for m in self.metrics}

    def _batch(self, data):
        x, y = input_checks.unpack(data)
        return input_checks.checked_batch(x, y, self.input_shape_, self.num_classes)

    def train_step(self, data):
        x, y = self._batch(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        x_adv = self.craft(x, y)
        with tf.GradientTape() as tape:
            per_example, clean_logits, adv_logits = self._loss_terms(x, x_adv, y, training=True)
            loss = tf.reduce_mean(per_example)
            if self.losses:
                loss += tf.add_n(self.losses)
            scaled = loss / tf.cast(replicas, loss.dtype)  # Keras sums replica gradients
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update(y, per_example, clean_logits, adv_logits)

    def test_step(self, data):
        x, y = self._batch(data)
        x_adv = self.craft(x, y)
        return self._update(y, *self._loss_terms(x, x_adv, y, training=False))

    # fit / evaluate / predict check their input: input_checks.CheckedInputs

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "eps": self.eps,
            "attack_steps": self.attack_steps,
            "attack_step_size": self.attack_step_size,
            "clean_weight": self.clean_weight,
            "seed": self.seed,
        })
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> PGDAdversarialTraining:
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(
            config["classifier"], custom_objects=custom_objects)
        return cls(**config)
