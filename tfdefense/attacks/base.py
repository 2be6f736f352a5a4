"""The Attack base class, parameter checks and the name registry.

An attack is a small, serializable bundle of parameters. ``generate(x, y)``
runs it against any callable that maps float32 NHWC images in [0, 1] to logits
of shape (N, num_classes): a bare classifier, the CD-VAE path ``D(x - G(x))``,
the grey-box path ``classifier(G(x))``, or a whole defense built from
``bpda``/``eot`` pieces. Work goes batch by batch (``batch_size`` images at a
time, a tqdm bar when ``verbose``); batch ``i`` draws its randomness from the
stateless seed ``(seed, i)``, so the same seed gives the same ``x_adv`` on CPU
whether a set is generated in one go or resumed batch by batch
(``AdversarialSet``).

Example:
    >>> import numpy as np
    >>> from tfdefense.attacks import get_attack
    >>> from tfdefense.nets import small_cnn
    >>> model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    >>> attack = get_attack("pgd_linf", model=model, eps=0.1, steps=2)
    >>> x_adv = attack.generate(x)
    >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfdefense.validation import check_images, check_labels, check_number, check_positive_int

NORMS = ("linf", "l2")

#: name -> (class, fixed parameters); filled by ``register``
_REGISTRY: dict[str, tuple[type[Attack], dict[str, Any]]] = {}


def register(name: str, **fixed: Any):
    """Class decorator: make ``get_attack(name)`` build the class with ``fixed`` params.

    The first registered name of a class is its canonical ``name``; the class is
    also registered for Keras serialization (``keras.saving``).
    """

    def deco(cls: type[Attack]) -> type[Attack]:
        if name in _REGISTRY:
            raise ValueError(f"attack name {name!r} registered twice")
        _REGISTRY[name] = (cls, dict(fixed))
        if "name" not in cls.__dict__:
            cls.name = name
            keras.saving.register_keras_serializable(package="tfdefense.attacks")(cls)
        return cls

    return deco


def available_attacks() -> tuple[str, ...]:
    """Every name ``get_attack`` accepts, sorted."""
    return tuple(sorted(_REGISTRY))


def get_attack(name: str, **params: Any) -> Attack:
    """Build the attack registered as ``name`` with ``params``.

    Aliases fix a parameter (``pgd_linf`` is ``pgd`` with ``norm="linf"``);
    passing a conflicting value raises ``ValueError``.

    Args:
        name: one of ``available_attacks()``.
        **params: the attack's parameters, and optionally ``model``.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"attack: unknown attack {name!r}; expected one of {', '.join(available_attacks())}"
        )
    cls, fixed = _REGISTRY[name]
    for key, value in fixed.items():
        if key in params and params[key] != value:
            raise ValueError(
                f"{key}: attack {name!r} fixes {key}={value!r}, got {params[key]!r}; "
                f"use {cls.name!r} with {key}={params[key]!r} instead"
            )
    return cls(**{**params, **fixed})


def check_norm(norm: Any, supported: tuple[str, ...], attack: str) -> str:
    """Return ``norm`` if ``attack`` supports it, else ``ValueError``."""
    if norm not in supported:
        raise ValueError(
            f"norm: attack {attack!r} supports norm in {supported}, got {norm!r}"
        )
    return norm


def check_model_output(logits: Any, n: int, num_classes: int | None = None) -> int:
    """Check what a model returned for ``n`` images; return the number of classes."""
    shape = tuple(getattr(logits, "shape", ()))
    if len(shape) != 2 or shape[0] != n or shape[1] < 2:
        raise ValueError(
            f"model: expected logits of shape ({n}, num_classes >= 2) for {n} images, "
            f"got shape {shape}"
        )
    if num_classes is not None and shape[1] != num_classes:
        raise ValueError(f"model: expected {num_classes} logits per image, got {shape[1]}")
    arr = np.asarray(logits)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"model: expected floating-point logits, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("model: returned NaN or infinite logits")
    if np.all(arr >= 0) and np.allclose(arr.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(
            "model: returned probabilities (non-negative rows summing to 1); attacks need "
            "logits, e.g. drop the final softmax"
        )
    return int(shape[1])


def batch_seed(seed: int, index: int) -> tf.Tensor:
    """The stateless seed of batch ``index``: shape (2,) int32."""
    return tf.constant([seed % (2**31 - 1), index % (2**31 - 1)], tf.int32)


class Attack:
    """Base class of every attack: parameters on the object, work in ``_attack_batch``.

    Subclasses declare their parameters in ``__init__`` (one attribute each,
    listed in ``params``), call ``super().__init__`` and end with
    ``self._check_params()``.

    Args:
        model: the callable to attack (images -> logits); may also be given to
            ``generate``.
        batch_size: images per batch.
        seed: seed of the random parts; batch ``i`` uses ``(seed, i)``.
        verbose: show a tqdm progress bar over batches.
    """

    name: ClassVar[str] = ""
    #: norms the attack supports; the first is the default
    supported_norms: ClassVar[tuple[str, ...]] = ("linf",)
    #: parameter names that ``get_config`` returns (besides batch_size, seed, verbose)
    params: ClassVar[tuple[str, ...]] = ()
    #: whether ``targeted=True`` is supported
    supports_targeted: ClassVar[bool] = False

    def __init__(
        self,
        model=None,
        *,
        batch_size: int = 128,
        seed: int = 0,
        verbose: bool = False,
    ):
        self.model = model
        self.batch_size = batch_size
        self.seed = seed
        self.verbose = verbose

    # -- parameters -------------------------------------------------------
    def _check_params(self) -> None:
        """Validate every parameter; ``ValueError`` naming the bad one."""
        if self.model is not None and not callable(self.model):
            raise ValueError(f"model: expected a callable images -> logits, got {self.model!r}")
        check_positive_int(self.batch_size, "batch_size")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")
        if "norm" in self.params:
            check_norm(self.norm, self.supported_norms, self.name)
        if "eps" in self.params and self.eps is not None:
            high = 1.0 if getattr(self, "norm", "linf") == "linf" else None
            check_number(self.eps, "eps", low=0.0, high=high, low_inclusive=False)
        if "steps" in self.params:
            check_positive_int(self.steps, "steps")
        if "targeted" in self.params:
            if not isinstance(self.targeted, bool):
                raise ValueError(f"targeted: expected True or False, got {self.targeted!r}")
            if self.targeted and not self.supports_targeted:
                raise ValueError(f"targeted: attack {self.name!r} supports only targeted=False")

    def get_config(self) -> dict[str, Any]:
        """All parameters (not the model); ``from_config`` rebuilds the attack."""
        config = {p: getattr(self, p) for p in self.params}
        config.update(batch_size=self.batch_size, seed=self.seed, verbose=self.verbose)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Attack:
        return cls(**config)

    @property
    def label(self) -> str:
        """The most specific registered name for these parameters (``pgd_l2`` over ``pgd``)."""
        best, best_fixed = self.name, -1
        for alias, (cls, fixed) in _REGISTRY.items():
            if cls is type(self) and len(fixed) > best_fixed and all(
                getattr(self, k, None) == v for k, v in fixed.items()
            ):
                best, best_fixed = alias, len(fixed)
        return best

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # -- running ------------------------------------------------------------
    def __call__(self, model, x, y=None) -> np.ndarray:
        """Same as ``generate(x, y, model=model)``."""
        return self.generate(x, y, model=model)

    def prepare(self, x, y=None, model=None):
        """Validate inputs; return (model, x float32, y int64, num_classes).

        ``y`` defaults to the model's predictions on ``x`` (no label leaking,
        as cleverhans does); targeted attacks need ``y`` (the target classes).
        """
        model = self.model if model is None else model
        if model is None:
            raise ValueError("model: expected a callable images -> logits, got None")
        if not callable(model):
            raise ValueError(f"model: expected a callable images -> logits, got {model!r}")
        x = check_images(x, "x")
        if "eps" in self.params and self.eps is not None and getattr(self, "norm", "") == "l2":
            limit = float(np.sqrt(np.prod(x.shape[1:])))
            if self.eps > limit:
                raise ValueError(
                    f"eps: L2 eps above the data range: images of shape {x.shape[1:]} are at "
                    f"most {limit:.4g} apart in L2, got {self.eps}"
                )
        probe = model(tf.constant(x[: min(2, len(x))]))
        num_classes = check_model_output(probe, min(2, len(x)))
        if y is None:
            if getattr(self, "targeted", False):
                raise ValueError("y: targeted attacks need target labels, got None")
            y = self.predict_labels(model, x)
        y = check_labels(y, num_classes, "y", n=len(x))
        return model, x, y, num_classes

    def predict_labels(self, model, x: np.ndarray) -> np.ndarray:
        out = [
            np.argmax(np.asarray(model(tf.constant(x[i : i + self.batch_size]))), axis=1)
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out).astype(np.int64)

    def generate(self, x, y=None, model=None) -> np.ndarray:
        """Adversarial examples for ``x`` (float32 NHWC in [0, 1]).

        Args:
            x: clean images.
            y: true labels (untargeted; default: the model's predictions) or
                target labels (``targeted=True``, required).
            model: the callable to attack; default the one given at construction.

        Returns:
            ``x_adv`` as float32 numpy, same shape as ``x``, inside [0, 1].
        """
        model, x, y, _ = self.prepare(x, y, model)
        out = []
        starts = range(0, len(x), self.batch_size)
        for i, start in enumerate(tqdm(starts, desc=self.name, disable=not self.verbose)):
            sl = slice(start, start + self.batch_size)
            out.append(self.run_batch(model, x[sl], y[sl], i))
        return np.concatenate(out)

    def run_batch(self, model, x: np.ndarray, y: np.ndarray, index: int) -> np.ndarray:
        """Attack one validated batch with the seed of batch ``index``."""
        seed = batch_seed(self.seed, index)
        x_adv = self._attack_batch(model, tf.constant(x), tf.constant(y), seed)
        x_adv = np.clip(np.asarray(x_adv, np.float32), 0.0, 1.0)
        return x_adv

    def _attack_batch(self, model, x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError


class CompiledAttack(Attack):
    """An attack whose batch work is one ``tf.function`` graph per model.

    Subclasses implement ``_graph(model, x, y, seed)`` in TensorFlow ops; it is
    traced once per (model, batch shape) and reused.
    """

    def __init__(self, model=None, **kwargs):
        super().__init__(model, **kwargs)
        self._compiled: dict[int, tuple[Any, Any]] = {}

    def _attack_batch(self, model, x, y, seed):
        entry = self._compiled.get(id(model))
        if entry is None or entry[0] is not model:
            fn = tf.function(lambda x, y, s: self._graph(model, x, y, s), reduce_retracing=True)
            entry = (model, fn)
            self._compiled[id(model)] = entry
        return entry[1](x, y, seed)

    def _graph(self, model, x, y, seed):
        raise NotImplementedError
