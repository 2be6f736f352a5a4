"""Train a CD-VAE end to end on a ``tfdefense.data`` dataset and write its artifacts.

The work behind ``tfdefense train cdvae`` and the notebooks: ``fit`` with a
Keras progress bar and ``BackupAndRestore`` (an interrupted run resumes from
its last finished epoch), then the ``.keras`` model, the history as JSON, the
test metrics, a grid of x / G(x) / R(x) and the training curves.

Example:
    >>> import tempfile
    >>> from tfdefense.training import train_cdvae
    >>> run = train_cdvae("mnist_5k", epochs=1, out=tempfile.mkdtemp(), latent_dim=8,
    ...                   width=8, train_limit=64, verbose=0)
    >>> sorted(run.files)
    ['curves', 'decomposition', 'history', 'metrics', 'model']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense import data, distribute, plots
from tfdefense.models import CDVAE
from tfdefense.validation import check_positive_int


@dataclass
class TrainingRun:
    """What ``train_cdvae`` produced: the model, its history and test metrics, file paths."""

    model: CDVAE
    history: dict[str, list[float]]
    test_metrics: dict[str, float]
    files: dict[str, str] = field(default_factory=dict)


def train_cdvae(
    dataset: str = "mnist_5k",
    *,
    epochs: int = 5,
    batch_size: int = 64,
    out: str = "runs/cdvae",
    gamma: float = 2.0,
    beta: float = 0.2,
    seed: int = 0,
    train_limit: int | None = None,
    verbose: int | str = "auto",
    strategy=None,
    precision: str | None = None,
    callbacks: list | None = None,
    **model_kwargs: Any,
) -> TrainingRun:
    """Train ``CDVAE.for_dataset(dataset, ...)`` and write its artifacts under ``out``.

    Args:
        dataset: a ``tfdefense.data`` name.
        epochs, batch_size: for ``fit`` (the paper trains 300 CIFAR epochs at 256).
        out: output folder (created).
        gamma, beta: the CD-VAE weights (Eq. 1–2).
        seed: seeds data shuffling, initialisation and sampling.
        train_limit: use only the first N training images (quick runs, tests).
        verbose: ``fit``'s verbosity (a progress bar by default).
        strategy: a ``tf.distribute`` strategy to build and train under
            (``tfdefense.distribute.get_strategy``); a ``MultiWorkerMirroredStrategy``
            trains with ``distribute.fit_multi_worker`` (``fit`` is broken there in Keras 3).
        precision: ``"mixed_bfloat16"`` / ``"mixed_float16"`` builds the model under
            that Keras dtype policy (``distribute.set_precision``); ``None``: float32.
        callbacks: extra Keras callbacks for ``fit`` (TensorBoard logs:
            ``tfdefense.callbacks.tensorboard_callbacks``); not with a
            ``MultiWorkerMirroredStrategy``.
        model_kwargs: passed to ``CDVAE.for_dataset``.
    """
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    keras.utils.set_random_seed(seed)
    os.makedirs(out, exist_ok=True)
    train = data.load(dataset, "train")
    if train_limit is not None:
        train = train.take(check_positive_int(train_limit, "train_limit"))
    train = train.shuffle(4096, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    val = data.load(dataset, "validation").batch(256)
    test = data.load(dataset, "test").batch(256)

    def build() -> CDVAE:
        with distribute.precision_scope(precision):
            model = CDVAE.for_dataset(dataset, gamma=gamma, beta=beta, seed=seed, **model_kwargs)
        model.compile()
        return model

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        if callbacks:  # the custom loop runs no Keras callbacks; refuse rather than drop them
            raise ValueError("callbacks: MultiWorkerMirroredStrategy trains in a custom loop "
                             "(distribute.fit_multi_worker) that runs no Keras callbacks")
        model, hist = distribute.fit_multi_worker(build, train, epochs=epochs, strategy=strategy,
                                                  checkpoint_dir=os.path.join(out, "backup"))
        if not distribute.is_chief():  # only the chief writes the run's files
            out = os.path.join(out, f".worker_{distribute.parse_tf_config()['task']['index']}")
            os.makedirs(out, exist_ok=True)
        # Model.evaluate fails under MultiWorkerMirroredStrategy too (keras#20585)
        test_metrics = distribute.evaluate_distributed(model, test, strategy)
        return _finish(model, hist, dataset, out, gamma, beta, test, test_metrics)

    if strategy is not None:
        with strategy.scope():
            model = build()
    else:
        model = build()
    # refuses a broken backup instead of silently restarting (tfdefense.distribute)
    backup = distribute.CheckedBackupAndRestore(os.path.join(out, "backup"))
    history = model.fit(train, epochs=epochs, validation_data=val,
                        callbacks=[backup, *(callbacks or [])], verbose=verbose)
    hist = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return _finish(model, hist, dataset, out, gamma, beta, test)


def _finish(model, hist, dataset, out, gamma, beta, test, test_metrics=None) -> TrainingRun:
    if test_metrics is None:
        test_metrics = {k: float(v) for k, v in model.evaluate(test, return_dict=True,
                                                               verbose=0).items()}
    files = {"model": os.path.join(out, "cdvae.keras")}
    model.save(files["model"])
    files["history"] = _write_json(os.path.join(out, "history.json"), hist)
    files["metrics"] = _write_json(os.path.join(out, "metrics.json"),
                                   {"dataset": dataset, "split": "test", **test_metrics})
    x, _ = data.load_arrays(dataset, "test")
    x = x[:8]
    g, r = (np.asarray(t) for t in model.decompose(x))
    files["decomposition"] = plots.decomposition_grid(
        x, g, r, os.path.join(out, "decomposition.png"),
        title=f"CD-VAE on {dataset} (gamma={gamma}, beta={beta})")
    files["curves"] = plots.training_curves(hist, os.path.join(out, "training_curves.png"))
    return TrainingRun(model, hist, test_metrics, files)


def _write_json(path: str, payload: Any) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
    return path
