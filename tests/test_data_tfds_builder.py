"""tfdefense.data through the real tensorflow-datasets builders, offline.

``tfds.testing.mock_data`` replaces the builder wholesale, so it cannot catch what a
user's first download needs. Here the real mnist / fashion_mnist / cifar10 builders
(their ``_split_generators`` and ``_generate_examples``, tfds' extractor and writer)
prepare tiny files written in the original formats (idx-ubyte ``.gz``, CIFAR-10's
binary tarball), handed to tfds the way a user without a network would: in the
``manual_dir``. Two things differ from a real offline run, and only these are patched:
the registered checksums are those of our tiny files, and mnist's example counts
(hard-coded to 60,000 / 10,000 in the builder) are those we write, as tfds' own
``mnist_test.py`` does. Any network access (GCS or the download URLs) fails the test.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums, downloader
from tensorflow_datasets.core.utils import gcs_utils
from tensorflow_datasets.image_classification import cifar, mnist

from tfdefense import data

MNIST_TRAIN_LABELS = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], np.uint8)
MNIST_TEST_LABELS = np.array([0, 7, 8, 2], np.uint8)


class NetworkUsed(AssertionError):
    """A test that must stay offline tried to fetch something."""


@pytest.fixture
def offline(monkeypatch):
    """No GCS and no HTTP: any attempt raises ``NetworkUsed``."""
    def refuse(url, *args, **kwargs):
        raise NetworkUsed(f"tried to fetch {url}")

    monkeypatch.setattr(gcs_utils, "_is_gcs_disabled", True)
    monkeypatch.setattr(gcs_utils, "exists", lambda path: False)
    monkeypatch.setattr(downloader, "_open_url", refuse)


def _checksums_of(monkeypatch, builder_cls, manual_dir: Path) -> None:
    """Register the checksums of the files in ``manual_dir`` for the builder's own URLs."""
    registered = builder_cls.url_infos
    fake = {url: checksums.compute_url_info(manual_dir / info.filename)
            for url, info in registered.items()}
    monkeypatch.setattr(builder_cls, "url_infos", fake)


def _idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return gzip.compress(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())


def _idx_labels(labels: np.ndarray) -> bytes:
    return gzip.compress(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


def _mnist_images(n: int, offset: int) -> np.ndarray:
    """Distinct images with known pixels: image i is (arange(784) * 7 + 31 * (i + offset)) % 256."""
    base = np.arange(28 * 28, dtype=np.int64) * 7
    return np.stack([(base + 31 * (i + offset)) % 256 for i in range(n)]).reshape(n, 28, 28)


def _write_mnist(manual_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    train = (_mnist_images(len(MNIST_TRAIN_LABELS), 0), MNIST_TRAIN_LABELS)
    test = (_mnist_images(len(MNIST_TEST_LABELS), 100), MNIST_TEST_LABELS)
    manual_dir.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        (manual_dir / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx_images(images))
        (manual_dir / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx_labels(labels))
    return {"train": train, "test": test}


def _by_content(images: np.ndarray, labels: np.ndarray) -> dict[bytes, int]:
    return {img.astype(np.uint8).tobytes(): int(label) for img, label in zip(images, labels)}


def _as_written(x: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] back to the uint8 values written (exact for k / 255)."""
    return np.rint(x * 255.0).astype(np.uint8)


@pytest.mark.parametrize("name, builder_cls",
                         [("mnist", mnist.MNIST), ("fashion_mnist", mnist.FashionMNIST)])
def test_mnist_format_files_load_through_the_real_builder(name, builder_cls, tmp_path,
                                                          monkeypatch, offline):
    manual_dir = tmp_path / "manual"
    written = _write_mnist(manual_dir)
    monkeypatch.setattr(mnist, "_TRAIN_EXAMPLES", len(MNIST_TRAIN_LABELS))
    monkeypatch.setattr(mnist, "_TEST_EXAMPLES", len(MNIST_TEST_LABELS))
    _checksums_of(monkeypatch, builder_cls, manual_dir)
    data_dir = str(tmp_path / "tfds")

    parts = {s: data.load_arrays(name, s, data_dir=data_dir, manual_dir=str(manual_dir))
             for s in data.SPLITS}

    assert tfds.builder(name, data_dir=data_dir).is_prepared()  # prepared, not mocked
    for x, y in parts.values():
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == (28, 28, 1)
        assert 0.0 <= x.min() and x.max() <= 1.0
    # our validation split is the last 10% of tfds train: 9 + 1 of the 10 training images
    assert [len(parts[s][1]) for s in data.SPLITS] == [9, 1, 4]
    # the writer shuffles examples, so match them by content: every image came out with its label
    train_out = {}
    for s in ("train", "validation"):
        train_out.update(_by_content(_as_written(parts[s][0])[..., 0], parts[s][1]))
    assert train_out == _by_content(*written["train"])
    assert _by_content(_as_written(parts["test"][0])[..., 0], parts["test"][1]) == \
        _by_content(*written["test"])
    # hand case: training image 0 (label 3) starts 0, 7, 14 and holds a 255 at pixel 73
    x = np.concatenate([parts["train"][0], parts["validation"][0]])
    y = np.concatenate([parts["train"][1], parts["validation"][1]])
    (i,) = np.flatnonzero(_as_written(x)[:, 0, 0, 0] == 0)  # the only image starting with 0
    np.testing.assert_allclose(x[i, 0, :3, 0], [0.0, 7 / 255, 14 / 255], rtol=0, atol=1e-7)
    assert x[i].reshape(-1)[73] == 1.0 and y[i] == 3


def _cifar_batch(images_chw: np.ndarray, labels: np.ndarray) -> bytes:
    rows = [bytes([int(label)]) + img.astype(np.uint8).tobytes()
            for img, label in zip(images_chw, labels)]
    return b"".join(rows)


def _write_cifar10(manual_dir: Path, per_batch: int = 2, n_test: int = 3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5 * per_batch + n_test, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=len(images)).astype(np.uint8)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    members = {"batches.meta.txt": ("\n".join(names) + "\n\n").encode()}
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        members[f"data_batch_{b + 1}.bin"] = _cifar_batch(images[sl], labels[sl])
    members["test_batch.bin"] = _cifar_batch(images[-n_test:], labels[-n_test:])
    manual_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(manual_dir / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for member, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    hwc = images.transpose(0, 2, 3, 1)  # the files are channel-major; images come out NHWC
    return {"train": (hwc[:-n_test], labels[:-n_test]), "test": (hwc[-n_test:], labels[-n_test:])}


def test_cifar10_binary_tarball_loads_through_the_real_builder(tmp_path, monkeypatch, offline):
    manual_dir = tmp_path / "manual"
    written = _write_cifar10(manual_dir)
    _checksums_of(monkeypatch, cifar.Cifar10, manual_dir)
    data_dir = str(tmp_path / "tfds")

    parts = {s: data.load_arrays("cifar10", s, data_dir=data_dir, manual_dir=str(manual_dir))
             for s in data.SPLITS}

    assert [len(parts[s][1]) for s in data.SPLITS] == [9, 1, 3]
    for x, y in parts.values():
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape[1:] == (32, 32, 3)
    train_out = {}
    for s in ("train", "validation"):
        train_out.update(_by_content(_as_written(parts[s][0]), parts[s][1]))
    assert train_out == _by_content(*written["train"])
    assert _by_content(_as_written(parts["test"][0]), parts["test"][1]) == \
        _by_content(*written["test"])


def test_a_failed_download_names_the_dataset_data_dir_and_what_to_do(tmp_path, monkeypatch):
    # the network layer fails as it does offline (requests' ConnectionError, a retry-less
    # stand-in for "Name or service not known"); tfds' download manager and builder run as usual
    import requests

    def unreachable(url, *args, **kwargs):
        raise requests.exceptions.ConnectionError(f"Failed to resolve host of {url}")

    monkeypatch.setattr(gcs_utils, "exists", lambda path: False)
    monkeypatch.setattr(downloader, "_open_url", unreachable)
    data_dir = str(tmp_path / "tfds")

    with pytest.raises(data.DatasetDownloadError) as caught:
        data.load("mnist", "train", data_dir=data_dir)

    message = str(caught.value)
    assert "'mnist'" in message and data_dir in message
    assert "manual_dir" in message and str(Path(data_dir) / "downloads" / "manual") in message
    assert "train-images-idx3-ubyte.gz" in message  # the files to supply, by their names
    assert "https://storage.googleapis.com/cvdf-datasets/mnist/" in message
    assert "tfds build mnist" in message and "ConnectionError" in message
    assert isinstance(caught.value, OSError)
    cause = caught.value.__cause__
    while cause is not None and not isinstance(cause, requests.exceptions.ConnectionError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None  # the original error is chained


def test_not_prepared_with_download_false_says_what_to_do(tmp_path, offline):
    with pytest.raises(data.DatasetDownloadError, match="download=False.*cifar-10-binary.tar.gz"):
        data.load("cifar10", "test", data_dir=str(tmp_path), download=False)


def test_manual_dir_missing_a_file_is_a_download_error_not_a_silent_fetch(tmp_path, monkeypatch,
                                                                         offline):
    manual_dir = tmp_path / "manual"
    _write_mnist(manual_dir)
    _checksums_of(monkeypatch, mnist.MNIST, manual_dir)
    (manual_dir / "t10k-labels-idx1-ubyte.gz").unlink()  # tfds falls back to its URL: refused
    with pytest.raises(data.DatasetDownloadError) as caught:
        data.load("mnist", "test", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir))
    assert str(manual_dir) in str(caught.value)
    assert isinstance(caught.value.__cause__, NetworkUsed)
    assert str(caught.value.__cause__).endswith("/t10k-labels-idx1-ubyte.gz")  # only that one
