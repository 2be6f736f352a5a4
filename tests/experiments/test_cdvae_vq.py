"""The CD-VAE experiments on the restricted-ImageNet variant (issue 11 item 4).

The ``paper_imagenet`` preset with tiny overrides on synthetic 32x32 RGB data
(9 colour-coded super-classes, the shape of ``restricted_imagenet_32``): a
tiny VQ-VAE G (d = 8, k = 16 codes) and a small CNN D run the
empirical study (Tables 1-3, Fig 3) and the Table 5 detection end to end; the
full run needs the ImageNet archives and a GPU. Also: the paper-only ImageNet
rows of a run on other data, and a restricted-ImageNet run without the data.
"""

import math
import os

import numpy as np
import pytest

from tfdefense.experiments import Context, get
from tfdefense.experiments import cdvae_models as cm
from tfdefense.experiments.cdvae_detection import PAPER_TABLE5
from tfdefense.models import VQCDVAE

TINY_VQ = {
    "dataset": "restricted_imagenet_32",
    "classifier": "small_cnn",  # ResNet-50 (the preset's) is built in test_resnet50_branch; too slow here
    "width": 8,
    "num_codes": 16,
    "cdvae_epochs": 5,
    "classifier_epochs": 3,
    "batch_size": 16,
    "eval_images": 96,
    "pgd_steps": 3,
    "detection_train_images": 96,
    "detection_attacks": ["pgd_linf"],
    "detection_min_images": 4,
    "lid_k": [5],
    "md_magnitudes": [0.0, 0.001],
    "verbose": 0,
}
_SIZES = {"train": 192, "validation": 48, "test": 96}


def _synthetic(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose super-class shows as a colour tint, (N, 32, 32, 3) in [0, 1]."""
    rng = np.random.default_rng(list(_SIZES).index(split))
    colours = np.random.default_rng(9).uniform(0.35, 0.65, (9, 3))  # close: 8/255 attacks succeed
    y = rng.integers(0, 9, _SIZES[split])
    blocks = rng.normal(0.0, 0.15, (len(y), 8, 8, 1)).repeat(4, axis=1).repeat(4, axis=2)  # codes vary
    x = colours[y][:, None, None, :] + blocks + rng.normal(0.0, 0.05, (len(y), 32, 32, 3))
    return np.clip(x, 0.0, 1.0).astype(np.float32), y.astype(np.int64)


class SyntheticContext(Context):
    """A Context whose data is ``_synthetic`` instead of tfds imagenet2012."""

    def arrays(self, split):
        return _synthetic(split)


@pytest.fixture(scope="module")
def vq_ctx(tmp_path_factory):
    return SyntheticContext("paper_imagenet", str(tmp_path_factory.mktemp("vq")), TINY_VQ)


def _finite_cells(result, skip):
    return [c for row in result.rows for k, c in row.items() if k not in skip]


@pytest.mark.slow
def test_empirical_study_on_a_vq_cdvae(vq_ctx):
    model = cm.cdvae(vq_ctx)
    assert isinstance(model, VQCDVAE) and model.num_codes == 16 and model.beta == pytest.approx(0.1)
    parts = cm.decompose_arrays(model, _synthetic("test")[0][:4])
    assert parts["z"].shape == (4, 8 * 8 * 8)  # the flattened (H/4, W/4, d) grid z_q
    results = {
        n: get(n)(vq_ctx) for n in ("cdvae_table1", "cdvae_table2", "cdvae_fig3_pearson", "cdvae_table3")
    }
    t1, t2, f3, t3 = results.values()
    for part in ("G", "R"):
        m = t1.measurements[part]
        assert math.isfinite(m["cosine_mean"]) and math.isfinite(m["frechet"])
    assert [row["pair"] for row in t1.rows] == ["G(x) vs G(x′)", "R(x) vs R(x′)"]  # no paper-only rows
    assert all(math.isfinite(v["l2"]["mean"]) for k, v in t2.measurements.items() if isinstance(v, dict))
    assert math.isfinite(t2.measurements["delta_R_over_delta_G_l2"])
    assert any("normalised with the ImageNet mean" in n for n in t2.notes)
    assert f3.measurements["latent_dim"] == 512 and np.isfinite(f3.measurements["r"]).all()
    top1 = [v["top1"] for v in t3.measurements.values()]
    assert len(top1) == 9 and all(0.0 <= v <= 100.0 for v in top1)
    assert "(paper 82.53)" in t3.rows[0]["x"]  # restricted ImageNet's Table 3 beside ours
    assert all(cm.NEEDS_IMAGENET not in str(c) for r in results.values() for c in _finite_cells(r, ()))
    assert "VQ-VAE G" in cm.architecture_note(vq_ctx)


@pytest.mark.slow
def test_table5_detection_on_a_vq_cdvae(vq_ctx):
    result = get("cdvae_table5")(vq_ctx)
    assert [row["method"] for row in result.rows] == list(PAPER_TABLE5)
    measured = {
        m: d["pgd_linf"]["metrics"] for m, d in result.measurements.items() if "metrics" in d["pgd_linf"]
    }
    assert set(measured) == set(PAPER_TABLE5), result.measurements
    assert all(math.isfinite(v) for m in measured.values() for v in (m["auc"], m["tnr_at_tpr95"]))
    cells = [row["PGD-Linf"] for row in result.rows]
    assert all("(paper" in c and not c.startswith("–") for c in cells)
    assert "(paper 8.76 / 70.25)" in result.rows[0]["FGSM"]  # not run here, the paper's number stays
    assert any("Not run" in n and "FGSM" in n for n in result.notes)
    assert os.path.exists(result.figures["ROC curves, PGD-Linf"])
    t4 = get("cdvae_table4")(vq_ctx)  # the CIFAR-10 table only lists the paper's on this data
    assert t4.measurements["status"] == "paper_only" and all(
        c.startswith("–") for c in _finite_cells(t4, ("method",))
    )


def test_resnet50_branch(tmp_path):
    """The preset's D: ``new_classifier`` and the VQ CD-VAE's D are ResNet-50 (built, one eager call)."""
    ctx = Context(
        "paper_imagenet", str(tmp_path), {"dataset": "restricted_imagenet_32", "width": 4, "num_codes": 8}
    )
    clf = cm.new_classifier(ctx, "classifier_x")
    assert clf.output_shape == (None, 9) and clf.get_layer("penultimate").output.shape[-1] == 2048
    model = cm.build_cdvae(ctx, 2.0)
    assert isinstance(model, VQCDVAE) and model.num_codes == 8 and model.beta == pytest.approx(0.1)
    assert any(layer.name == "resnet50" for layer in model.classifier.layers)
    g, r = model.decompose(_synthetic("test")[0][:2])
    assert np.isfinite(g.numpy()).all() and np.isfinite(model(_synthetic("test")[0][:2]).numpy()).all()
    assert "ResNet-50" in cm.architecture_note(ctx)
    with pytest.raises(ValueError, match="generator"):
        cm.build_cdvae(Context("quick", str(tmp_path), {"generator": "gan"}), 2.0)
    with pytest.raises(ValueError, match="classifier"):
        cm.new_classifier(Context("quick", str(tmp_path), {"classifier": "vgg"}), "c")


def test_paper_only_imagenet_rows_in_quick(tmp_path):
    ctx = Context("quick", str(tmp_path))
    t5 = get("cdvae_table5")(ctx)  # no training: the quick run cannot measure Table 5
    cells = _finite_cells(t5, ("method",))
    assert len(cells) == 30 and all(c.startswith(cm.NEEDS_IMAGENET + " (paper") for c in cells)
    assert "(paper 99.40 / 99.63)" in t5.rows[1]["FGSM"]
    assert t5.measurements["status"] == "paper_only"


def test_restricted_imagenet_without_the_data(tmp_path, monkeypatch):
    from tfdefense import data_imagenet

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv(data_imagenet.MANUAL_DIR_ENV, raising=False)
    ctx = Context("paper_imagenet", str(tmp_path / "out"))
    labels = ("method", "pair", "part", "statistic", "train \\ test")
    for name in ("cdvae_table5", "cdvae_table1", "cdvae_table2", "cdvae_fig3_pearson", "cdvae_table3"):
        result = get(name)(ctx)
        assert result.measurements["status"] == "needs_data", name
        assert "ILSVRC2012_img_val.tar" in result.notes[0 if name != "cdvae_table5" else 1], name
        ours = [c for row in result.rows for k, c in row.items() if "paper" not in k and k not in labels]
        assert ours and all(str(c).startswith(cm.NEEDS_IMAGENET) for c in ours), name
