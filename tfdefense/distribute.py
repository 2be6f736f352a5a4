"""Training at scale: ``tf.distribute`` strategies, a multi-worker loop, mixed precision.

* ``get_strategy(name)``: ``"default"`` (no distribution), ``"mirrored"``
  (all local GPUs, or ``cpu_devices`` logical CPU devices for testing),
  ``"multi_worker"`` (``TF_CONFIG``), ``"tpu"`` and ``"auto"`` (the first of
  TPU, multi-worker, several GPUs that the environment offers, else default).
  Models built under ``strategy.scope()`` train with ``fit`` unchanged for
  every strategy but multi-worker.
* ``fit_multi_worker``: ``MultiWorkerMirroredStrategy`` with ``Model.fit`` is
  broken in Keras 3 (keras-team/keras#20585, ECOSYSTEM_NOTES), so this custom
  loop runs the model's *own* ``train_step`` in ``strategy.run`` over
  ``experimental_distribute_dataset`` (the loss code stays in one place, and
  its division by ``num_replicas_in_sync`` is what makes the step right), and
  checkpoints each epoch with ``tf.train.CheckpointManager`` (the chief writes
  the real checkpoint, other workers a throw-away copy), so a restarted job
  resumes after its last finished epoch.
* ``set_precision(policy)``: ``"float32"``, ``"mixed_bfloat16"`` or
  ``"mixed_float16"`` as the global Keras dtype policy. Models built after it
  compute in half precision with float32 variables; under ``mixed_float16``
  ``compile`` wraps the optimizer in a ``LossScaleOptimizer`` and CDVAE's
  ``train_step`` calls ``optimizer.scale_loss``.

Example:
    >>> from tfdefense.distribute import get_strategy
    >>> get_strategy("default").num_replicas_in_sync
    1
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def configure_logical_cpus(n: int) -> list[str]:
    """Split the CPU into ``n`` logical devices (for MirroredStrategy tests); their names.

    Must run before TensorFlow executes its first op; afterwards the device
    list is fixed and a different ``n`` raises ``ValueError``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cpu_devices: expected an integer >= 1, got {n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise ValueError(
                f"cpu_devices: TensorFlow is already initialised with {have} logical CPU "
                f"device(s), cannot make {n}; call get_strategy('mirrored', cpu_devices={n}) "
                "(or configure_logical_cpus) before any TensorFlow op runs") from exc
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def parse_tf_config(value: str | None = None) -> dict[str, Any]:
    """``TF_CONFIG`` (the environment variable by default) as a dict; ``ValueError`` if malformed."""
    value = os.environ.get("TF_CONFIG") if value is None else value
    if not value:
        raise ValueError("TF_CONFIG: not set; multi_worker needs TF_CONFIG with 'cluster' and 'task' "
                         '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}})')
    try:
        config = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG: not valid JSON ({exc.msg} at position {exc.pos})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise ValueError("TF_CONFIG: expected a JSON object with a 'cluster' object")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError("TF_CONFIG: expected a 'task' object with 'type' and 'index'")
    members = config["cluster"].get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(f"TF_CONFIG: task {task} is not in the cluster {config['cluster']}")
    return config


def _num_workers() -> int:
    if not os.environ.get("TF_CONFIG"):
        return 0
    cluster = parse_tf_config()["cluster"]
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def _tpu_address() -> str | None:
    return os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")


def get_strategy(name: str = "auto", *, cpu_devices: int | None = None) -> tf.distribute.Strategy:
    """A ``tf.distribute`` strategy by name.

    Args:
        name: one of ``STRATEGIES``.
        cpu_devices: with ``"mirrored"`` on a machine without GPUs, mirror over
            this many logical CPU devices (must come before TF runs any op).
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {name!r}")
    if cpu_devices is not None and name != "mirrored":
        raise ValueError(f"cpu_devices: only used with strategy 'mirrored', got strategy {name!r}")
    if name == "auto":
        if _tpu_address():
            name = "tpu"
        elif _num_workers() > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if cpu_devices is not None and not gpus:
            return tf.distribute.MirroredStrategy(configure_logical_cpus(cpu_devices))
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        parse_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not _tpu_address() and not tf.config.list_physical_devices("TPU"):
        raise ValueError("strategy: 'tpu' asked for but no TPU was found (no local TPU device, "
                         "TPU_NAME and COLAB_TPU_ADDR unset)")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=_tpu_address() or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        raise ValueError(f"strategy: 'tpu' asked for but no TPU was found ({exc})") from exc
    return tf.distribute.TPUStrategy(resolver)


def set_precision(policy: str = "float32") -> str:
    """Set the global Keras dtype policy (build models afterwards); returns its name."""
    if policy not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {policy!r}")
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


@contextlib.contextmanager
def precision_scope(policy: str | None) -> Iterator[None]:
    """Build models under ``policy`` (``None``: unchanged); the global policy is restored after."""
    if policy is None:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    set_precision(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def is_chief(config: dict[str, Any] | None = None) -> bool:
    """Whether this process writes checkpoints: the chief, or worker 0 when there is no chief."""
    if config is None:
        if not os.environ.get("TF_CONFIG"):
            return True
        config = parse_tf_config()
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def fit_multi_worker(
    build_model: Callable[[], keras.Model],
    dataset: tf.data.Dataset,
    *,
    epochs: int,
    strategy: tf.distribute.Strategy,
    checkpoint_dir: str | None = None,
    verbose: bool = True,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train with a custom loop that calls the model's own ``train_step`` on each replica.

    Args:
        build_model: returns a compiled model (built and compiled inside
            ``strategy.scope()`` here).
        dataset: batched at the *global* batch size; the strategy shards it
            by data (``AutoShardPolicy.DATA``: every worker reads the same files).
        epochs: total epochs; a resumed run trains only the missing ones.
        strategy: usually ``get_strategy("multi_worker")``; any strategy works.
        checkpoint_dir: where to checkpoint after each epoch (chief); ``None``
            disables checkpoints.
        verbose: print one line of metrics per epoch (chief).

    Returns the model and the history (metric -> value per epoch trained here).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, got {epochs!r}")
    with strategy.scope():
        model = build_model()
        if model.optimizer is None:
            raise ValueError("build_model: expected a compiled model (call model.compile())")
        batch = next(iter(dataset.take(1)))
        model(batch[0])  # build variables in scope
        model.optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    dist = strategy.experimental_distribute_dataset(_sharded(dataset))

    manager, chief = None, is_chief()
    if checkpoint_dir is not None:
        # every worker restores the chief's checkpoint; non-chiefs save to a scratch folder
        ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest:
            ckpt.restore(latest).assert_existing_objects_matched()
        elif os.path.isdir(checkpoint_dir) and any(n.startswith("ckpt") for n in os.listdir(checkpoint_dir)):
            raise ValueError(f"checkpoint_dir: {checkpoint_dir} holds checkpoint files but no readable "
                             "'checkpoint' index; refusing to restart from scratch")
        directory = checkpoint_dir if chief else os.path.join(
            checkpoint_dir, f".worker_{parse_tf_config()['task']['index']}")
        manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=2)

    @tf.function
    def train_step(data):
        strategy.run(model.train_step, args=(data,))

    history: dict[str, list[float]] = {}
    while int(epoch.numpy()) < epochs:
        for metric in model.metrics:
            metric.reset_state()
        for data in dist:
            train_step(data)
        logs = {m.name: float(m.result()) for m in model.metrics}
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        epoch.assign_add(1)
        if manager is not None:
            manager.save(checkpoint_number=int(epoch.numpy()))
        if verbose and chief:
            print(f"epoch {int(epoch.numpy())}/{epochs} "
                  + " ".join(f"{k}={v:.4f}" for k, v in logs.items()), flush=True)
    if manager is not None and not chief:
        shutil.rmtree(manager.directory, ignore_errors=True)
    return model, history


def _sharded(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def evaluate_distributed(model: keras.Model, dataset: tf.data.Dataset,
                         strategy: tf.distribute.Strategy) -> dict[str, float]:
    """``model.evaluate`` for strategies where it is broken (multi-worker): the model's own
    ``test_step`` in ``strategy.run``; returns the metrics over the whole dataset."""
    for metric in model.metrics:
        metric.reset_state()

    @tf.function
    def step(data):
        strategy.run(model.test_step, args=(data,))

    for data in strategy.experimental_distribute_dataset(_sharded(dataset)):
        step(data)
    return {m.name: float(m.result()) for m in model.metrics}


class CheckedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that refuses a broken backup instead of silently restarting.

    Keras' callback restarts from scratch when the weights file is missing but
    the epoch file is not (it trains fresh weights from the saved epoch on) and
    raises a bare ``OSError`` for a corrupted file. Here a backup folder with
    only one of the two files, or files that do not load (and no ``.bkp``
    copy, kept by default), raises ``ValueError`` naming the folder. Deleting
    the folder starts over.
    """

    def __init__(self, backup_dir: str, *, double_checkpoint: bool = True, **kwargs):
        super().__init__(backup_dir, double_checkpoint=double_checkpoint, **kwargs)

    def on_train_begin(self, logs=None):
        weights = os.path.exists(self._weights_path) or os.path.exists(self._prev_weights_path)
        meta = (os.path.exists(self._training_metadata_path)
                or os.path.exists(self._prev_training_metadata_path))
        if weights != meta:
            have, missing = ("weights", "epoch record") if weights else ("epoch record", "weights")
            raise ValueError(
                f"backup: {self.backup_dir} has a {have} but no {missing}; cannot resume. "
                "Delete the folder to train from scratch.")
        if meta:
            for path in (self._training_metadata_path, self._prev_training_metadata_path):
                if os.path.exists(path):
                    try:
                        with open(path, encoding="utf-8") as fh:
                            int(json.load(fh)["epoch"])
                    except (ValueError, KeyError, TypeError) as exc:
                        raise ValueError(f"backup: {path} is corrupted ({exc}); cannot resume. "
                                         "Delete the folder to train from scratch.") from exc
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError) as exc:
            raise ValueError(f"backup: the checkpoint in {self.backup_dir} does not load ({exc}); "
                             "cannot resume. Delete the folder to train from scratch.") from exc
