"""Sums over replicas that only a multi-replica run can see: ``global_count``'s all-reduce
(the official objective's Σ m and N over the global batch) and PGD-AT's per-replica loss
scaling (Keras sums the replicas' gradients, so each replica's loss is divided by their number).

Both run in one fresh process (``tests/mirrored_steps_script.py``) with two logical CPU devices
under ``MirroredStrategy``, as ``tests/test_distribute.py`` runs ``distribute_script.py``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "mirrored_steps_script.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1",
       "PYTHONPATH": os.environ.get("PYTHONPATH", "") + os.pathsep + ROOT}


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored") / "out.json"
    proc = subprocess.run([sys.executable, SCRIPT, str(out)], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_global_count_sums_the_mask_and_the_batch_over_both_replicas(mirrored):
    # replica 0 holds the mask [1, 0], replica 1 [1, 1]: Σ m = 1 + 2 = 3 and N = 2 + 2 = 4,
    # the same on both replicas (replica 0 alone would say (1, 2), replica 1 (2, 2))
    assert mirrored["global_count"] == [[3.0, 4.0], [3.0, 4.0]]


# One PGD-AT step by hand. The classifier is Flatten -> Dense(2), kernel columns w0 = 0 and
# w1 = (1, −1, 1, −1) over the pixels (x00, x01, x10, x11), bias 0; SGD with learning rate 1.
# For two classes ∂CE/∂x = p_other·(w_other − w_y), whose sign, (+, −, +, −) for y = 0 and
# (−, +, −, +) for y = 1, does not depend on x: from any random start in the eps = 0.25 ball a
# step of 1.0 clips to the ball's corner x + 0.25·sign. The batch is three images
# (0.25, 0.75, 0.25, 0.75) of class 0 and one (0.75, 0.25, 0.75, 0.25) of class 1, so every x′
# is 0.5 everywhere: logits (0, 0), p = (0.5, 0.5), ∂CE/∂z = p − onehot(y) = (−0.5, 0.5) for
# class 0 and (0.5, −0.5) for class 1. The mean over the 4 images is (−0.25, 0.25), so
# ∂L/∂b = (−0.25, 0.25) and ∂L/∂W = 0.5·(−0.25, 0.25) = (−0.125, 0.125) for every pixel:
# after the step b = (0.25, −0.25), W[:, 0] = 0.125, W[:, 1] = (0.875, −1.125, 0.875, −1.125).
# Over two replicas (images 0-1 on one, 2-3 on the other) the replicas' mean gradients are
# (−0.5, 0.5) and (0, 0) on b; each replica's loss divided by 2 and the two summed give the
# same −0.25, 0.25. Multiplying by 2 instead would give (−1, 1), dividing by 1 (−0.5, 0.5).
HAND_KERNEL = [[0.125, 0.875], [0.125, -1.125], [0.125, 0.875], [0.125, -1.125]]
HAND_BIAS = [0.25, -0.25]


def test_one_pgd_training_step_on_one_device_matches_the_hand_computation(mirrored):
    single = mirrored["pgd_single"]
    assert single["replicas"] == 1
    np.testing.assert_allclose(single["kernel"], HAND_KERNEL, atol=1e-6)
    np.testing.assert_allclose(single["bias"], HAND_BIAS, atol=1e-6)


def test_one_pgd_training_step_over_two_mirrored_replicas_equals_the_single_device_step(
        mirrored):
    single, split = mirrored["pgd_single"], mirrored["pgd_mirrored"]
    assert split["replicas"] == 2
    np.testing.assert_allclose(split["kernel"], single["kernel"], atol=1e-5)
    np.testing.assert_allclose(split["bias"], single["bias"], atol=1e-5)
    np.testing.assert_allclose(split["bias"], HAND_BIAS, atol=1e-6)
