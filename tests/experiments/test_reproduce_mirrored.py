"""``tfdefense reproduce --strategy mirrored``: the experiments train and attack over two
replicas (logical CPU devices here, GPUs on a user's machine), in a fresh process as a user
runs it (the devices must be set before TensorFlow starts)."""

import json
import os
import subprocess
import sys

import pytest

#: Table 1 and Table 6 on tiny settings (tests/experiments/conftest.py's TINY, the keys they read)
TINY = {"train_images": 300, "cdvae_epochs": 1, "classifier_epochs": 1, "latent_dim": 8,
        "width": 8, "eval_images": 48, "defense_images": 24, "whitebox_images": 8,
        "eot_samples": 2, "pgd_steps": 3, "defense_steps": 3, "verbose": 0}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_reproduce_over_two_mirrored_replicas_runs_table_1_and_table_6(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"}
    env.pop("TF_NUM_INTRAOP_THREADS", None)
    cli = os.path.join(os.path.dirname(sys.executable), "tfdefense")
    cmd = [cli, "reproduce", "--preset", "quick", "--only", "cdvae_table1", "cdvae_table6",
           "--strategy", "mirrored", "--cpu-devices", "2", "--out", str(tmp_path)]
    for key, value in TINY.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"failed": []' in proc.stdout  # the command's own summary
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == []
    assert [e["name"] for e in results["experiments"]] == ["cdvae_table1", "cdvae_table6"]
    # every attack of Table 6 splits over the replicas: C&W-L2 is the compiled port
    # (attacks/cw_l2.py), not Foolbox's eager loop, which would run on one device and say so
    assert "runs on one device, not over the 2 replicas" not in proc.stderr
