"""ResNet-50 classifier (``keras.applications``), CD-VAE's D on restricted ImageNet.

``weights`` is ``None`` (random init) or a path to a weights file; ImageNet
weights are loaded only when the file is present (this library never fetches
from a hub at run time). Inputs in [0, 1] are scaled to the caffe-style
preprocessing ResNet-50 expects inside the model.

BatchNorm as the official D (kai-wen-yang/CD-VAE networks/resnet.py, torchvision's ResNet
with ``norm_layer = nn.BatchNorm2d``): eps 1e-5 and momentum 0.1 in PyTorch's convention,
i.e. Keras momentum 0.9 (``BN_EPSILON``, ``BN_MOMENTUM``; ``keras.applications`` builds
1.001e-5 and 0.99). One architectural difference stays: ``keras.applications``' ResNet-50
is v1 (a stride-2 block downsamples in its first 1x1 convolution), torchvision's is v1.5
(in the 3x3 one, networks/resnet.py ``Bottleneck.conv2``); the ImageNet weights this
module loads are Keras's, trained as v1.

Example:
    >>> from tfdefense.nets import resnet50
    >>> resnet50((64, 64, 3), 9).output_shape
    (None, 9)
"""

from __future__ import annotations

import os

import keras
from keras import layers

from tfdefense.nets.small_cnn import PENULTIMATE

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: official ResNet-50 BatchNorm (networks/resnet.py ``norm_layer = nn.BatchNorm2d``, no
#: arguments): PyTorch's defaults eps 1e-5, momentum 0.1 (weighs the batch) = Keras momentum 0.9
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="tfdefense")
class ReverseChannels(layers.Layer):
    """RGB → BGR (a named layer, not a Lambda, so ``.keras`` files load safely)."""

    def call(self, inputs):
        return inputs[..., ::-1]


def _clone_batchnorm(layer: layers.Layer) -> layers.Layer:
    config = layer.get_config()
    if isinstance(layer, layers.BatchNormalization):
        config.update(epsilon=BN_EPSILON, momentum=BN_MOMENTUM)
    return layer.__class__.from_config(config)


def with_official_batchnorm(backbone: keras.Model) -> keras.Model:
    """``backbone`` rebuilt with every BatchNormalization at ``BN_EPSILON`` / ``BN_MOMENTUM``,
    its weights (and moving statistics) copied over."""
    rebuilt = keras.models.clone_model(backbone, clone_function=_clone_batchnorm)
    rebuilt.set_weights(backbone.get_weights())
    return rebuilt


def resnet50(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 9,
    weights: str | None = None,
    name: str = "resnet50",
) -> keras.Model:
    """ResNet-50 backbone + global average pool + dense logits.

    Args:
        input_shape: (H, W, 3) images in [0, 1].
        num_classes: number of logits (9 for restricted ImageNet).
        weights: ``None`` or the path of a ``*_notop.h5`` ImageNet weights file.
    """
    if weights is not None and not os.path.exists(weights):
        raise ValueError(
            f"weights: file {weights!r} not found; download resnet50 'notop' ImageNet weights "
            "from keras-applications' release page or pass weights=None"
        )
    inputs = keras.Input(input_shape, name="images")
    h = layers.Rescaling(255.0, name="to_255")(inputs)
    h = ReverseChannels(name="rgb_to_bgr")(h)
    h = layers.Normalization(mean=_CAFFE_MEAN_BGR, variance=(1.0, 1.0, 1.0), name="caffe_mean")(h)
    backbone = with_official_batchnorm(keras.applications.ResNet50(
        include_top=False, weights=weights, input_shape=input_shape, pooling=None))
    h = backbone(h)
    h = layers.GlobalAveragePooling2D(name=PENULTIMATE)(h)
    logits = layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, logits, name=name)
