"""The one interface every defense shares: ``predict(x) -> labels`` with REJECTED.

FMDefense, GreyBoxDefense, MagNet and Defense-GAN all answer a batch of images
with int64 labels, where ``REJECTED`` (-1) marks an input the defense refused
to classify. Experiments score any defense through this interface.

Example:
    >>> import numpy as np
    >>> from tfdefense.defend.base import REJECTED, Defense
    >>> class Always0(Defense):
    ...     def _predict(self, x):
    ...         return np.zeros(len(x), "int64")
    >>> Always0().predict(np.zeros((2, 4, 4, 1), "float32")).tolist()
    [0, 0]
"""

from __future__ import annotations

import numpy as np

from tfdefense.validation import check_images

REJECTED = -1


class Defense:
    """Base class: subclasses implement ``_predict`` on validated float32 images."""

    #: per-image shape (H, W, C) the defense expects, or None for any
    input_shape: tuple[int | None, int | None, int | None] | None = None

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Labels for ``x`` (float32 NHWC in [0, 1]); ``REJECTED`` where refused."""
        x = check_images(x, "x", shape=self.input_shape)
        out = [np.asarray(self._predict(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.int64)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError
