"""Plain Keras building blocks: encoders, decoders, classifiers. No losses."""

from tfdefense.nets.small_cnn import PENULTIMATE, small_cnn

__all__ = ["PENULTIMATE", "small_cnn"]
