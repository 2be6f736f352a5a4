"""Helpers of the detect tests (a uniquely named module, so no clash with other conftests)."""

import keras
import numpy as np
import tensorflow as tf

from tfdefense.detect import metrics

N_DETECT = 300  # test images for fitting detectors; the next N_DETECT evaluate them


def fgsm(model, x, y, eps):
    """One signed-gradient step of size eps on the cross-entropy, clipped to [0, 1]."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
    return tf.clip_by_value(x + eps * tf.sign(tape.gradient(loss, x)), 0.0, 1.0).numpy()


def separation_auc(characteristic, ns):
    """AUC of one characteristic column set: clean + noisy (0) vs FGSM (1), per column."""
    scores = np.concatenate([characteristic.score(v) for v in (ns.x, ns.x_noisy, ns.x_adv)])
    labels = np.repeat([0, 0, 1], len(ns.x))
    signed = characteristic.adversarial_sign * scores
    return [metrics.roc_auc(labels, signed[:, j]) for j in range(signed.shape[1])]
