"""tf.distribute strategies, the multi-worker loop, mixed precision and fault-tolerant fit."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense import data, distribute
from tfdefense.models import CDVAE
from tfdefense.training import train_cdvae

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "distribute_script.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1",
       "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ------------------------------------------------------------- bad input
def test_unknown_strategy_raises_naming_the_choices():
    with pytest.raises(ValueError, match="expected one of auto, default, mirrored"):
        distribute.get_strategy("gpu")


def test_cpu_devices_only_with_mirrored():
    with pytest.raises(ValueError, match="cpu_devices"):
        distribute.get_strategy("default", cpu_devices=2)


def test_logical_cpus_after_tensorflow_started_raise():
    tf.constant(1.0) + 1.0  # the runtime is initialised now
    with pytest.raises(ValueError, match="already initialised"):
        distribute.get_strategy("mirrored", cpu_devices=3)


@pytest.mark.parametrize("value, match", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "'cluster'"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "'task'"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "not in the cluster"),
])
def test_tf_config_that_does_not_parse_raises(value, match):
    with pytest.raises(ValueError, match=match):
        distribute.parse_tf_config(value)


def test_multi_worker_without_tf_config_raises(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG: not set"):
        distribute.get_strategy("multi_worker")


def test_default_and_auto_on_one_cpu_are_the_default_strategy(monkeypatch):
    for var in ("TF_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(var, raising=False)
    assert distribute.get_strategy("auto").num_replicas_in_sync == 1
    assert distribute.get_strategy("default") is tf.distribute.get_strategy()


def test_tpu_without_a_tpu_raises(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    with pytest.raises(ValueError, match="no TPU"):
        distribute.get_strategy("tpu")


def test_unknown_precision_raises():
    with pytest.raises(ValueError, match="precision"):
        distribute.set_precision("float8")


# -------------------------------------------------------- mixed precision
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_cdvae_trains_under_mixed_precision_with_float32_variables(policy):
    with distribute.precision_scope(policy):
        model = CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8, seed=0)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    model.compile()
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = data.load_arrays("mnist_5k", "train")
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert model.encoder.layers[1].compute_dtype == policy.split("_")[1]
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert sum(changed) > len(changed) // 2  # the step was applied (not skipped by loss scaling)
    assert model(x[:2]).dtype == tf.float32


# ------------------------------------------------------- MirroredStrategy
def _run_script(args, env=ENV, timeout=1500):
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(tmp_path):
    out = tmp_path / "mirrored.json"
    proc = _run_script(["mirrored", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mirrored"]["replicas"] == 2 and len(r["devices"]) == 2
    flat = lambda ws: np.concatenate([np.asarray(w) for w in ws])  # noqa: E731
    w0, single, mirrored = (flat(r["single"]["initial"]), flat(r["single"]["first_step"]),
                            flat(r["mirrored"]["first_step"]))
    np.testing.assert_array_equal(w0, flat(r["mirrored"]["initial"]))
    step = np.abs(single - w0).max()
    assert step > 1e-3  # a real step, so a doubled or halved gradient would show
    # the same gradient step: differences far below the step itself
    assert np.abs(mirrored - single).max() < 1e-3 * step + 1e-6
    np.testing.assert_allclose(r["mirrored"]["losses"], r["single"]["losses"], rtol=1e-3)
    # the custom loop (the multi-worker path) on the same strategy reports the same epoch loss
    np.testing.assert_allclose(r["loop_loss"][0], r["mirrored"]["losses"][-1], rtol=1e-3)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _multi_worker(tmp_path, epochs, tag):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {**ENV, "EPOCHS": str(epochs),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, SCRIPT, "multi_worker", str(tmp_path / f"{tag}{i}.json"),
             str(tmp_path / "ckpt")], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"{tag}{i}.err", "w")))
    # Wait for every worker before judging any: killing the other worker as soon as the first one
    # exits (the old `finally`) shot down a healthy peer that was a few milliseconds behind.
    try:
        for p in procs:
            p.wait(timeout=1500)
    finally:
        for q in procs:
            if q.poll() is None:
                q.kill()
    results = []
    for i, p in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"{tag}{i}.err").read_text()[-3000:]
        results.append(json.loads((tmp_path / f"{tag}{i}.json").read_text()))
    return results


@pytest.mark.slow
def test_multi_worker_two_processes_train_and_resume(tmp_path):
    first = _multi_worker(tmp_path, epochs=2, tag="a")
    for r in first:
        assert r["replicas"] == 2
        assert len(r["history"]["loss"]) == 2 and np.all(np.isfinite(r["history"]["loss"]))
    assert first[0]["weights_sum"] == pytest.approx(first[1]["weights_sum"], rel=1e-6)
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-2")
    # a restarted job with a larger budget trains only the missing epoch
    second = _multi_worker(tmp_path, epochs=3, tag="b")
    assert [len(r["history"]["loss"]) for r in second] == [1, 1]
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-3")


# --------------------------------------------------------- fault tolerance
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import keras
    from tfdefense.training import train_cdvae

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == int(os.environ["KILL_EPOCH"]) and batch == 0:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, as a crash

    kill = [Kill()] if "KILL_EPOCH" in os.environ else []
    train_cdvae("mnist_5k", epochs=4, batch_size=32, out=sys.argv[1], latent_dim=8, width=8,
                train_limit=64, verbose=0, callbacks=kill)
""")


def _train(tmp_path, **env):
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "run")], cwd=ROOT,
                          env={**ENV, **env}, timeout=1500, capture_output=True, text=True)


@pytest.mark.slow
def test_sigkilled_training_resumes_and_ends_with_the_same_epochs(tmp_path):
    killed = _train(tmp_path, KILL_EPOCH="2")
    assert killed.returncode == -signal.SIGKILL
    backup = tmp_path / "run" / "backup"
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    resumed = _train(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    # epochs 0-1 were kept, only the interrupted epoch 2 is redone, then epoch 3: 4 in all
    assert len(history["loss"]) == 2
    assert not backup.exists()  # finished: the backup is cleaned up


def _backup_dir(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    return backup


def test_backup_with_an_epoch_record_but_no_weights_refuses_to_restart(tmp_path):
    (_backup_dir(tmp_path) / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    with pytest.raises(ValueError, match="no weights"):
        train_cdvae("mnist_5k", epochs=3, out=str(tmp_path), latent_dim=8, width=8,
                    train_limit=32, verbose=0)


def test_backup_with_corrupted_weights_refuses_to_restart(tmp_path):
    backup = _backup_dir(tmp_path)
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    (backup / "latest.weights.h5").write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match="does not load"):
        train_cdvae("mnist_5k", epochs=3, out=str(tmp_path), latent_dim=8, width=8,
                    train_limit=32, verbose=0)


def test_backup_with_corrupted_epoch_record_refuses_to_restart(tmp_path):
    backup = _backup_dir(tmp_path)
    (backup / "training_metadata.json").write_text("{trunc")
    (backup / "latest.weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="corrupted"):
        train_cdvae("mnist_5k", epochs=3, out=str(tmp_path), latent_dim=8, width=8,
                    train_limit=32, verbose=0)
