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

Data parallelism: ``generate(x, y, strategy=...)`` (or a strategy made
current by ``with strategy.scope():``) spreads the work over the strategy's
replicas with ``strategy.run``, and the result does not depend on the number
of replicas (same seed, same ``batch_size``: the same ``x_adv`` as on one
device, up to float rounding). How depends on the attack's ``replication``:

* ``"batches"`` (every ``CompiledAttack``: FGSM, PGD, BIM, MIM, C&W-Linf,
  C&W-L2, DeepFool, SPSA, JPEG-Linf, ReColor, StAdv): each ``strategy.run`` step attacks one
  whole batch per replica, batch ``i`` with its own seed ``(seed, i)``, so every
  random draw is the single-device one. ``batch_size`` is the per-replica batch;
  a step covers ``replicas * batch_size`` images.
* ``"points"`` (APGD, APGD-T, FAB-T, Square, AutoAttack): their randomness is
  drawn per point from (seed, the point's index in the data), so ``replicas``
  consecutive batches are attacked together and every compiled run (each
  restart, target and component) is split over the replicas point-wise.
* ``None`` (C&W-L2 and DeepFool with ``backend="foolbox"``, and the cleverhans
  backend): the work is eager Python around a library, which ``strategy.run``
  cannot split; they run on one device and say so with a ``UserWarning``.

Strategies: ``MirroredStrategy`` (tested on logical CPU devices) and
``OneDeviceStrategy``; any other whose replicas are all on this machine goes
the same way. Multi-worker and TPU strategies raise ``ValueError`` (see
``replica_strategy``). Build or load the model under ``strategy.scope()`` so
each replica reads its own copy of the weights; a model built outside it still
works, its weights read from the device they live on.

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

import contextlib
import inspect
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfdefense import profiling
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


#: how an attack spreads over a strategy's replicas (see the module docstring)
REPLICATION = ("batches", "points", None)


def replica_strategy(strategy: tf.distribute.Strategy | None = None) -> tf.distribute.Strategy | None:
    """The strategy to spread attack work over, or ``None`` for the plain single-device path.

    ``strategy=None`` takes the current one (``with strategy.scope():``), if any.
    The default strategy gives ``None``. Raises ``ValueError`` inside
    ``strategy.run`` (a replica context), for TPU strategies (the attacks use
    dynamic shapes, the ragged last batch and Square's and early-stop PGD's
    shrinking sets of points, that XLA on TPU does not compile; untested) and for
    multi-worker strategies (the replicas of other machines would have to send
    their examples back; run one process per machine on its share of the data,
    each with a ``MirroredStrategy`` over its GPUs).
    """
    if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
        raise ValueError(
            "strategy: attacks run in the cross-replica context; call generate outside "
            "strategy.run (pass strategy= or use `with strategy.scope():`)")
    if strategy is None:
        if not tf.distribute.has_strategy():
            return None
        strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(f"strategy: expected a tf.distribute.Strategy or None, got {strategy!r}")
    if isinstance(strategy, tf.distribute.TPUStrategy | tf.distribute.experimental.TPUStrategy):
        raise ValueError(
            "strategy: TPU strategies are not supported by the attacks (they use dynamic "
            "shapes XLA cannot compile); use a MirroredStrategy over GPUs")
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: no devices of its own
        return None
    if strategy.num_replicas_in_sync != len(devices):
        raise ValueError(
            f"strategy: {strategy.num_replicas_in_sync} replicas but {len(devices)} on this "
            "machine; multi-worker strategies are not supported by the attacks. Run one process "
            "per machine on its share of the data with a MirroredStrategy over its devices")
    return strategy


class ReplicaRunner:
    """Run ``fn`` over a list of jobs, one job per replica per ``strategy.run`` step.

    A job is a tuple of arguments (numpy arrays or tensors); ``rows`` marks the
    ones with a leading batch axis. A step with fewer jobs than replicas gives
    the idle replicas a one-row copy of its first job and drops their results.
    Each job's arguments are placed on its replica's device; ``fn`` runs inside
    one ``tf.function`` (traced with ``reduce_retracing``), so the replicas run
    in parallel. ``run`` returns, per job in order, ``fn``'s outputs as numpy.
    """

    def __init__(self, strategy: tf.distribute.Strategy, fn: Callable):
        self.strategy = strategy
        self.devices = tuple(strategy.extended.worker_devices)
        self._step = tf.function(lambda args: strategy.run(fn, args=args), reduce_retracing=True)

    @property
    def replicas(self) -> int:
        return len(self.devices)

    def run(self, jobs: Sequence[tuple], rows: Sequence[bool]) -> Iterator[Any]:
        """Yield ``fn(*job)`` (numpy, same structure) for every job, in order."""
        r = self.replicas
        for start in range(0, len(jobs), r):
            group = list(jobs[start : start + r])
            real = len(group)
            dummy = tuple(a[:1] if row else a for a, row in zip(group[0], rows, strict=True))
            group += [dummy] * (r - real)
            args = tuple(
                self.strategy.experimental_distribute_values_from_function(
                    lambda ctx, k=k, g=group: self._place(g[ctx.replica_id_in_sync_group][k], ctx))
                for k in range(len(rows))
            )
            out = self._step(args)
            flat = [self.strategy.experimental_local_results(v) for v in tf.nest.flatten(out)]
            for replica in range(real):
                yield tf.nest.pack_sequence_as(out, [np.asarray(v[replica]) for v in flat])

    def _place(self, value, ctx) -> tf.Tensor:
        with tf.device(self.devices[ctx.replica_id_in_sync_group]):
            return tf.identity(tf.convert_to_tensor(value))


class _PointSplit:
    """``fn(*points, *shared)`` with its per-point arguments split over the replicas.

    The points are cut into ``replicas`` consecutive chunks (``np.array_split``),
    one per replica; the per-point outputs are concatenated back in order.
    """

    def __init__(self, runner: ReplicaRunner, n_points: int, fn: Callable):
        self.runner, self.n_points, self.fn = runner, n_points, fn

    def __call__(self, *args):
        points = [np.asarray(a) for a in args[: self.n_points]]
        shared = [np.asarray(a) for a in args[self.n_points :]]
        if not len(points[0]):  # nothing to split: the plain run on no points
            return self.fn(*args)
        chunks = [c for c in np.array_split(np.arange(len(points[0])), self.runner.replicas)
                  if len(c)]
        jobs = [tuple(p[c] for p in points) + tuple(shared) for c in chunks]
        rows = (True,) * self.n_points + (False,) * len(shared)
        outs = list(self.runner.run(jobs, rows))
        return tuple(tf.constant(np.concatenate([o[k] for o in outs])) for k in range(len(outs[0])))


#: model (a bound method's object) -> {(function id, strategy id): (function, strategy, runner)}
_PREDICT_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predict_runner(model: Callable, strategy: tf.distribute.Strategy) -> ReplicaRunner:
    """The ``ReplicaRunner`` of ``model`` on ``strategy``, cached while ``model`` lives.

    The runner holds ``model`` weakly (a bound method through its object), so
    the cache does not keep a model alive, and each (model, strategy) is traced
    once however many times it predicts.
    """
    try:
        if inspect.ismethod(model):  # a new bound-method object at every attribute access
            owner, func, ref = model.__self__, model.__func__, weakref.WeakMethod(model)
        else:
            owner, func, ref = model, model, weakref.ref(model)
        cache = _PREDICT_RUNNERS.setdefault(owner, {})
    except TypeError:  # not weak-referenceable or not hashable: no cache
        return ReplicaRunner(strategy, model)
    key = (id(func), id(strategy))
    entry = cache.get(key)
    if entry is None or entry[0] is not func or entry[1] is not strategy:
        entry = (func, strategy, ReplicaRunner(strategy, lambda images: ref()(images)))
        cache[key] = entry
    return entry[2]


def predict_logits(model: Callable, x: np.ndarray, batch_size: int = 256,
                   strategy: tf.distribute.Strategy | None = None) -> np.ndarray:
    """``model``'s logits on ``x`` as numpy, ``batch_size`` images per call.

    With ``strategy`` (default the current one, if any) the batches run
    ``replicas`` at a time, one per replica, ``model`` traced by ``tf.function``
    once per (model, strategy); the logits are those of one device.
    """
    strategy = replica_strategy(strategy)
    starts = range(0, len(x), batch_size)
    if strategy is None:
        return np.concatenate([np.asarray(model(tf.constant(x[s : s + batch_size])))
                               for s in starts])
    jobs = [(x[s : s + batch_size],) for s in starts]
    return np.concatenate(list(_predict_runner(model, strategy).run(jobs, rows=(True,))))


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
    #: how ``generate(strategy=...)`` spreads the work over replicas: "batches"
    #: (needs ``_graph``), "points" (needs ``attack_points`` whose compiled runs go
    #: through ``_split_points``) or None (one device, with a warning)
    replication: ClassVar[str | None] = None

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

    def predict_labels(self, model, x: np.ndarray,
                       strategy: tf.distribute.Strategy | None = None) -> np.ndarray:
        """``model``'s argmax labels on ``x``, ``batch_size`` images at a time (per replica)."""
        logits = predict_logits(model, x, self.batch_size, strategy)
        return np.argmax(logits, axis=1).astype(np.int64)

    @profiling.timed("attack")  # a profiled reproduction's attack time (else no cost)
    def generate(self, x, y=None, model=None,
                 strategy: tf.distribute.Strategy | None = None) -> np.ndarray:
        """Adversarial examples for ``x`` (float32 NHWC in [0, 1]).

        Args:
            x: clean images.
            y: true labels (untargeted; default: the model's predictions) or
                target labels (``targeted=True``, required).
            model: the callable to attack; default the one given at construction.
            strategy: a ``tf.distribute`` strategy to spread the batches over its
                replicas (see the module docstring); default the current one, if
                any. The result is the same for any number of replicas.

        Returns:
            ``x_adv`` as float32 numpy, same shape as ``x``, inside [0, 1].
        """
        strategy = replica_strategy(strategy)
        model, x, y, _ = self.prepare(x, y, model)
        return np.concatenate([adv for _, adv in self.iter_batches(model, x, y, strategy=strategy)])

    def replication_mode(self) -> str | None:
        """This attack's ``replication`` (an instance may narrow its class's)."""
        return self.replication

    def iter_batches(self, model, x: np.ndarray, y: np.ndarray, indices: Sequence[int] | None = None,
                     *, strategy: tf.distribute.Strategy | None = None, desc: str | None = None,
                     verbose: bool | None = None, leave: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """Attack batches of validated inputs (``prepare``); yield ``(index, x_adv)`` in order.

        Batch ``index`` is ``x[index * batch_size : (index + 1) * batch_size]``,
        attacked exactly as ``run_batch(model, ..., index)`` does, alone or
        with ``strategy`` among ``replicas`` batches at once.

        Args:
            indices: the batches to attack; default all of them.
            strategy: as in ``generate``; ``None`` here means none (resolve a
                current one with ``replica_strategy()`` first).
            desc, verbose, leave: the tqdm bar (default: the attack's name and
                ``verbose``).
        """
        bs = self.batch_size
        num = -(-len(x) // bs)
        indices = list(range(num)) if indices is None else [int(i) for i in indices]
        if any(not 0 <= i < num for i in indices):
            raise ValueError(f"indices: expected batch indices in [0, {num}), got {indices}")
        strategy = None if strategy is None else replica_strategy(strategy)
        mode = self.replication_mode()
        if strategy is not None and mode is None:
            warnings.warn(
                f"strategy: attack {self.label!r} runs eagerly around a library, which "
                f"strategy.run cannot split; it runs on one device, not over the "
                f"{strategy.num_replicas_in_sync} replicas", UserWarning, stacklevel=3)
            strategy = None
        if mode not in REPLICATION:
            raise ValueError(f"replication: expected one of {REPLICATION}, got {mode!r}")
        show = self.verbose if verbose is None else verbose
        sl = lambda i: slice(i * bs, (i + 1) * bs)  # noqa: E731
        with tqdm(total=len(indices), desc=desc or self.name, disable=not show, leave=leave) as bar:
            if strategy is None:
                for i in indices:
                    adv = self.run_batch(model, x[sl(i)], y[sl(i)], i)
                    bar.update(1)
                    yield i, adv
                return
            if mode == "batches":
                jobs = [(x[sl(i)], y[sl(i)], batch_seed(self.seed, i)) for i in indices]
                results = self._runner(model, strategy).run(jobs, rows=(True, True, False))
                for i, adv in zip(indices, results, strict=True):
                    bar.update(1)
                    yield i, np.clip(np.asarray(adv, np.float32), 0.0, 1.0)
                return
            r = strategy.num_replicas_in_sync
            with self._on_replicas(strategy):
                for group in (indices[g : g + r] for g in range(0, len(indices), r)):
                    ids = np.concatenate([np.arange(len(x))[sl(i)] for i in group])
                    adv = self.attack_points(model, x[ids], y[ids], ids)
                    adv = np.clip(np.asarray(adv, np.float32), 0.0, 1.0)
                    ends = np.cumsum([len(x[sl(i)]) for i in group])[:-1]
                    for i, part in zip(group, np.split(adv, ends), strict=True):
                        bar.update(1)
                        yield i, part

    def attack_points(self, model, x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Attack validated points whose indices in the data are ``ids`` ("points" attacks)."""
        raise NotImplementedError(f"attack {self.name!r} has no point-wise form")

    def _runner(self, model, strategy: tf.distribute.Strategy) -> ReplicaRunner:
        """The cached ``ReplicaRunner`` of one batch per replica ("batches" attacks)."""
        runners = self.__dict__.setdefault("_runners", {})
        key = (id(model), id(strategy))
        entry = runners.get(key)
        if entry is None or entry[0] is not model or entry[1] is not strategy:
            fn = lambda x, y, seed: self._graph(model, x, y, seed)  # noqa: E731
            entry = (model, strategy, ReplicaRunner(strategy, fn))
            runners[key] = entry
        return entry[2]

    @contextlib.contextmanager
    def _on_replicas(self, strategy: tf.distribute.Strategy | None) -> Iterator[None]:
        """While inside, ``_split_points`` splits compiled runs over ``strategy``'s replicas."""
        previous = self.__dict__.get("_strategy")
        self._strategy = strategy
        try:
            yield
        finally:
            self._strategy = previous

    def _replicas(self) -> tf.distribute.Strategy | None:
        """The strategy of the enclosing ``_on_replicas``, or ``None``."""
        return self.__dict__.get("_strategy")

    def _split_points(self, fn: Callable, n_points: int) -> Callable:
        """``fn(*points, *shared)`` (per-point outputs, the first ``n_points`` arguments
        per point) as is, or split point-wise over the replicas inside ``_on_replicas``."""
        strategy = self._replicas()
        if strategy is None:
            return fn
        splits = self.__dict__.setdefault("_splits", {})
        key = (id(fn), id(strategy))
        entry = splits.get(key)
        if entry is None or entry[0] is not fn or entry[1] is not strategy:
            # a tf.function's Python body, traced once inside the runner's own tf.function
            inner = getattr(fn, "python_function", fn)
            entry = (fn, strategy, _PointSplit(ReplicaRunner(strategy, inner), n_points, fn))
            splits[key] = entry
        return entry[2]

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
    traced once per (model, batch shape) and reused. Under a strategy each
    replica runs it on a whole batch (``replication = "batches"``).
    """

    replication = "batches"
    #: the backends a subclass with a ``backend`` parameter offers ("compiled" is ``_graph``)
    backends: tuple[str, ...] = ("compiled",)
    #: True: trace ``_graph`` once per (model, image shape) for every batch size (an input
    #: signature with a free batch axis; labels int64, seed int32 (2,)); False: per model,
    #: retraced as batch shapes vary (``reduce_retracing``)
    trace_any_batch = False

    def replication_mode(self) -> str | None:
        # a non-compiled backend (cleverhans, foolbox) works eagerly outside ``_graph``
        return self.replication if getattr(self, "backend", "compiled") == "compiled" else None

    def __init__(self, model=None, **kwargs):
        super().__init__(model, **kwargs)
        self._compiled: dict[tuple, tuple[Any, Any]] = {}

    def _check_params(self):
        super()._check_params()
        backend = getattr(self, "backend", None)
        if backend is not None and backend not in self.backends:
            raise ValueError(
                f"backend: attack {self.name!r} supports backend in {self.backends}, "
                f"got {backend!r}"
            )

    def _attack_batch(self, model, x, y, seed):
        shape = tuple(x.shape[1:]) if self.trace_any_batch else None
        entry = self._compiled.get((id(model), shape))
        if entry is None or entry[0] is not model:
            def graph(x, y, s):
                return self._graph(model, x, y, s)

            if self.trace_any_batch:
                fn = tf.function(graph, input_signature=(
                    tf.TensorSpec((None, *shape), tf.float32), tf.TensorSpec((None,), tf.int64),
                    tf.TensorSpec((2,), tf.int32)))
            else:
                fn = tf.function(graph, reduce_retracing=True)
            entry = (model, fn)
            self._compiled[(id(model), shape)] = entry
        return entry[1](x, y, seed)

    def _graph(self, model, x, y, seed):
        raise NotImplementedError
