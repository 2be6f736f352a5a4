"""tfdefense.data: the offline mnist_5k split and the tfds paths (mocked, no network)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfdefense import data


def test_mnist_5k_splits_are_stratified_disjoint_and_sized_as_documented():
    parts = {s: data.load_arrays("mnist_5k", s) for s in data.SPLITS}
    sizes = {s: len(parts[s][0]) for s in data.SPLITS}
    assert sizes == {"train": 3500, "validation": 500, "test": 1000}
    for split, per_class in zip(data.SPLITS, data.MNIST_5K_PER_CLASS):
        assert np.bincount(parts[split][1], minlength=10).tolist() == [per_class] * 10
    flat = {s: {x.tobytes() for x in parts[s][0]} for s in data.SPLITS}
    assert not flat["train"] & flat["test"]
    assert not flat["validation"] & flat["test"]


def test_mnist_5k_is_deterministic_float32_in_unit_range():
    x1, y1 = data.load_arrays("mnist_5k", "validation")
    x2, y2 = data.load_arrays("mnist_5k", "validation")
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.dtype == np.float32 and y1.dtype == np.int64
    assert x1.shape[1:] == (28, 28, 1)
    assert 0.0 <= x1.min() and x1.max() <= 1.0 and x1.max() > 0.9


def test_load_returns_unbatched_image_label_pairs():
    ds = data.load("mnist_5k", "test")
    assert ds.element_spec[0].shape == (28, 28, 1)
    assert ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].dtype == tf.int64


def test_unknown_name_and_split_raise_value_error_naming_choices():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.load("svhn")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.load("mnist_5k", "dev")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.spec("imagenet")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_tfds_datasets_map_to_float_images_and_int64_labels(name):
    spec = data.spec(name)
    with tfds.testing.mock_data(num_examples=6):
        x, y = next(iter(data.load(name, "train").batch(6)))
    assert x.dtype == tf.float32 and y.dtype == tf.int64
    assert tuple(x.shape[1:]) == spec.shape
    assert float(tf.reduce_min(x)) >= 0.0 and float(tf.reduce_max(x)) <= 1.0
    assert int(tf.reduce_max(y)) < spec.num_classes


def test_tfds_validation_split_is_carved_from_train():
    assert data._tfds_split("mnist", "validation") == "train[90%:]"
    assert data._tfds_split("mnist", "train") == "train[:90%]"
    assert data._tfds_split("cifar10", "test") == "test"


def test_celeb_a_gives_64px_images_and_a_binary_attribute_label():
    with tfds.testing.mock_data(num_examples=4):
        x, y = next(iter(data.load("celeb_a", "validation").batch(4)))
        assert tuple(x.shape[1:]) == (64, 64, 3)
        assert set(y.numpy().tolist()) <= {0, 1}
        with pytest.raises(ValueError, match="unknown CelebA attribute 'Glasses'"):
            data.load("celeb_a", "train", attribute="Glasses")


class _DownloadReached(Exception):
    """Raised where tfds would start fetching files: every step before it ran."""


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "celeb_a"])
def test_tfds_builder_reaches_the_download_without_a_network(name, tmp_path, monkeypatch):
    # mock_data replaces tfds.load wholesale and skips the builder; this runs the real builder
    # path a user's first run takes (lazy imports such as importlib_resources, metadata, the
    # download manager) and stops it where the files would be fetched
    from tensorflow_datasets.core.download import download_manager

    def refuse(self, *args, **kwargs):
        raise _DownloadReached(args[0] if args else kwargs)

    for method in ("download", "download_and_extract", "download_kaggle_data"):
        if hasattr(download_manager.DownloadManager, method):
            monkeypatch.setattr(download_manager.DownloadManager, method, refuse)
    builder = tfds.builder(name, data_dir=str(tmp_path))
    with pytest.raises(_DownloadReached) as reached:
        builder.download_and_prepare(download_dir=str(tmp_path / "downloads"))
    assert "http" in str(reached.value)  # it was about to fetch the dataset's own files
