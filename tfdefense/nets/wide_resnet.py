"""Wide-ResNet (Zagoruyko & Komodakis 2016), pre-activation, as CD-VAE's D and D̂.

WRN-28-10 with dropout 0.3 is the CIFAR-10 classifier of CD-VAE (official
``Wide_ResNet(28, 10, 0.3, 10)``). Depth 6n+4 and width are parameters so
tests can build WRN-10-1.

Example:
    >>> from tfdefense.nets import wide_resnet
    >>> wide_resnet((32, 32, 3), 10, depth=10, width=1).output_shape
    (None, 10)
"""

from __future__ import annotations

import keras
from keras import layers

from tfdefense.nets.small_cnn import PENULTIMATE


def _wide_basic(h, planes: int, stride: int, dropout: float, name: str):
    in_planes = h.shape[-1]
    y = layers.BatchNormalization(name=f"{name}_bn1")(h)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(planes, 3, padding="same", name=f"{name}_conv1")(y)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_drop")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = layers.Conv2D(planes, 3, strides=stride, padding="same", name=f"{name}_conv2")(y)
    if stride != 1 or in_planes != planes:
        h = layers.Conv2D(planes, 1, strides=stride, name=f"{name}_shortcut")(h)
    return layers.Add(name=f"{name}_add")([y, h])


def wide_resnet(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    depth: int = 28,
    width: int = 10,
    dropout: float = 0.3,
    name: str | None = None,
) -> keras.Model:
    """WRN-depth-width (logits out). Defaults: WRN-28-10, dropout 0.3 (CD-VAE code)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth: expected 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
    if width < 1:
        raise ValueError(f"width: expected an integer >= 1, got {width}")
    n = (depth - 4) // 6
    stages = (16 * width, 32 * width, 64 * width)
    inputs = keras.Input(input_shape, name="images")
    h = layers.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    for s, planes in enumerate(stages):
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            h = _wide_basic(h, planes, stride, dropout, name=f"stage{s + 1}_block{b + 1}")
    h = layers.BatchNormalization(name="bn_final")(h)
    h = layers.ReLU(name="relu_final")(h)
    h = layers.GlobalAveragePooling2D(name=PENULTIMATE)(h)
    logits = layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, logits, name=name or f"wrn_{depth}_{width}")
