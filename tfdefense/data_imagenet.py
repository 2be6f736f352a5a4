"""Restricted ImageNet (Tsipras et al. 2019): 9 super-classes of ImageNet, through tfds ``imagenet2012``.

CD-VAE's ImageNet experiments (§4) use "restricted ImageNet [44]": the 203
ImageNet classes that fall into 9 super-classes, 257,748 training and 10,150
test images. The super-classes are contiguous ranges of the ImageNet label
ids (tfds ``imagenet2012`` ids, which follow the sorted WordNet ids, the order
the ``robustness`` library's ``RestrictedImageNet`` uses); ranges inclusive:

==========  ==========  =======  ======================
class       label ids   classes  first – last synset
==========  ==========  =======  ======================
dog         151–268     118      n02085620 – n02113978
cat         281–285     5        n02123045 – n02124075
frog        30–32       3        n01641577 – n01644900
turtle      33–37       5        n01664065 – n01669191
bird        80–100      21       n01795545 – n01860187
primate     365–382     18       n02480495 – n02494079
fish        389–397     9        n02514041 – n02655020
crab        118–121     4        n01978287 – n01981276
insect      300–319     20       n02165105 – n02268443
==========  ==========  =======  ======================

203 classes in all, as the paper counts. Splits: ``test`` is ImageNet's
validation set restricted (10,150 images, the paper's test set); ``train``
and ``validation`` are the first 90% and last 10% of ImageNet's training set,
restricted (``tfdefense.data``'s convention: thresholds never see test data;
the paper trains on all of it).

Resolution: the paper says 299x299, but its VQ-VAE halves the resolution
twice and a 299 input comes back 300 wide, so R(x) = x − G(x) cannot be
formed; Table 2's ℓ2 norm of the normalised x (427.99) also fits 224x224x3
values (mean square 1.22) better than 299x299x3 (0.68). We use the
``robustness`` library's protocol: resize the shorter side to size/0.875
(256 for 224) and centre-crop size x size; ``augment=True`` gives the
training transform instead (random resized crop, area 8–100%, aspect
3/4–4/3, and a horizontal flip; the library's colour jitter and lighting
noise are left out). ``restricted_imagenet_64`` and ``restricted_imagenet_32``
are the same data at 64x64 and 32x32, for CPU-scale runs and tests.

The archives cannot be downloaded automatically: put ``ILSVRC2012_img_train.tar``
and ``ILSVRC2012_img_val.tar`` (https://image-net.org/download-images.php)
in the manual directory (``manual_dir=``, else ``$TFDEFENSE_IMAGENET_MANUAL_DIR``,
else tfds' ``<data_dir>/downloads/manual``); tfds prepares ``imagenet2012``
once, then only the prepared data is read.

Example:
    >>> from tfdefense import data_imagenet
    >>> data_imagenet.restricted_labels([151, 268, 281, 0, 319]).numpy().tolist()
    [0, 0, 1, -1, 8]
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

SUPERCLASSES = ("dog", "cat", "frog", "turtle", "bird", "primate", "fish", "crab", "insect")
#: inclusive ImageNet label-id ranges per super-class (robustness library, Tsipras et al. 2019)
RANGES = ((151, 268), (281, 285), (30, 32), (33, 37), (80, 100), (365, 382), (389, 397),
          (118, 121), (300, 319))
#: first and last synset of each range (tfds ``imagenet2012`` label names)
SYNSET_RANGES = (("n02085620", "n02113978"), ("n02123045", "n02124075"), ("n01641577", "n01644900"),
                 ("n01664065", "n01669191"), ("n01795545", "n01860187"), ("n02480495", "n02494079"),
                 ("n02514041", "n02655020"), ("n01978287", "n01981276"), ("n02165105", "n02268443"))
#: dataset names this module serves, and their image size
SIZES = {"restricted_imagenet": 224, "restricted_imagenet_64": 64, "restricted_imagenet_32": 32}
#: the archives tfds' imagenet2012 builder reads from the manual directory
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
MANUAL_DIR_ENV = "TFDEFENSE_IMAGENET_MANUAL_DIR"
CROP_FRACTION = 0.875  # 224 / 256
_TFDS_SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "validation"}


class ImageNetNotFoundError(FileNotFoundError, ValueError):
    """ImageNet archives absent where tfds looks (both a ``FileNotFoundError`` and a ``ValueError``)."""


def label_table() -> np.ndarray:
    """(1000,) int64: the super-class of every ImageNet label id, −1 outside restricted ImageNet."""
    table = np.full(1000, -1, np.int64)
    for c, (lo, hi) in enumerate(RANGES):
        table[lo:hi + 1] = c
    return table


def restricted_labels(labels) -> tf.Tensor:
    """Super-class ids (int64) of ImageNet label ids; −1 for labels outside the 9 super-classes."""
    return tf.gather(tf.constant(label_table()), tf.cast(labels, tf.int64))


def resolve_manual_dir(data_dir: str | None = None, manual: str | None = None) -> str:
    """Where the archives are looked for: ``manual``, ``$TFDEFENSE_IMAGENET_MANUAL_DIR``, or tfds' default."""
    if manual:
        return manual
    if os.environ.get(MANUAL_DIR_ENV):
        return os.environ[MANUAL_DIR_ENV]
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    return os.path.join(root, "downloads", "manual")


def _check_archives(builder, directory: str, download: bool) -> None:
    if builder.is_prepared():
        return
    missing = [a for a in ARCHIVES if not os.path.isfile(os.path.join(directory, a))]
    if missing or not download:
        raise ImageNetNotFoundError(
            f"restricted ImageNet needs tfds 'imagenet2012', which is not prepared in "
            f"{builder.data_dir!r}" + (f" and {', '.join(missing)} not in {directory!r}" if missing else "")
            + ". Download ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar (6.3 GB) from "
            "https://image-net.org/download-images.php (free account, non-commercial terms) into "
            f"that folder (or pass manual_dir= / set ${MANUAL_DIR_ENV}); the first load prepares "
            "imagenet2012 once (hours, ~150 GB)" + ("" if download else " and needs download=True")
        )


def preprocess(image: tf.Tensor, size: int, augment: bool = False, seed=None) -> tf.Tensor:
    """uint8 (H, W, 3) → float32 (size, size, 3) in [0, 1]: centre crop of the resized image, or
    with ``augment`` a random resized crop and flip (robustness library's train transform)."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    if augment:
        begin, extent, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image), tf.zeros((1, 0, 4)), min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
            use_image_if_no_bounding_boxes=True, seed=seed or 0)
        image = tf.image.resize(tf.slice(image, begin, extent), (size, size), antialias=True)
        image = tf.image.random_flip_left_right(image, seed=seed)
    else:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = (size / CROP_FRACTION) / tf.reduce_min(shape)
        resized = tf.cast(tf.math.ceil(shape * scale), tf.int32)
        image = tf.image.resize(image, tf.maximum(resized, size), antialias=True)
        image = tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.clip_by_value(image, 0.0, 1.0)


def load(name: str = "restricted_imagenet", split: str = "train", *, shuffle_files: bool = False,
         data_dir: str | None = None, manual_dir: str | None = None, download: bool = True,
         augment: bool = False, seed: int | None = None) -> tf.data.Dataset:
    """Restricted ImageNet as (float32 image in [0, 1], int64 super-class id), unbatched.

    Args:
        name: ``restricted_imagenet`` (224x224), ``restricted_imagenet_64`` or ``_32``.
        split: ``train``, ``validation`` or ``test`` (module docstring).
        shuffle_files, data_dir: passed to ``tfds.load``.
        manual_dir: folder with the ImageNet archives (see ``resolve_manual_dir``).
        download: let tfds prepare imagenet2012 from the archives when needed.
        augment: training augmentation instead of the centre crop.
        seed: seed of the augmentation.

    Raises:
        ValueError: unknown name or split.
        ImageNetNotFoundError: imagenet2012 not prepared and the archives absent.
    """
    import tensorflow_datasets as tfds

    if name not in SIZES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(SIZES)}")
    if split not in _TFDS_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(_TFDS_SPLITS)}")
    directory = resolve_manual_dir(data_dir, manual_dir)
    _check_archives(tfds.builder("imagenet2012", data_dir=data_dir), directory, download)
    ds = tfds.load("imagenet2012", split=_TFDS_SPLITS[split], shuffle_files=shuffle_files,
                   data_dir=data_dir, download=download,
                   decoders={"image": tfds.decode.SkipDecoding()},
                   download_and_prepare_kwargs={
                       "download_config": tfds.download.DownloadConfig(manual_dir=directory)})
    table = tf.constant(label_table())
    size = SIZES[name]

    def keep(example):
        return tf.gather(table, example["label"]) >= 0

    def convert(example):
        image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
        return preprocess(image, size, augment, seed), tf.gather(table, example["label"])

    return ds.filter(keep).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
