"""Subprocess side of tests/test_mirrored_replica_sums.py: sums over two mirrored replicas.

Two logical CPU devices need a fresh process (the device list is fixed once TensorFlow runs
its first op), so the test runs this script and reads its JSON:

    python tests/mirrored_steps_script.py OUT.json

It writes
- ``global_count``: ``adversarial_losses.global_count`` on each replica under
  ``MirroredStrategy.run``, replica 0 holding the mask [1, 0] and replica 1 [1, 1];
- ``pgd_single`` / ``pgd_mirrored``: a hand PGD-AT classifier's weights after one train step
  on the same global batch, on one device and over the two replicas, with the strategy's
  ``num_replicas_in_sync``.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

import tensorflow as tf  # noqa: E402

# before any TF op runs: two logical CPUs
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
STRATEGY = tf.distribute.MirroredStrategy(
    [d.name for d in tf.config.list_logical_devices("CPU")])

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfdefense.models import PGDAdversarialTraining  # noqa: E402
from tfdefense.models.adversarial_losses import global_count  # noqa: E402

#: the per-replica masks of the global_count case
MASKS = ([1.0, 0.0], [1.0, 1.0])
#: the hand classifier's kernel: class 0's column is 0, class 1's is c·(1, −1, 1, −1), c = 1
KERNEL = np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 1.0], [0.0, -1.0]], np.float32)
#: the global batch of the PGD-AT step (2x2 images, flattened x00, x01, x10, x11) and labels
IMAGES = np.array([[0.25, 0.75, 0.25, 0.75]] * 3 + [[0.75, 0.25, 0.75, 0.25]],
                  np.float32).reshape(4, 2, 2, 1)
LABELS = np.array([0, 0, 0, 1], np.int64)


def replica_counts() -> list[list[float]]:
    """[count, n] from ``global_count`` on each replica."""
    masks = STRATEGY.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(MASKS[ctx.replica_id_in_sync_group]))

    @tf.function
    def run(m):
        return STRATEGY.run(lambda mask: tf.stack(global_count(mask)), args=(m,))

    return [t.numpy().tolist() for t in STRATEGY.experimental_local_results(run(masks))]


def pgd_model() -> PGDAdversarialTraining:
    """Flatten -> Dense(2) with ``KERNEL`` and a zero bias; one PGD step of 1.0 in eps 0.25."""
    x = keras.Input((2, 2, 1))
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(KERNEL),
                               bias_initializer="zeros", name="logits")
    classifier = keras.Model(x, dense(keras.layers.Flatten()(x)))
    model = PGDAdversarialTraining(classifier, eps=0.25, attack_steps=1, attack_step_size=1.0,
                                   seed=0)
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    return model


def pgd_step(strategy: tf.distribute.Strategy) -> dict:
    """Kernel and bias after one train step on the global batch of 4 (2 per replica)."""
    with strategy.scope():
        model = pgd_model()
    batch = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).batch(4)
    model.fit(batch, epochs=1, verbose=0, shuffle=False)
    dense = model.classifier.get_layer("logits")
    return {"kernel": dense.kernel.numpy().tolist(), "bias": dense.bias.numpy().tolist(),
            "replicas": strategy.num_replicas_in_sync}


result = {"global_count": replica_counts(),
          "pgd_single": pgd_step(tf.distribute.get_strategy()),
          "pgd_mirrored": pgd_step(STRATEGY)}
with open(sys.argv[1], "w") as fh:
    json.dump(result, fh)
