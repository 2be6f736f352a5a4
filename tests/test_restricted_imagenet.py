"""Restricted ImageNet through tfds (offline, ``tfds.testing.mock_data``) and the CD-VAE
experiments on a VQ CD-VAE at 32x32 (small_cnn classifiers: ResNet-50 is too heavy here)."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfdefense import data, data_imagenet
from tfdefense.data_imagenet import ImageNetNotFoundError


@pytest.fixture
def tfds_dir(tmp_path, monkeypatch):
    """An empty tfds data dir, with the two (empty) archives in its manual dir."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv(data_imagenet.MANUAL_DIR_ENV, raising=False)
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in data_imagenet.ARCHIVES:
        (manual / name).write_bytes(b"")
    return tmp_path


def test_label_table_matches_documented_ranges():
    table = data_imagenet.label_table()
    counts = np.bincount(table[table >= 0], minlength=9)
    assert counts.tolist() == [118, 5, 3, 5, 21, 18, 9, 4, 20]
    assert counts.sum() == 203  # the paper's "203 classes"
    synsets = tfds.builder("imagenet2012").info.features["label"].names
    for c, ((lo, hi), (first, last)) in enumerate(zip(data_imagenet.RANGES, data_imagenet.SYNSET_RANGES)):
        assert (synsets[lo], synsets[hi]) == (first, last)
        assert table[lo] == table[hi] == c and table[lo - 1] != c and table[hi + 1] != c
    assert data_imagenet.restricted_labels([0, 151, 999]).numpy().tolist() == [-1, 0, -1]


def test_spec():
    spec = data.spec("restricted_imagenet")
    assert (spec.shape, spec.num_classes, spec.class_names[0]) == ((224, 224, 3), 9, "dog")
    assert data.spec("restricted_imagenet_32").shape == (32, 32, 3)


def test_mapping_on_mock_data(tfds_dir):
    with tfds.testing.mock_data(num_examples=120):
        raw = tfds.load("imagenet2012", split="validation")
        raw_labels = np.array([int(e["label"]) for e in raw])
        x, y = data.load_arrays("restricted_imagenet_64", "test")
    expected = data_imagenet.label_table()[raw_labels]
    expected = expected[expected >= 0]
    assert len(expected) > 5  # the mock draws labels from all 1000 classes; ~20% are kept
    assert y.tolist() == expected.tolist()
    assert x.shape == (len(y), 64, 64, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and y.dtype == np.int64


def test_missing_archives_say_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv(data_imagenet.MANUAL_DIR_ENV, raising=False)
    with pytest.raises(ImageNetNotFoundError) as info:
        data.load("restricted_imagenet", "train")
    message = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)
    for part in (*data_imagenet.ARCHIVES, str(tmp_path / "downloads" / "manual"), "image-net.org"):
        assert part in message
    with pytest.raises(ValueError, match="split"):
        data_imagenet.load("restricted_imagenet", "val")
    with pytest.raises(ValueError, match="unknown dataset"):
        data_imagenet.load("imagenet")


def test_manual_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(data_imagenet.MANUAL_DIR_ENV, raising=False)
    assert data_imagenet.resolve_manual_dir(str(tmp_path)) == str(tmp_path / "downloads" / "manual")
    monkeypatch.setenv(data_imagenet.MANUAL_DIR_ENV, "/imagenet")
    assert data_imagenet.resolve_manual_dir(str(tmp_path)) == "/imagenet"
    assert data_imagenet.resolve_manual_dir(None, "/given") == "/given"


def test_preprocess_centre_crop_and_augment():
    # 60 x 120: left third black, middle white, right third black; the centre crop is white
    image = np.zeros((60, 120, 3), np.uint8)
    image[:, 40:80] = 255
    out = data_imagenet.preprocess(tf.constant(image), 32).numpy()
    assert out.shape == (32, 32, 3)
    # shorter side 60 → 37 (32 / 0.875), width 74; the centre 32 columns lie in 21..52 of 74,
    # inside the white band 24.7..49.3 except for 4 columns at each edge
    assert out[:, 8:24].min() > 0.95 and out[:, 0].max() < 0.5
    aug = data_imagenet.preprocess(tf.constant(image), 32, augment=True, seed=1).numpy()
    assert aug.shape == (32, 32, 3) and 0.0 <= aug.min() and aug.max() <= 1.0


# ------------------------------------------------- experiments on a VQ CD-VAE
_CLASS_COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.9], [0.9, 0.9, 0.1],
                           [0.9, 0.1, 0.9], [0.1, 0.9, 0.9], [0.5, 0.5, 0.5], [0.95, 0.6, 0.2],
                           [0.3, 0.1, 0.5]])


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _structured_imagenet(self, split, decoders=None, read_config=None, **kwargs):
    """Encoded images whose super-class shows as a colour, labels from the 203 ids (+ others)."""
    rng = np.random.default_rng(abs(hash(str(split))) % 2**32)
    n = 360 if "train" in str(split) else 120
    restricted = np.flatnonzero(data_imagenet.label_table() >= 0)
    labels = np.where(rng.random(n) < 0.9, rng.choice(restricted, n), rng.integers(0, 1000, n))
    images = []
    for label in labels:
        colour = _CLASS_COLOURS[max(data_imagenet.label_table()[label], 0)]
        img = np.clip(colour + rng.normal(0, 0.15, (40, 48, 3)), 0, 1)
        images.append(_png((img * 255).astype(np.uint8)))
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels.astype(np.int64), "file_name": [b"x.JPEG"] * n})


TINY = {
    "dataset": "restricted_imagenet_32", "classifier": "small_cnn", "train_images": None,
    "cdvae_epochs": 3, "classifier_epochs": 4, "batch_size": 32, "eval_images": 48,
    "defense_images": 24, "whitebox_images": 8, "eot_samples": 2, "pgd_steps": 3,
    "defense_steps": 3, "detection_train_images": 200, "lid_k": [5, 10],
    "md_magnitudes": [0.0, 0.001], "gamma": 2.0, "defense_gamma": 2.0, "verbose": 0,
}


@pytest.mark.slow
def test_cdvae_experiments_run_on_a_vq_cdvae(tfds_dir, tmp_path):
    """Tables 1-4, 6 and Fig 3 run unchanged on a VQ CD-VAE, restricted ImageNet at 32x32 (mock)."""
    from tfdefense.experiments import Context, get
    from tfdefense.experiments import cdvae_models as cm
    from tfdefense.models import VQCDVAE

    out = str(tmp_path / "run")
    with tfds.testing.mock_data(as_dataset_fn=_structured_imagenet):
        ctx = Context("quick", out, TINY)

        def train():
            model = VQCDVAE.for_dataset(ctx.dataset, width=8, num_codes=16, classifier="small_cnn",
                                        gamma=2.0, seed=0)
            model.compile()
            model.fit(*cm.train_arrays(ctx), batch_size=32, epochs=TINY["cdvae_epochs"], verbose=0)
            return model

        ctx.cached_model("cdvae_gamma2", train)  # the CD-VAE the experiments ask for, saved as .keras
        ctx = Context("quick", out, TINY)  # a fresh run loads it from the cache
        assert isinstance(cm.cdvae(ctx), VQCDVAE)
        x, y = ctx.arrays("test")
        assert x.shape[1:] == (32, 32, 3) and set(np.unique(y)) <= set(range(9))
        results = {name: get(name)(ctx) for name in ("cdvae_table1", "cdvae_table2", "cdvae_fig3_pearson",
                                                      "cdvae_table3", "cdvae_table4", "cdvae_table6")}
    for name, result in results.items():
        assert result.rows, name
        assert "|" in result.to_markdown(), name
    assert results["cdvae_fig3_pearson"].measurements["latent_dim"] == 8 * 8 * 8
    assert os.path.exists(os.path.join(out, "cache", "cdvae_gamma2.keras"))
