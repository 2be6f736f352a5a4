"""MagNet's convolutional autoencoders (Meng & Chen 2017, Table 1, MNIST).

A structure lists the encoder: an int is a 3x3 convolution with that many
filters, ``"average"`` / ``"max"`` a 2x2 pooling. The decoder mirrors it
(pooling becomes 2x2 upsampling) and ends in a 3x3 sigmoid convolution back to
the image channels. The MNIST setting of the paper and its official code
(``train_defense.py``):

* autoencoder I (detector I and the reformer): ``(3, "average", 3)`` =
  Conv 3x3x3 sigmoid, AvgPool 2x2, Conv 3x3x3 sigmoid | Conv 3x3x3 sigmoid,
  Upsample 2x2, Conv 3x3x3 sigmoid, Conv 3x3x1 sigmoid;
* autoencoder II (detector II): ``(3,)`` = Conv 3x3x3 sigmoid | Conv 3x3x3
  sigmoid, Conv 3x3x1 sigmoid;
* L2 activity regularization 1e-9 on every convolution, sigmoid activations.

Training (``DenoisingAutoEncoder``): Gaussian noise of std 0.1 on the input,
MSE to the clean image, Adam, 100 epochs, batch 256.

Example:
    >>> from tfdefense.baselines import magnet_autoencoder, MNIST_STRUCTURE_II
    >>> ae = magnet_autoencoder(MNIST_STRUCTURE_II)
    >>> ae.output_shape
    (None, 28, 28, 1)
"""

from __future__ import annotations

import keras
from keras import layers

from tfdefense.validation import check_number

#: autoencoder I of MagNet's MNIST setting (Meng & Chen 2017, Table 1)
MNIST_STRUCTURE_I = (3, "average", 3)
#: autoencoder II of MagNet's MNIST setting (Meng & Chen 2017, Table 1)
MNIST_STRUCTURE_II = (3,)

_POOLS = {"average": layers.AveragePooling2D, "max": layers.MaxPooling2D}


def _check_structure(structure) -> tuple:
    if isinstance(structure, str | bytes) or not hasattr(structure, "__iter__"):
        raise ValueError(
            f"structure: expected a sequence such as (3, 'average', 3), got {structure!r}"
        )
    structure = tuple(structure)
    if not structure:
        raise ValueError("structure: expected at least one layer, got an empty sequence")
    for item in structure:
        is_int = isinstance(item, int) and not isinstance(item, bool)
        if not ((is_int and item >= 1) or item in _POOLS):
            raise ValueError(
                f"structure: expected positive ints (filters) or 'average' / 'max', got {item!r}"
            )
    return structure


def magnet_autoencoder(
    structure=MNIST_STRUCTURE_I,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    activation: str = "sigmoid",
    reg_strength: float = 1e-9,
    name: str | None = None,
) -> keras.Model:
    """A MagNet autoencoder: images in [0, 1] -> reconstructions in [0, 1].

    Args:
        structure: encoder layers, see the module docstring; MNIST I by default.
        input_shape: (H, W, C); H and W must be divisible by 2 per pooling.
        activation: activation of the hidden convolutions (paper: sigmoid).
        reg_strength: L2 activity regularization per convolution (paper: 1e-9).
        name: model name.
    """
    structure = _check_structure(structure)
    reg_strength = check_number(reg_strength, "reg_strength", low=0.0)
    h, w, c = input_shape
    pools = sum(1 for item in structure if item in _POOLS)
    if h % (2**pools) or w % (2**pools):
        raise ValueError(
            f"input_shape: height and width must be divisible by {2**pools} for "
            f"{pools} pooling layer(s), got {tuple(input_shape)}"
        )
    regularizer = keras.regularizers.L2(reg_strength) if reg_strength else None

    def conv(filters, act):
        return layers.Conv2D(filters, 3, padding="same", activation=act,
                             activity_regularizer=regularizer)

    inputs = keras.Input(input_shape, name="images")
    h_ = inputs
    for item in structure:
        if isinstance(item, int):
            h_ = conv(item, activation)(h_)
        else:
            h_ = _POOLS[item](2, padding="same")(h_)
    for item in reversed(structure):
        h_ = conv(item, activation)(h_) if isinstance(item, int) else layers.UpSampling2D()(h_)
    outputs = conv(c, "sigmoid")(h_)
    default = "magnet_ae_" + "_".join(str(item) for item in structure)
    return keras.Model(inputs, outputs, name=name or default)
