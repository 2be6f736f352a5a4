"""PyTorch's ``torch.optim.SGD`` in Keras, for recipes that copy a PyTorch script.

``keras.optimizers.SGD(weight_decay=wd)`` decays the weights directly (decoupled,
``w -= lr·wd·w``) and keeps the learning rate inside its velocity. ``torch.optim.SGD``
adds ``wd·w`` to the gradient, so the decay runs through the momentum buffer (about
``1 / (1 − momentum)`` = 10× stronger at momentum 0.9), and multiplies the buffer by the
*current* rate. The official CD-VAE-AT (``tools/adv_train_cifar.py:137-141``,
``optim.SGD(..., lr=args.lr, momentum=0.9, weight_decay=2e-4)``) is the second kind.

Example:
    >>> opt = TorchSGD(learning_rate=0.1, momentum=0.9, l2=0.1)
    >>> w = keras.Variable([1.0])
    >>> opt.apply([keras.ops.convert_to_tensor([0.5])], [w]); round(float(w.numpy()[0]), 6)
    0.94
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfdefense.validation import check_number

__all__ = ["TorchSGD"]


@keras.saving.register_keras_serializable(package="tfdefense")
class TorchSGD(keras.optimizers.SGD):
    """SGD with PyTorch's update: ``d = g + l2·w; buf = momentum·buf + d; w -= lr·buf``.

    (dampening 0, no Nesterov; the first step uses ``buf = d`` as PyTorch does.) Gradient
    clipping (``clipvalue``/``clipnorm``) happens before ``l2·w`` is added, as
    ``clip_grad_value_`` before ``optimizer.step()`` does in PyTorch.

    Args:
        learning_rate: float or ``LearningRateSchedule``.
        momentum: PyTorch's ``momentum``.
        l2: PyTorch's ``weight_decay`` (coupled L2); Keras's decoupled ``weight_decay``
            is refused to keep the two apart.
    """

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, l2: float = 0.0, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("weight_decay: TorchSGD takes PyTorch's coupled decay as l2=, not weight_decay=")
        if kwargs.get("nesterov"):
            raise ValueError("nesterov: not supported by TorchSGD")
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), **kwargs)
        self.l2 = check_number(l2, "l2", low=0.0)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        d = ops.cast(gradient, variable.dtype)
        if self.l2:
            d = ops.add(d, ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        if self.momentum:
            buf = self.momentums[self._get_variable_index(variable)]
            self.assign(buf, ops.add(ops.multiply(buf, ops.cast(self.momentum, variable.dtype)), d))
            d = buf
        self.assign_sub(variable, ops.multiply(lr, d))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("nesterov", None)
        return {**config, "l2": self.l2}
