"""Wide-ResNet (Zagoruyko & Komodakis 2016), pre-activation, as CD-VAE's D and D̂.

WRN-28-10 with dropout 0.3 is the CIFAR-10 classifier of CD-VAE (official
``Wide_ResNet(28, 10, 0.3, 10)``). Depth 6n+4 and width are parameters so
tests can build WRN-10-1.

Configuration as the official ``Wide_ResNet`` / ``wide_basic`` (kai-wen-yang/CD-VAE
networks/vae.py and networks/adv_vae.py): BatchNorm eps 1e-5 everywhere, momentum 0.1 in
the blocks and 0.9 in the final BN (PyTorch's convention; ``BN_MOMENTUM`` and
``FINAL_BN_MOMENTUM`` in Keras's), and every 3x3 convolution padded by 1 on each side
(``padding=1``), which a stride-2 Keras ``padding="same"`` convolution does not do.

Example:
    >>> from tfdefense.nets import wide_resnet
    >>> wide_resnet((32, 32, 3), 10, depth=10, width=1).output_shape
    (None, 10)
"""

from __future__ import annotations

import keras
from keras import layers

from tfdefense.nets.fused_batch_norm import batch_normalization
from tfdefense.nets.small_cnn import PENULTIMATE

#: BatchNorm epsilon: the official ``nn.BatchNorm2d`` default 1e-5 (kai-wen-yang/CD-VAE @0c92c65
#: networks/adv_vae.py:57,60 ``wide_basic.bn1/bn2``, :93 ``Wide_ResNet.bn1``; networks/vae.py:38,41,74)
BN_EPSILON = 1e-5
#: the blocks' BatchNorm momentum: official ``nn.BatchNorm2d`` default momentum 0.1
#: (adv_vae.py:57,60; vae.py:38,41); PyTorch weighs the batch by it, Keras the old value: 0.9
BN_MOMENTUM = 0.9
#: the final BatchNorm's: official ``nn.BatchNorm2d(nStages[3], momentum=0.9)`` (adv_vae.py:93,
#: vae.py:74), i.e. running = 0.1·running + 0.9·batch: Keras momentum 0.1
FINAL_BN_MOMENTUM = 0.1


def _batch_norm(name: str, final: bool = False) -> layers.BatchNormalization:
    momentum = FINAL_BN_MOMENTUM if final else BN_MOMENTUM
    return batch_normalization(epsilon=BN_EPSILON, momentum=momentum, name=name)


def conv3x3(h: keras.KerasTensor, planes: int, stride: int, name: str) -> keras.KerasTensor:
    """The official 3x3 convolution, ``nn.Conv2d(..., kernel_size=3, stride, padding=1)``.

    Stride 1: ``padding="same"`` is that padding. Stride 2: "same" pads only what the output
    size needs, (0 before, 1 after) on an even input, so the kernel's centre lands one pixel
    right/down of PyTorch's (adv_vae.py:61 ``wide_basic.conv2``) and of the 1x1 shortcut's;
    here the input is padded (1, 1) explicitly (``{name}_pad``, no weights) and convolved "valid".
    """
    if stride == 1:
        return layers.Conv2D(planes, 3, padding="same", name=name)(h)
    h = layers.ZeroPadding2D(1, name=f"{name}_pad")(h)
    return layers.Conv2D(planes, 3, strides=stride, padding="valid", name=name)(h)


def _wide_basic(h, planes: int, stride: int, dropout: float, name: str):
    in_planes = h.shape[-1]
    y = _batch_norm(f"{name}_bn1")(h)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = conv3x3(y, planes, 1, f"{name}_conv1")
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_drop")(y)
    y = _batch_norm(f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = conv3x3(y, planes, stride, f"{name}_conv2")
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
    h = conv3x3(inputs, 16, 1, "conv1")
    for s, planes in enumerate(stages):
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            h = _wide_basic(h, planes, stride, dropout, name=f"stage{s + 1}_block{b + 1}")
    h = _batch_norm("bn_final", final=True)(h)
    h = layers.ReLU(name="relu_final")(h)
    h = layers.GlobalAveragePooling2D(name=PENULTIMATE)(h)
    logits = layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, logits, name=name or f"wrn_{depth}_{width}")
