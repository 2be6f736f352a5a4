"""Layer activations of a classifier, on x or on a transform of x such as R(x).

``FeatureExtractor`` is what the kernel density, LID and Mahalanobis features
read. It wraps either

* a Keras model (e.g. ``nets.small_cnn`` or a CD-VAE's classifier D): the
  activations of named layers plus the model's output logits; or
* any callable mapping images to one tensor, a list of tensors or a dict of
  tensors (its activations), with an optional ``logits_fn`` for features that
  need the predicted class (kernel density).

An optional ``transform`` is applied to the images first, inside the same
differentiable computation, so "detection on R(x)" (CD-VAE §3.3) is
``transform=lambda x: x - G(x)`` and Mahalanobis input pre-processing takes
its gradient through G. For a CD-VAE use ``FeatureExtractor.for_residual``.

Example:
    >>> import numpy as np
    >>> from tfdefense.nets import small_cnn
    >>> from tfdefense.detect import FeatureExtractor
    >>> fx = FeatureExtractor(small_cnn((28, 28, 1), 10), layers=["penultimate"])
    >>> acts, logits = fx.extract(np.zeros((3, 28, 28, 1), "float32"))
    >>> [a.shape for a in acts], logits.shape
    ([(3, 128)], (3, 10))
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tfdefense.profiling import timed
from tfdefense.validation import check_images, check_positive_int

REDUCTIONS = ("flatten", "mean")
#: layer types whose output repeats another layer's (skipped by layers="all")
_SKIPPED = ("InputLayer", "Flatten", "Dropout", "Reshape", "SpatialDropout2D")


def resolve_layers(model: keras.Model, layers) -> list[str]:
    """Layer names of ``model`` that ``layers`` asks for.

    ``None`` means the penultimate layer (the layer named "penultimate" if
    there is one, else the layer feeding the output; Feinman et al. read the
    last hidden layer); ``"all"`` means every layer but inputs, flatten,
    dropout and reshape layers, output included (Ma et al. use every layer);
    a list of names is checked against the model.
    """
    names = [layer.name for layer in model.layers]
    if layers is None:
        if "penultimate" in names:
            return ["penultimate"]
        kept = [lyr.name for lyr in model.layers[:-1] if type(lyr).__name__ not in _SKIPPED]
        if not kept:
            raise ValueError(f"model {model.name!r}: has no hidden layer to read features from")
        return [kept[-1]]
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers: expected None, 'all' or a list of layer names, got {layers!r}")
        return [lyr.name for lyr in model.layers if type(lyr).__name__ not in _SKIPPED]
    layers = list(layers)
    if not layers:
        raise ValueError("layers: expected at least one layer name, got an empty list")
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(
            f"layers: unknown layer names {unknown} for model {model.name!r}; available: {names}"
        )
    return layers


def reduce_activation(a: tf.Tensor, reduce: str) -> tf.Tensor:
    """(N, ...) activation -> (N, D): flattened, or spatially averaged (Lee et al.)."""
    if reduce == "mean" and a.shape.rank is not None and a.shape.rank > 2:
        return tf.reduce_mean(a, axis=list(range(1, a.shape.rank - 1)))
    return tf.reshape(a, (tf.shape(a)[0], -1))


class FeatureExtractor:
    """Images -> (list of (N, D_l) activations, logits or None).

    Args:
        model: a Keras model, or a callable images -> tensor | list | dict of tensors.
        layers: for a Keras model, see ``resolve_layers``; ignored for callables.
        transform: callable applied to the images first (e.g. x -> R(x)); must be
            differentiable when Mahalanobis pre-processing is used.
        logits_fn: for a callable ``model``, images -> logits (after ``transform``);
            a Keras model's own output is used as logits.
        reduce: "flatten" (Feinman et al., Ma et al.) or "mean" over spatial axes
            (Lee et al.); features may override it per call.
        batch_size: images per compiled call in ``extract``.
    """

    def __init__(
        self,
        model,
        layers=None,
        transform: Callable | None = None,
        logits_fn: Callable | None = None,
        reduce: str = "flatten",
        batch_size: int = 256,
    ):
        if model is None or not callable(model):
            raise ValueError(f"model: expected a Keras model or a callable, got {model!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform: expected a callable or None, got {transform!r}")
        if logits_fn is not None and not callable(logits_fn):
            raise ValueError(f"logits_fn: expected a callable or None, got {logits_fn!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce: expected one of {REDUCTIONS}, got {reduce!r}")
        self.model = model
        self.transform = transform
        self.reduce = reduce
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if isinstance(model, keras.Model):
            self.layers = resolve_layers(model, layers)
            try:
                outputs = [model.get_layer(n).output for n in self.layers]
                self._multi = keras.Model(model.inputs, [*outputs, model.outputs[0]])
            except (AttributeError, ValueError) as exc:
                raise ValueError(
                    f"model {model.name!r}: cannot read layer outputs ({exc}); use a functional "
                    "model, or pass a callable returning the activations"
                ) from exc
            self._logits_fn = None
        else:
            self.layers = None
            self._multi = None
            self._logits_fn = logits_fn
        self.input_shape = tuple(model.input_shape[1:]) if isinstance(model, keras.Model) else None
        self._compiled = {}

    @classmethod
    def for_residual(cls, cdvae, layers=None, **kwargs) -> FeatureExtractor:
        """Features of a CD-VAE's classifier D on R(x) = x - G(x) (CD-VAE §3.3).

        ``cdvae`` needs ``decompose(x) -> (G(x), R(x))`` and ``classifier``.
        """
        if not hasattr(cdvae, "decompose") or not hasattr(cdvae, "classifier"):
            raise ValueError("cdvae: expected a model with decompose(x) and a classifier attribute")
        return cls(cdvae.classifier, layers=layers, transform=lambda x: cdvae.decompose(x)[1], **kwargs)

    @property
    def has_logits(self) -> bool:
        return self._multi is not None or self._logits_fn is not None

    def activations(self, x, reduce: str | None = None) -> tuple[list[tf.Tensor], tf.Tensor | None]:
        """Differentiable (activations, logits) of a batch; use inside tf.function/GradientTape."""
        reduce = reduce or self.reduce
        h = self.transform(x) if self.transform is not None else x
        if self._multi is not None:
            out = self._multi(h, training=False)
            acts, logits = list(out[:-1]), out[-1]
        else:
            out = self.model(h)
            if isinstance(out, dict):
                acts = [out[k] for k in sorted(out)]
            elif isinstance(out, list | tuple):
                acts = list(out)
            else:
                acts = [out]
            logits = self._logits_fn(h) if self._logits_fn is not None else None
        return [reduce_activation(a, reduce) for a in acts], logits

    def check(self, x, name: str = "x") -> np.ndarray:
        """Validate images for this extractor (float32 NHWC in [0, 1])."""
        return check_images(x, name, shape=self.input_shape)

    @timed("score")
    def extract(self, x, reduce: str | None = None) -> tuple[list[np.ndarray], np.ndarray | None]:
        """(activations, logits) as numpy, computed in compiled minibatches."""
        x = self.check(x)
        reduce = reduce or self.reduce
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce: expected one of {REDUCTIONS}, got {reduce!r}")
        fn = self._compiled.get((reduce, x.shape[1:]))
        if fn is None:
            spec = [tf.TensorSpec((None, *x.shape[1:]), tf.float32)]
            fn = tf.function(lambda b: self.activations(b, reduce), input_signature=spec)
            self._compiled[(reduce, x.shape[1:])] = fn
        acts, logits = [], []
        for i in range(0, len(x), self.batch_size):
            a, lg = fn(tf.constant(x[i : i + self.batch_size]))
            acts.append([t.numpy() for t in a])
            logits.append(None if lg is None else lg.numpy())
        layers = [np.concatenate([b[j] for b in acts]) for j in range(len(acts[0]))]
        return layers, (None if logits[0] is None else np.concatenate(logits))


def as_extractor(model_or_extractor, **kwargs) -> FeatureExtractor:
    """Return a FeatureExtractor, wrapping a model or callable if needed."""
    if isinstance(model_or_extractor, FeatureExtractor):
        if kwargs:
            raise ValueError(
                f"got a FeatureExtractor and extra arguments {sorted(kwargs)}; "
                "pass them to FeatureExtractor instead"
            )
        return model_or_extractor
    return FeatureExtractor(model_or_extractor, **kwargs)
