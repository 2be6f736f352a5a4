"""Learning-rate schedules and loss-weight curricula of the official CD-VAE scripts.

Keras optimizers call a schedule with their step counter (``optimizer.iterations``,
0 for the first update, +1 per batch), so each schedule also takes
``steps_per_epoch`` and derives the epoch from the step. Two epoch countings meet
here; both are named wherever they matter:

* Keras counts epochs from 0 (``on_epoch_begin(0)``, ``step // steps_per_epoch``).
* The official loops count from 1: ``start_epoch = 1; for epoch in range(start_epoch,
  start_epoch + args.epochs)`` (kai-wen-yang/CD-VAE ``tools/disentangle_cifar.py:214-216``,
  ``tools/adv_train_cifar.py:221-222``). Keras epoch ``k`` is the official epoch ``k + 1``.

Example:
    >>> s = TorchCosineAnnealing(steps_per_epoch=10)
    >>> round(float(s(0)), 6), round(float(s(500)), 6), round(float(s(1000)), 6)
    (0.001, 0.0002, 0.001)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tfdefense.validation import check_number, check_positive_int

__all__ = ["TorchCosineAnnealing", "WarmupStepDecay", "EpochCurriculum", "CurriculumCallback"]


def _epoch(step: Any, steps_per_epoch: int) -> tf.Tensor:
    step = tf.cast(step, tf.int64)
    return step // steps_per_epoch


@keras.saving.register_keras_serializable(package="tfdefense")
class TorchCosineAnnealing(keras.optimizers.schedules.LearningRateSchedule):
    """PyTorch's ``CosineAnnealingLR`` stepped once per epoch, as the official CD-VAE trains.

    ``lr(e) = eta_min + (lr0 − eta_min)·(1 + cos(π·e / t_max)) / 2`` with ``e`` the
    scheduler's epoch counter, constant within an epoch. The official loop calls
    ``scheduler.step()`` after each epoch (``tools/disentangle_cifar.py:219``), so official
    epoch ``k`` (from 1) trains at ``lr(k − 1)``; here ``e = step // steps_per_epoch``, the
    Keras epoch (from 0), which is the same number. There are no restarts: past
    ``t_max`` the cosine continues and the rate rises back to ``lr0`` at ``2·t_max``
    (PyTorch's recursive form equals this closed form, including its special case at
    ``e = t_max + 1``).

    Args:
        steps_per_epoch: optimizer steps per epoch (batches per epoch).
        initial_learning_rate: ``lr0``, 1e-3 (``tools/disentangle_cifar.py:163``,
            ``learning_rate = 1.e-3``, passed as ``AdamW(lr=learning_rate)``).
        t_max: half-period in epochs, 50 (``tools/disentangle_cifar.py:206``,
            ``CosineAnnealingLR(optimizer, T_max=50, ...)``; the ``--T`` argument is unused).
        eta_min: floor, 2e-4 (``tools/disentangle_cifar.py:164``, ``learning_rate_min = 2.e-4``).

    Example:
        >>> s = TorchCosineAnnealing(steps_per_epoch=196)
        >>> [round(float(s(e * 196)), 7) for e in (0, 25, 50, 75, 100)]
        [0.001, 0.0006, 0.0002, 0.0006, 0.001]
    """

    def __init__(
        self,
        steps_per_epoch: int,
        initial_learning_rate: float = 1e-3,
        t_max: int = 50,
        eta_min: float = 2e-4,
    ):
        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.initial_learning_rate = check_number(initial_learning_rate, "initial_learning_rate", low=0.0)
        self.t_max = check_positive_int(t_max, "t_max")
        self.eta_min = check_number(eta_min, "eta_min", low=0.0)

    def __call__(self, step: Any) -> tf.Tensor:
        epoch = tf.cast(_epoch(step, self.steps_per_epoch), tf.float64)
        cosine = (1.0 + tf.cos(math.pi * epoch / self.t_max)) / 2.0
        lr = self.eta_min + (self.initial_learning_rate - self.eta_min) * cosine
        return tf.cast(lr, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "initial_learning_rate": self.initial_learning_rate,
            "t_max": self.t_max,
            "eta_min": self.eta_min,
        }


@keras.saving.register_keras_serializable(package="tfdefense")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The official CD-VAE-AT schedule: per-iteration linear warm-up, then step decay.

    ``tools/adv_train_cifar.py:37-50`` (``adjust_learning_rate``), called before every
    iteration with the 1-based epoch and the *global* iteration counter
    (``adjust_learning_rate(optimizer, epoch, iteration, len(trainloader))``, line 225)::

        factor = epoch // 30 (+1 if epoch >= 80)
        lr = lr0 * 0.1 ** factor
        if epoch < 5: lr *= (1 + iteration) / (5 * len_epoch)

    Here ``epoch = step // steps_per_epoch + first_epoch`` and ``iteration = step``. With
    epochs counted from 1 the warm-up covers epochs 1–4 only, reaching 0.8·lr0 on the
    last step of epoch 4, and the rate jumps to lr0 at epoch 5.

    Args:
        steps_per_epoch: optimizer steps per epoch (``len(trainloader)``).
        initial_learning_rate: lr0, 0.1 (``toolkits/adv_train_cifar.sh`` ``--lr 0.1``;
            ``tools/adv_train_cifar.py:58`` default 0.1).
        warmup_epochs: 5 (``tools/adv_train_cifar.py:46-47``, ``epoch < 5`` and ``5. * len_epoch``).
        decay_epochs: 30 (``tools/adv_train_cifar.py:38``, ``epoch // 30``); ``None``: no
            periodic decay, only the drops at ``extra_decay_epochs``.
        decay_rate: 0.1 (``tools/adv_train_cifar.py:43``, ``0.1 ** factor``).
        extra_decay_epochs: epochs from which one more decay applies, (80,)
            (``tools/adv_train_cifar.py:40-41``, ``if epoch >= 80: factor += 1``).
        first_epoch: number of the first epoch, 1 (``tools/adv_train_cifar.py:221``).

    Example:
        >>> s = WarmupStepDecay(steps_per_epoch=500)
        >>> round(float(s(499)), 6), round(float(s(1999)), 6), round(float(s(2000)), 6)
        (0.02, 0.08, 0.1)
    """

    def __init__(
        self,
        steps_per_epoch: int,
        initial_learning_rate: float = 0.1,
        warmup_epochs: int = 5,
        decay_epochs: int | None = 30,
        decay_rate: float = 0.1,
        extra_decay_epochs: Sequence[int] = (80,),
        first_epoch: int = 1,
    ):
        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.initial_learning_rate = check_number(initial_learning_rate, "initial_learning_rate", low=0.0)
        self.warmup_epochs = check_positive_int(warmup_epochs, "warmup_epochs", minimum=0)
        self.decay_epochs = None if decay_epochs is None else check_positive_int(decay_epochs, "decay_epochs")
        self.decay_rate = check_number(decay_rate, "decay_rate", low=0.0)
        self.extra_decay_epochs = tuple(
            check_positive_int(e, "extra_decay_epochs", minimum=0) for e in extra_decay_epochs
        )
        self.first_epoch = check_positive_int(first_epoch, "first_epoch", minimum=0)

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.int64)
        epoch = _epoch(step, self.steps_per_epoch) + self.first_epoch
        factor = tf.zeros_like(epoch) if self.decay_epochs is None else epoch // self.decay_epochs
        for e in self.extra_decay_epochs:
            factor += tf.cast(epoch >= e, tf.int64)
        lr = self.initial_learning_rate * tf.pow(
            tf.constant(self.decay_rate, tf.float64), tf.cast(factor, tf.float64)
        )
        warm = tf.cast(1 + step, tf.float64) / float(self.warmup_epochs * self.steps_per_epoch or 1)
        lr = tf.where(epoch < self.warmup_epochs, lr * warm, lr)
        return tf.cast(lr, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "initial_learning_rate": self.initial_learning_rate,
            "warmup_epochs": self.warmup_epochs,
            "decay_epochs": self.decay_epochs,
            "decay_rate": self.decay_rate,
            "extra_decay_epochs": list(self.extra_decay_epochs),
            "first_epoch": self.first_epoch,
        }


@keras.saving.register_keras_serializable(package="tfdefense")
class EpochCurriculum:
    """A piecewise-constant value by epoch: ``pieces = ((until, value), ..., (None, value))``.

    ``curriculum(epoch)`` is the value of the first piece with ``epoch < until`` (``None``
    never ends), with epochs numbered from ``first_epoch``. The default is the official
    reconstruction-weight multiplier, ``tools/disentangle_cifar.py:120-127``::

        if epoch < 100: re = 10*args.re  elif epoch < 200: re = 5*args.re  else: re = args.re

    evaluated on the official 1-based epoch (``first_epoch=1``, line 214); enabled because
    ``--curriculum`` defaults to True (line 245) and ``toolkits/disentangle_cifar.sh`` does
    not pass it.

    Example:
        >>> c = EpochCurriculum()
        >>> [c(e) for e in (1, 99, 100, 199, 200, 300)]
        [10.0, 10.0, 5.0, 5.0, 1.0, 1.0]
        >>> c.for_keras_epoch(0), c.for_keras_epoch(99)
        (10.0, 5.0)
    """

    def __init__(
        self,
        pieces: Sequence[tuple[int | None, float]] = ((100, 10.0), (200, 5.0), (None, 1.0)),
        first_epoch: int = 1,
    ):
        pieces = tuple((None if u is None else int(u), float(v)) for u, v in pieces)
        if not pieces or pieces[-1][0] is not None:
            raise ValueError(f"pieces: expected the last piece to be (None, value), got {pieces}")
        ends = [u for u, _ in pieces[:-1]]
        if any(u is None for u in ends) or ends != sorted(set(ends)):
            raise ValueError(f"pieces: expected strictly increasing epoch bounds, got {pieces}")
        self.pieces = pieces
        self.first_epoch = check_positive_int(first_epoch, "first_epoch", minimum=0)

    def __call__(self, epoch: int) -> float:
        for until, value in self.pieces:
            if until is None or epoch < until:
                return value
        raise AssertionError("unreachable: the last piece never ends")

    def for_keras_epoch(self, epoch: int) -> float:
        """The value at Keras's 0-based ``epoch`` (official epoch ``epoch + first_epoch``)."""
        return self(epoch + self.first_epoch)

    def scaled(self, factor: float) -> EpochCurriculum:
        """The same curriculum with every value multiplied by ``factor`` (e.g. ``--re``)."""
        return EpochCurriculum(tuple((u, v * factor) for u, v in self.pieces), self.first_epoch)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EpochCurriculum) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((self.pieces, self.first_epoch))

    def __repr__(self) -> str:
        return f"EpochCurriculum(pieces={self.pieces}, first_epoch={self.first_epoch})"

    def get_config(self) -> dict[str, Any]:
        return {"pieces": [list(p) for p in self.pieces], "first_epoch": self.first_epoch}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EpochCurriculum:
        return cls(pieces=tuple(tuple(p) for p in config["pieces"]), first_epoch=config["first_epoch"])


class CurriculumCallback(keras.callbacks.Callback):
    """Assign ``curriculum`` to a variable at the beginning of every epoch.

    Args:
        curriculum: the value by epoch (its ``first_epoch`` maps Keras's 0-based epochs).
        variable_or_attr: a ``keras.Variable`` / ``tf.Variable``, or the name of a model
            attribute holding one. A plain Python number is refused: a compiled
            ``train_step`` captures it as a constant, so changing it would do nothing.
        log_name: key under which the value is added to the epoch logs (History);
            defaults to the attribute name, or ``"curriculum"``.

    Example:
        >>> v = keras.Variable(1.0, trainable=False)
        >>> cb = CurriculumCallback(EpochCurriculum(), v)
        >>> cb.on_epoch_begin(99); float(v.numpy())
        5.0
    """

    def __init__(
        self,
        curriculum: EpochCurriculum,
        variable_or_attr: Any,
        log_name: str | None = None,
    ):
        super().__init__()
        if not isinstance(curriculum, EpochCurriculum):
            raise ValueError(f"curriculum: expected an EpochCurriculum, got {type(curriculum).__name__}")
        if not isinstance(variable_or_attr, str) and not _is_variable(variable_or_attr):
            raise ValueError(
                "variable_or_attr: expected a keras.Variable/tf.Variable or a model attribute name, "
                f"got {type(variable_or_attr).__name__}"
            )
        self.curriculum = curriculum
        self.variable_or_attr = variable_or_attr
        if log_name is None:
            log_name = variable_or_attr if isinstance(variable_or_attr, str) else "curriculum"
        self.log_name = log_name
        self._value: float | None = None

    def _variable(self) -> Any:
        if not isinstance(self.variable_or_attr, str):
            return self.variable_or_attr
        if self.model is None or not hasattr(self.model, self.variable_or_attr):
            raise ValueError(f"variable_or_attr: the model has no attribute {self.variable_or_attr!r}")
        var = getattr(self.model, self.variable_or_attr)
        if not _is_variable(var):
            raise ValueError(
                f"variable_or_attr: model.{self.variable_or_attr} is a {type(var).__name__}, expected a "
                "variable (a traced train_step would keep a Python number constant)"
            )
        return var

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._value = self.curriculum.for_keras_epoch(epoch)
        self._variable().assign(self._value)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None and self._value is not None:
            logs[self.log_name] = self._value


def _is_variable(obj: Any) -> bool:
    return isinstance(obj, keras.Variable | tf.Variable)
