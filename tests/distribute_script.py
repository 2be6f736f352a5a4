"""Subprocess side of tests/test_distribute.py (logical devices and TF_CONFIG need a fresh process).

    python tests/distribute_script.py mirrored OUT.json
    python tests/distribute_script.py multi_worker OUT.json CKPT_DIR     (TF_CONFIG set by the caller)
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

from tfdefense import distribute  # noqa: E402

MODE = sys.argv[1]
if MODE == "mirrored":
    STRATEGY = distribute.get_strategy("mirrored", cpu_devices=2)  # before any TF op runs
else:
    STRATEGY = distribute.get_strategy("multi_worker")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdefense import data  # noqa: E402
from tfdefense.models import CDVAE  # noqa: E402

HALF, STEPS = 8, 3


class MeanLatentCDVAE(CDVAE):
    """CD-VAE whose z is the posterior mean in training too: a deterministic step to compare."""

    def latent(self, x, training=False, sample=None):
        return super().latent(x, training=training, sample=False)


def build():
    keras.utils.set_random_seed(0)
    model = MeanLatentCDVAE.for_dataset("mnist_5k", latent_dim=8, width=8, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def batches():
    """STEPS global batches [A, A]: each replica's half equals the whole batch, so the
    per-replica BatchNorm statistics equal the single-device ones and only the
    gradient aggregation differs between the runs."""
    x, y = data.load_arrays("mnist_5k", "train")
    xs = np.concatenate([np.concatenate([x[i * HALF:(i + 1) * HALF]] * 2) for i in range(STEPS)])
    ys = np.concatenate([np.concatenate([y[i * HALF:(i + 1) * HALF]] * 2) for i in range(STEPS)])
    return tf.data.Dataset.from_tensor_slices((xs, ys.astype("int64"))).batch(2 * HALF)


class StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses, self.first_step = [], None

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
        if batch == 0:
            self.first_step = [w.numpy().ravel().tolist() for w in self.model.trainable_weights]


def fit(strategy):
    with strategy.scope():
        model = build()
    initial = [w.numpy().ravel().tolist() for w in model.trainable_weights]
    record = StepLosses()
    model.fit(batches(), epochs=1, verbose=0, callbacks=[record], shuffle=False)
    return {"losses": record.losses, "replicas": strategy.num_replicas_in_sync,
            "first_step": record.first_step,
            "initial": initial}


if MODE == "mirrored":
    single = fit(tf.distribute.get_strategy())
    mirrored = fit(STRATEGY)
    _, loop_history = distribute.fit_multi_worker(build, batches(), epochs=1, strategy=STRATEGY,
                                                  verbose=False)
    result = {"single": single, "mirrored": mirrored, "loop_loss": loop_history["loss"],
              "devices": [d.name for d in tf.config.list_logical_devices("CPU")]}
else:
    ckpt = sys.argv[3]
    epochs = int(os.environ.get("EPOCHS", "2"))
    model, history = distribute.fit_multi_worker(build, batches(), epochs=epochs,
                                                 strategy=STRATEGY, checkpoint_dir=ckpt)
    result = {"history": history, "replicas": STRATEGY.num_replicas_in_sync,
              "weights_sum": float(sum(float(tf.reduce_sum(w)) for w in model.trainable_weights))}

with open(sys.argv[2], "w") as fh:
    json.dump(result, fh)
