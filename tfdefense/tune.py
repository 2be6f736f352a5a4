"""keras-tuner HyperModel for the CD-VAE weights γ (log scale) and β.

``CDVAEHyperModel`` builds a compiled ``CDVAE`` per trial (called once so the
tuner can reload its best models) and trains it with ``model.fit``. The
objective is chosen by name (``OBJECTIVES``):

* ``accuracy``: D's accuracy on R(x) (``val_accuracy`` from ``test_step``);
* ``reconstruction_accuracy``: 1 − ‖x − G(x)‖²/‖x‖² (CD-VAE §4.1);
* ``g_accuracy``: a reference classifier (pre-trained on x) on G(x);
* ``defense_accuracy``: the same classifier on G(x′), x′ PGD examples crafted
  on it: the grey-box defense accuracy of Fig 4;
* ``detection_auc``: ROC AUC of the Mahalanobis score (Lee et al.) on D's
  penultimate features of R(x), separating x from x′: Fig 4's detection curve.

The last three need a ``GreyBoxProbe`` (reference classifier, validation
images and their PGD examples, clean images to fit the class Gaussians);
a ``ProbeCallback`` adds them to the epoch logs as ``val_<name>`` before the
tuner's checkpoint callback reads them, so any of them can be the objective
(keras-tuner needs ``Objective("val_<key>")`` to match a logged key).

Example:
    >>> import numpy as np, tempfile
    >>> from tfdefense import data
    >>> from tfdefense.tune import CDVAEHyperModel, make_tuner
    >>> x, y = data.load_arrays("mnist_5k", "train")
    >>> hm = CDVAEHyperModel("mnist_5k", gamma=[2.0], latent_dim=8, width=8)
    >>> tuner = make_tuner(hm, "accuracy", "grid", directory=tempfile.mkdtemp())
    >>> tuner.search(x[:64], y[:64], validation_data=(x[64:96], y[64:96]), epochs=1, verbose=0)
    >>> tuner.get_best_hyperparameters()[0].get("gamma")
    2.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from tfdefense import data as data_lib
from tfdefense.models import CDVAE
from tfdefense.validation import check_images, check_labels, check_number, check_positive_int

#: objective name -> (logged key, direction)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "accuracy": ("val_accuracy", "max"),
    "reconstruction_accuracy": ("val_reconstruction_accuracy", "max"),
    "g_accuracy": ("val_g_accuracy", "max"),
    "defense_accuracy": ("val_defense_accuracy", "max"),
    "detection_auc": ("val_detection_auc", "max"),
    "loss": ("val_loss", "min"),
}
#: objectives computed by the ``ProbeCallback`` (need a ``GreyBoxProbe``)
PROBE_METRICS = ("g_accuracy", "defense_accuracy", "detection_auc")
ALGORITHMS = ("grid", "random", "bayesian")


def objective(name: str) -> keras_tuner.Objective:
    """The keras-tuner ``Objective`` of an objective name from ``OBJECTIVES``."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {name!r}")
    return keras_tuner.Objective(*OBJECTIVES[name])


@dataclass
class GreyBoxProbe:
    """What the probe metrics need: D̂, validation x / y / x′, clean images for the Gaussians."""

    reference_classifier: Any
    x: np.ndarray
    y: np.ndarray
    x_adv: np.ndarray
    x_fit: np.ndarray
    y_fit: np.ndarray

    def __post_init__(self):
        if not callable(self.reference_classifier):
            raise ValueError("reference_classifier: expected a callable images -> logits")
        self.x = check_images(self.x, "x")
        self.x_adv = check_images(self.x_adv, "x_adv", shape=self.x.shape[1:])
        if len(self.x_adv) != len(self.x):
            raise ValueError(f"x_adv: expected one adversarial image per image ({len(self.x)}), "
                             f"got {len(self.x_adv)}")
        shape = getattr(self.reference_classifier, "output_shape", None)
        classes = int(shape[-1]) if shape and shape[-1] else 2**31 - 1
        self.y = check_labels(self.y, classes, "y", n=len(self.x))
        self.x_fit = check_images(self.x_fit, "x_fit", shape=self.x.shape[1:])
        self.y_fit = check_labels(self.y_fit, classes, "y_fit", n=len(self.x_fit))

    @classmethod
    def with_pgd(cls, reference_classifier, x, y, x_fit, y_fit, eps: float = 0.3, steps: int = 20,
                 seed: int = 0) -> GreyBoxProbe:
        """Craft x′ with PGD-Linf on the reference classifier (eps 0.3: MNIST; 8/255 on CIFAR-10)."""
        from tfdefense.attacks import get_attack

        x_adv = get_attack("pgd_linf", model=reference_classifier, eps=eps, steps=steps,
                           seed=seed).generate(x, y)
        return cls(reference_classifier, x, y, x_adv, x_fit, y_fit)


def probe_metrics(model: CDVAE, probe: GreyBoxProbe, names: Sequence[str] = PROBE_METRICS,
                  batch_size: int = 256) -> dict[str, float]:
    """The probe metrics of a CD-VAE as fractions in [0, 1]."""
    unknown = [n for n in names if n not in PROBE_METRICS]
    if unknown:
        raise ValueError(f"names: expected names from {PROBE_METRICS}, got {unknown}")
    out: dict[str, float] = {}

    @tf.function(reduce_retracing=True)
    def g_logits(x):
        g = tf.clip_by_value(model.generate(x, training=False), 0.0, 1.0)
        return probe.reference_classifier(g, training=False)

    def acc(x):
        preds = np.concatenate([np.argmax(g_logits(tf.constant(x[i:i + batch_size])).numpy(), 1)
                                for i in range(0, len(x), batch_size)])
        return float(np.mean(preds == probe.y))

    if "g_accuracy" in names:
        out["g_accuracy"] = acc(probe.x)
    if "defense_accuracy" in names:
        out["defense_accuracy"] = acc(probe.x_adv)
    if "detection_auc" in names:
        from tfdefense.detect import FeatureExtractor, Mahalanobis, metrics

        md = Mahalanobis(FeatureExtractor.for_residual(model), magnitude=0.0)
        md.fit(probe.x_fit, probe.y_fit)
        scores = -np.concatenate([md.score(probe.x)[:, 0], md.score(probe.x_adv)[:, 0]])
        labels = np.concatenate([np.zeros(len(probe.x)), np.ones(len(probe.x_adv))])
        out["detection_auc"] = metrics.roc_auc(labels, scores)
    return out


class ProbeCallback(keras.callbacks.Callback):
    """Adds ``val_<metric>`` probe metrics to the logs at the end of every epoch."""

    def __init__(self, probe: GreyBoxProbe, names: Sequence[str] = PROBE_METRICS):
        super().__init__()
        self.probe = probe
        self.names = tuple(names)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for name, value in probe_metrics(self.model, self.probe, self.names).items():
            logs[f"val_{name}"] = value


def _hp_value(hp, name: str, spec):
    """A float hyperparameter from a fixed number, a (low, high) log range or a list of choices."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return hp.Fixed(name, float(spec))
    if isinstance(spec, tuple) and len(spec) == 2:
        return hp.Float(name, float(spec[0]), float(spec[1]), sampling="log")
    return hp.Choice(name, [float(v) for v in spec])


def _check_spec(spec, name: str) -> None:
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        check_number(spec, name, low=0.0)
        return
    if isinstance(spec, tuple) and len(spec) == 2:
        lo = check_number(spec[0], f"{name}[0]", low=0.0, low_inclusive=False)
        hi = check_number(spec[1], f"{name}[1]", low=lo, low_inclusive=False)
        del hi
        return
    if isinstance(spec, list | tuple) and spec:
        for v in spec:
            check_number(v, name, low=0.0)
        return
    raise ValueError(f"{name}: expected a number, a (low, high) tuple or a non-empty list, got {spec!r}")


class CDVAEHyperModel(keras_tuner.HyperModel):
    """Search space over γ and β of ``CDVAE.for_dataset``.

    Args:
        dataset: a ``tfdefense.data`` name (sets the architecture).
        gamma: a number (fixed), a (low, high) tuple (log-uniform; default
            (2e-4, 20), the range of CD-VAE Fig 4) or a list of choices.
        beta: the same for β (default 0.2 fixed, CD-VAE §5).
        latent_dim, width, classifier: passed to ``CDVAE.for_dataset``.
        builder: instead of ``CDVAE.for_dataset``, a callable ``(gamma, beta) -> CDVAE`` (any
            variant, e.g. a ``VQCDVAE`` with a ResNet-50 D, as an experiment's preset builds
            it); ``dataset`` still checks the data, the other architecture arguments are unused.
        probe: a ``GreyBoxProbe`` for the probe metrics.
        probe_metrics: which of ``PROBE_METRICS`` to log every epoch (needs ``probe``).
        seed: the seed each trial starts from (``keras.utils.set_random_seed`` in ``build``: its
            weights and shuffling do not depend on what ran before it in the process).
    """

    def __init__(self, dataset: str = "mnist_5k", gamma=(2e-4, 20.0), beta=0.2,
                 latent_dim: int | None = None, width: int | None = None, classifier: str = "auto",
                 probe: GreyBoxProbe | None = None, probe_metrics: Sequence[str] = (), seed: int = 0,
                 name: str = "cdvae", tunable: bool = True,
                 builder: Callable[[float, float], CDVAE] | None = None):
        super().__init__(name=name, tunable=tunable)
        data_lib.spec(dataset)
        _check_spec(gamma, "gamma")
        _check_spec(beta, "beta")
        self.probe_metrics = tuple(probe_metrics)
        bad = [m for m in self.probe_metrics if m not in PROBE_METRICS]
        if bad:
            raise ValueError(f"probe_metrics: expected names from {PROBE_METRICS}, got {bad}")
        if self.probe_metrics and probe is None:
            raise ValueError(f"probe: metrics {self.probe_metrics} need a GreyBoxProbe, got None")
        self.dataset, self.gamma, self.beta = dataset, gamma, beta
        self.latent_dim, self.width, self.classifier = latent_dim, width, classifier
        self.probe, self.seed, self.builder = probe, seed, builder
        if builder is not None and not callable(builder):
            raise ValueError(f"builder: expected a callable (gamma, beta) -> CDVAE, got {builder!r}")

    def build(self, hp) -> CDVAE:
        # every trial from the seed: its initial weights and its fit's shuffling do not depend
        # on what the process drew before (earlier trials, other experiments of a reproduction,
        # which differ between `reproduce` and `reproduce --jobs N`)
        keras.utils.set_random_seed(self.seed)
        gamma = _hp_value(hp, "gamma", self.gamma)
        beta = _hp_value(hp, "beta", self.beta)
        if self.builder is not None:
            model = self.builder(gamma, beta)
        else:
            model = CDVAE.for_dataset(self.dataset, gamma=gamma, beta=beta, latent_dim=self.latent_dim,
                                      width=self.width, classifier=self.classifier, seed=self.seed)
            model.compile()
        model(tf.zeros((1, *model.input_shape_)))  # built, so the tuner reloads best models
        return model

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        if self.probe_metrics:
            callbacks.insert(0, ProbeCallback(self.probe, self.probe_metrics))
        return model.fit(*args, callbacks=callbacks, **kwargs)


def make_tuner(hypermodel: CDVAEHyperModel, objective_name: str = "accuracy", algorithm: str = "grid",
               max_trials: int | None = None, directory: str = "runs/tune",
               project_name: str = "cdvae", overwrite: bool = False, seed: int = 0):
    """A keras-tuner tuner over ``hypermodel`` optimising ``objective_name``.

    ``overwrite=False`` resumes a search found in ``directory/project_name``.
    """
    if not isinstance(hypermodel, CDVAEHyperModel):
        raise ValueError(f"hypermodel: expected a CDVAEHyperModel, got {hypermodel!r}")
    obj = objective(objective_name)
    if objective_name in PROBE_METRICS and objective_name not in hypermodel.probe_metrics:
        raise ValueError(f"objective: {objective_name!r} is logged only when the hypermodel has "
                         f"probe_metrics including it (got {hypermodel.probe_metrics})")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: expected one of {ALGORITHMS}, got {algorithm!r}")
    if max_trials is not None:
        check_positive_int(max_trials, "max_trials")
    common = {"objective": obj, "directory": directory, "project_name": project_name,
              "overwrite": overwrite, "seed": seed, "max_consecutive_failed_trials": 1}
    if algorithm == "grid":
        return _GridSearch(hypermodel, max_trials=max_trials, **common)
    trials = max_trials or 10
    if algorithm == "random":
        return _RandomSearch(hypermodel, max_trials=trials, **common)
    return _BayesianOptimization(hypermodel, max_trials=trials, **common)


class _TensorBoardOptional:
    """keras-tuner 1.4 imports tensorboard in every trial, even without a TensorBoard callback;
    TensorFlow 2.21 no longer installs it. Only configure it when one is there."""

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        if any(type(c).__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)


class _GridSearch(_TensorBoardOptional, keras_tuner.GridSearch):
    pass


class _RandomSearch(_TensorBoardOptional, keras_tuner.RandomSearch):
    pass


class _BayesianOptimization(_TensorBoardOptional, keras_tuner.BayesianOptimization):
    pass


def trial_table(tuner) -> list[dict[str, Any]]:
    """One row per completed trial: its hyperparameters and the last value of every metric.

    Raises ``RuntimeError`` naming the error if any trial failed (never a silent gap).
    """
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.status == "FAILED":
            raise RuntimeError(f"tuner trial {trial.trial_id} failed: {trial.message}")
        if trial.status != "COMPLETED":
            continue
        row = {"trial": trial.trial_id, **trial.hyperparameters.values}
        for name in trial.metrics.metrics:
            row[name] = float(trial.metrics.get_last_value(name))
        row["score"] = None if trial.score is None else float(trial.score)
        rows.append(row)
    return rows


def run_tuning(dataset: str = "mnist_5k", *, objective_name: str = "accuracy", algorithm: str = "random",
               trials: int = 5, epochs: int = 2, batch_size: int = 64, gamma=(2e-4, 20.0), beta=0.2,
               latent_dim: int | None = None, width: int | None = None, train_images: int | None = None,
               seed: int = 0, directory: str = "runs/tune", verbose: int | str = "auto"):
    """``tfdefense tune``: search γ/β on a dataset's train split, validated on its validation split.

    Probe objectives (``PROBE_METRICS``) first train a reference classifier on x
    (``small_cnn``/WRN, 3 epochs) and craft PGD-Linf examples on it (eps 0.3 on
    1-channel data, 8/255 otherwise). Returns (trial rows, best hyperparameters).
    """
    objective(objective_name)
    check_positive_int(trials, "trials")
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    keras.utils.set_random_seed(seed)
    x, y = data_lib.load_arrays(dataset, "train")
    if train_images is not None:
        n = check_positive_int(train_images, "train_images")
        x, y = x[:n], y[:n]
    x_val, y_val = data_lib.load_arrays(dataset, "validation")
    probe, names = None, ()
    if objective_name in PROBE_METRICS:
        from tfdefense import nets

        spec = data_lib.spec(dataset)
        ref = (nets.small_cnn(spec.shape, spec.num_classes) if spec.shape[-1] == 1
               else nets.wide_resnet(spec.shape, spec.num_classes))
        ref.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        ref.fit(x, y, epochs=3, batch_size=batch_size, verbose=verbose)
        eps = 0.3 if spec.shape[-1] == 1 else 8 / 255
        probe = GreyBoxProbe.with_pgd(ref, x_val[:500], y_val[:500], x[:1000], y[:1000], eps=eps,
                                      seed=seed)
        names = (objective_name,)
    hypermodel = CDVAEHyperModel(dataset, gamma=gamma, beta=beta, latent_dim=latent_dim, width=width,
                                 probe=probe, probe_metrics=names, seed=seed)
    tuner = make_tuner(hypermodel, objective_name, algorithm, max_trials=trials, directory=directory,
                       project_name=f"cdvae_{objective_name}", seed=seed)
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch_size,
                 verbose=verbose)
    best = tuner.get_best_hyperparameters()[0].values if tuner.oracle.trials else {}
    return trial_table(tuner), best
