"""Batched latent morphs and the resistance vector of FM-Defense (§III-A, §III-C).

For an image x with combo-VAE codes z = [z_s, z_u] and a classifier C, the
resistance of code i is the fraction of n morphs — decodings of z with code i
moved within its normal range — whose predicted label equals C(x) (§III-A
(2)). ``MorphEngine.resistance(x)`` returns r of shape (N, S) for S selected
codes, computing every morph of a batch of images (images × codes × morphs)
in ONE compiled ``tf.function``: encode, search the morph values, decode and
classify in fixed-size chunks (``tf.map_fn``, one chunk in flight, so memory
is bounded by ``chunk_size`` decodings whatever the batch), compare, average.

Normal value ranges (§III-C): per code, the [q, 1 − q] quantiles of the
posterior means on clean validation images (``range_quantile`` q = 0.005; the
paper decides them "empirically" — q = 0 gives min/max).

Iterative stochastic search (§III-C, ``stochastic_search``): at iteration
t = 1, 2, … the search radius is t·Δr and B values z_i + δ, δ ~ U(−tΔr, tΔr),
are drawn; those inside the normal range are kept, in order, until n are
found. The search is vectorised (all T·B candidates drawn at once, the first n
valid ones kept — the same values the loop would keep). Choices where the
paper is silent: Δr = ``delta_r`` × (range width) per code (0.1), B = 10,
T = 100 (with n = 100 at least 10 iterations, so the morphs of a code inside
its range spread over about ± one range width, clipped to the range, as the
paper's Fig 1 morphs do; T·Δr covers ten widths); if fewer than n values are found
(an input whose code lies far outside its normal range), the rest are drawn
uniformly from the normal range (``found`` reports how many came from the
search). For feature-map latents (CelebA) code i is channel i: the range is
that of the channel's spatial mean and a morph shifts every element of the
channel by the same amount (§III-A).

Randomness is stateless and per image: each image's morphs are drawn with its
own seed, the fingerprint of its pixels combined with the engine's ``seed``
(``image_seeds``), so an image gets the same morphs, hence the same
resistance, whatever batch it comes in: in ``resistance``, in a defense's
``defend`` graph (``FMDefense``) and in an exported SavedModel. The one copy of
the morph drawing (``stochastic_search``, ``MorphEngine.draw_morphs``) and of
the morphs' latent arithmetic (``morph_latents``) also serves the adaptive
attacker's path (``MorphEngine.sample_morph_latents``, used by
``FMDefense.logits``).

Compute precision (``compute_dtype``): ``"float32"`` (default) or ``"bfloat16"``, in
which the decoder and the classifier of the morphs (the S·n decodings per image, nearly
all of the engine's FLOPs) run under Keras' ``mixed_bfloat16`` policy: float32 weights
read as bfloat16, bfloat16 activations, the logits cast back to float32 before the
argmax. The engine runs them on its own copies (``mixed_bfloat16_clone``: the same
layers under that policy, the models' float32 weights copied at construction and at every
``fit`` / ``set_ranges``: train the models before fitting the engine), so the user's
decoder and classifier are never changed. On CPUs with AVX512-BF16 (oneDNN's
``avx512_core_bf16`` kernels) the classifier's convolutions run about 1.8× and the
decoder's transposed ones 1.4× faster than in float32, the whole engine about 1.7× (2
cores, ``bench/morphs.py``). Everything else stays
float32: the encoder, C(x), the morph search, and the resistance itself, which counts
label agreements (exact integers over n) and is compared with the thresholds in float64
(``ResistanceDetector``); only a morph whose top two logits lie within bfloat16's
rounding of each other can change its label.

Example:
    >>> import numpy as np
    >>> from tfdefense.detect.morphs import stochastic_search
    >>> v, found = stochastic_search(np.zeros((2, 3), "float32"), -np.ones(3, "float32"),
    ...                              np.ones(3, "float32"), n_morphs=10,
    ...                              delta_r=0.1 * np.ones(3, "float32"))
    >>> v.shape, bool(np.all(np.abs(v) <= 1)), found.numpy().tolist()
    (TensorShape([2, 3, 10]), True, [[10, 10, 10], [10, 10, 10]])
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdefense.profiling import timed
from tfdefense.validation import check_images, check_number, check_positive_int


def image_seeds(x, seed: int = 0) -> tf.Tensor:
    """Per-image stateless seeds (N, 2) int32 from each image's pixels and ``seed``.

    The seed of image i is its farmhash64 fingerprint (``tf.fingerprint`` of its float32
    bytes) read as two int32, the first XOR-ed with ``seed``: an image gets the same
    morphs whatever batch it comes in, in ``MorphEngine.resistance``, a ``defend`` graph
    or an exported SavedModel alike.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    halves = tf.bitcast(tf.reshape(tf.fingerprint(x), [-1, 2, 4]), tf.int32)  # (N, 2)
    return tf.stack([tf.bitwise.bitwise_xor(halves[:, 0], tf.constant(seed, tf.int32)),
                     halves[:, 1]], axis=1)


def _search_draws(seed: tf.Tensor, batch_shape: tf.Tensor, n: int, t: int, b: int):
    """Uniforms of the search: u (N, S, T, B) in [-1, 1) and fill (N, S, n) in [0, 1).

    A (2,) seed draws for the whole batch at once; an (N, 2) seed draws each image's
    share with its own seed, exactly what a one-image batch with that seed draws.
    """
    def draw(shape, s):
        return (tf.random.stateless_uniform(tf.concat([shape, [t, b]], 0), s, -1.0, 1.0),
                tf.random.stateless_uniform(tf.concat([shape, [n]], 0), s + 1, 0.0, 1.0))

    if seed.shape.rank == 1:
        return draw(batch_shape, seed)
    return tf.map_fn(lambda s: draw(batch_shape[1:], s), seed,
                     fn_output_signature=(tf.float32, tf.float32))


def stochastic_search(
    center,
    low,
    high,
    n_morphs: int = 100,
    delta_r=None,
    samples_per_iteration: int = 10,
    max_iterations: int = 100,
    seed=(0, 0),
) -> tuple[tf.Tensor, tf.Tensor]:
    """Morph values of the iterative stochastic search (§III-C); ((N, S, n), found (N, S)).

    The one place FM-Defense draws morph values: ``MorphEngine`` (resistance, the
    ``defend`` graph) and the adaptive attacker's EOT path (``FMDefense.logits``) call it.

    Args:
        center: (N, S) current values of the S codes.
        low, high: (S,) normal range per code.
        n_morphs: n, natural values wanted per code.
        delta_r: (S,) growth Δr of the search radius per iteration (absolute).
        samples_per_iteration: B.
        max_iterations: T; T·B must be ≥ n.
        seed: a stateless RNG seed: two ints for the whole batch, or (N, 2) one per
            image (``image_seeds``), each image then drawing what it would draw alone.
    """
    center = tf.convert_to_tensor(center, tf.float32)
    low = tf.convert_to_tensor(low, tf.float32)
    high = tf.convert_to_tensor(high, tf.float32)
    delta_r = tf.convert_to_tensor(delta_r if delta_r is not None else 0.1 * (high - low),
                                   tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    if seed.shape.rank not in (1, 2) or seed.shape[-1] != 2:
        raise ValueError(f"seed: expected two ints or one pair per image (N, 2), got shape "
                         f"{seed.shape}")
    n, b, t = n_morphs, samples_per_iteration, max_iterations
    u, fill_u = _search_draws(seed, tf.shape(center), n, t, b)
    radii = delta_r[:, None] * tf.range(1, t + 1, dtype=tf.float32)[None, :]  # (S, T)
    cand = center[..., None, None] + u * radii[None, :, :, None]  # (N, S, T, B)
    cand = tf.reshape(cand, tf.concat([tf.shape(center), [t * b]], 0))
    ok = (cand >= low[:, None]) & (cand <= high[:, None])
    pos = tf.range(t * b)
    key = tf.where(ok, pos, pos + t * b)  # valid candidates first, in search order
    _, idx = tf.math.top_k(-key, k=n, sorted=True)
    values = tf.gather(cand, idx, batch_dims=2)
    found = tf.minimum(tf.reduce_sum(tf.cast(ok, tf.int32), -1), n)
    fill = low[:, None] + fill_u * (high - low)[:, None]
    values = tf.where(tf.range(n)[None, None, :] < found[..., None], values, fill)
    return values, found


def code_values_of(mean: tf.Tensor) -> tf.Tensor:
    """The value of each code, (N, m): the posterior mean itself for a vector latent, the
    channel's spatial mean for a feature-map latent (N, h, w, m) (§III-A)."""
    if mean.shape.rank > 2:
        return tf.reduce_mean(mean, axis=list(range(1, mean.shape.rank - 1)))
    return mean


def morph_latents(mean: tf.Tensor, codes, values: tf.Tensor) -> tf.Tensor:
    """Latents with one code moved per morph: (N, K, *latent_shape).

    Morph k of image i is ``mean[i]`` with code ``codes[..., k]`` moved to ``values[i, k]``
    (for a feature map: every element of that channel shifted by the same amount, so the
    channel's mean becomes the value). ``codes`` is (K,) (the same codes for every image)
    or (N, K); ``values`` is (N, K). The one copy of the morphs' latent arithmetic, shared
    by the resistance graph and the adaptive attacker's path.
    """
    codes = tf.convert_to_tensor(codes, tf.int32)
    m = mean.shape[-1]
    current = tf.gather(code_values_of(mean), codes, axis=1, batch_dims=codes.shape.rank - 1)
    shift = values - current  # (N, K)
    d = shift[..., None] * tf.one_hot(codes, m)  # (N, K, m)
    extra = mean.shape.rank - 2  # spatial axes of a feature-map latent
    d = tf.reshape(d, tf.concat([tf.shape(d)[:2], [1] * extra, tf.shape(d)[2:]], 0))
    return mean[:, None] + d


def most_active_codes(combo_vae, x_val, k: int, batch_size: int = 256) -> list[int]:
    """The k codes whose posterior means vary most on clean images (a stand-in for the
    paper's hand-picked "non-significant intrinsic features"; inactive codes decode to
    the same image whatever their value)."""
    x_val = check_images(x_val, "x_val", shape=combo_vae.input_shape_)
    check_positive_int(k, "k")
    if k > combo_vae.latent_dim:
        raise ValueError(f"k: at most latent_dim = {combo_vae.latent_dim} codes, got {k}")
    means = []
    for i in range(0, len(x_val), batch_size):
        mean = combo_vae.encode(x_val[i: i + batch_size])[0]
        means.append(code_values_of(mean).numpy())
    order = np.argsort(-np.concatenate(means).var(axis=0), kind="stable")
    return [int(c) for c in order[:k]]


def _argmax_labels(logits: tf.Tensor) -> tf.Tensor:
    return tf.argmax(logits, axis=-1, output_type=tf.int64)


#: the engine's compute precisions of the morphs' decoder and classifier
COMPUTE_DTYPES = ("float32", "bfloat16")


def _bfloat16_layer(layer):
    """A fresh copy of ``layer`` (from its config) computing under ``mixed_bfloat16`` if it
    computes in float32 (its weights still float32 variables)."""
    clone = layer.__class__.from_config(layer.get_config())
    if getattr(layer, "dtype_policy", None) is not None and layer.dtype_policy.name == "float32":
        clone.dtype_policy = "mixed_bfloat16"
    return clone


def mixed_bfloat16_clone(model, name: str = "model") -> keras.Model:
    """A copy of a functional or Sequential Keras ``model`` (nested models too) whose float32
    layers compute under the ``mixed_bfloat16`` policy, with ``model``'s weights (float32
    values, BatchNorm statistics included) copied in; ``model`` itself is left as it was.
    ``ValueError`` (naming ``name``) for a model Keras cannot clone layer by layer."""
    try:
        clone = keras.models.clone_model(model, clone_function=_bfloat16_layer, recursive=True)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise ValueError(f"{name}: compute_dtype 'bfloat16' runs a mixed_bfloat16 copy of it, "
                         f"and {type(model).__name__} cannot be cloned layer by layer "
                         f"(a functional or Sequential Keras model can): {err}") from err
    clone.set_weights(model.get_weights())
    return clone


class MorphEngine:
    """Resistance of images to latent morphs (§III-A (2), §III-C), batched in one graph.

    Args:
        combo_vae: a trained ``ComboVAE`` (its codes, DGMM and decoder).
        classifier: images in [0, 1] -> logits (the classifier to protect); its
            number of classes must equal the DGMM's.
        codes: indices of the selected codes (default: all m).
        n_morphs: n, morphs per code (100, §IV-A).
        delta_r: Δr as a fraction of each code's range width (paper: unspecified).
        samples_per_iteration: B (paper: unspecified).
        max_iterations: T (paper: unspecified).
        range_quantile: q of the normal range [q, 1 − q] on clean validation data.
        chunk_size: decodings per chunk inside the graph (memory bound).
        seed: seed of the stochastic search (with each image's fingerprint: ``image_seeds``).
        compute_dtype: ``"float32"`` or ``"bfloat16"``, the precision of the morphs'
            decoder and classifier (module docstring; bfloat16 needs a Keras classifier).
    """

    def __init__(
        self,
        combo_vae,
        classifier,
        codes=None,
        n_morphs: int = 100,
        delta_r: float = 0.1,
        samples_per_iteration: int = 10,
        max_iterations: int = 100,
        range_quantile: float = 0.005,
        chunk_size: int = 2048,
        seed: int = 0,
        compute_dtype: str = "float32",
    ) -> None:
        self.combo_vae = combo_vae
        self.classifier = classifier
        self.codes = codes
        self.n_morphs = n_morphs
        self.delta_r = delta_r
        self.samples_per_iteration = samples_per_iteration
        self.max_iterations = max_iterations
        self.range_quantile = range_quantile
        self.chunk_size = chunk_size
        self.seed = seed
        self.compute_dtype = compute_dtype
        self._check_params()
        self.low_: np.ndarray | None = None
        self.high_: np.ndarray | None = None
        self.last_found_: np.ndarray | None = None
        self._fn = None
        #: (decoder, classifier) of the morphs: the models themselves in float32, their
        #: ``mixed_bfloat16_clone`` copies in bfloat16
        self._morph_models = self._build_morph_models()

    # -- parameters -------------------------------------------------------------------

    def _check_params(self) -> None:
        from tfdefense.models.combo_vae import ComboVAE

        if not isinstance(self.combo_vae, ComboVAE):
            raise ValueError(f"combo_vae: expected a ComboVAE, got {type(self.combo_vae).__name__}")
        if not callable(self.classifier):
            raise ValueError("classifier: expected a callable images -> logits")
        m = self.combo_vae.latent_dim
        if self.codes is None:
            self.codes = list(range(m))
        codes = np.asarray(self.codes)
        if codes.ndim != 1 or codes.size == 0 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes: expected a non-empty list of code indices, got {self.codes!r}")
        if codes.min() < 0 or codes.max() >= m:
            raise ValueError(f"codes: expected indices in [0, {m - 1}], got {codes.tolist()}")
        if len(set(codes.tolist())) != codes.size:
            raise ValueError(f"codes: indices must be distinct, got {codes.tolist()}")
        self.codes = [int(c) for c in codes]
        check_positive_int(self.n_morphs, "n_morphs")
        check_number(self.delta_r, "delta_r", low=0.0, low_inclusive=False)
        check_positive_int(self.samples_per_iteration, "samples_per_iteration")
        check_positive_int(self.max_iterations, "max_iterations")
        if self.samples_per_iteration * self.max_iterations < self.n_morphs:
            raise ValueError(
                "max_iterations: samples_per_iteration × max_iterations = "
                f"{self.samples_per_iteration * self.max_iterations} < n_morphs = {self.n_morphs}")
        check_number(self.range_quantile, "range_quantile", low=0.0, high=0.5,
                      high_inclusive=False)
        check_positive_int(self.chunk_size, "chunk_size")
        check_positive_int(self.seed, "seed", minimum=0)
        if self.seed >= 2**31:
            raise ValueError(f"seed: expected an integer in [0, 2**31), got {self.seed}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype: expected one of {COMPUTE_DTYPES}, "
                             f"got {self.compute_dtype!r}")
        if self.compute_dtype != "float32" and not isinstance(self.classifier, keras.Layer):
            raise ValueError(f"compute_dtype: {self.compute_dtype!r} needs a Keras classifier, "
                             f"got {type(self.classifier).__name__}")
        n_cls = getattr(self.classifier, "output_shape", (None, None))[-1]
        if n_cls is not None and n_cls != self.combo_vae.dgmm.num_classes:
            raise ValueError(f"classifier: has {n_cls} classes, the DGMM "
                             f"{self.combo_vae.dgmm.num_classes}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.combo_vae.input_shape_

    # -- normal ranges ----------------------------------------------------------------

    def code_values(self, x, batch_size: int = 256) -> np.ndarray:
        """Posterior means of all m codes (channel means for feature maps), (N, m)."""
        x = check_images(x, "x", shape=self.input_shape)
        out = []
        for i in range(0, len(x), batch_size):
            mean, _ = self.combo_vae.encode(x[i: i + batch_size])
            out.append(code_values_of(mean).numpy())
        return np.concatenate(out)

    def fit(self, x_val, batch_size: int = 256) -> MorphEngine:
        """Normal value range of each selected code on clean validation images (§III-C)."""
        x_val = check_images(x_val, "x_val", shape=self.input_shape)
        if len(x_val) < 2:
            raise ValueError(f"x_val: expected at least 2 clean images, got {len(x_val)}")
        values = self.code_values(x_val, batch_size)[:, self.codes]
        q = self.range_quantile
        self.set_ranges(np.quantile(values, q, axis=0), np.quantile(values, 1.0 - q, axis=0))
        return self

    def set_ranges(self, low, high) -> MorphEngine:
        """Set the normal ranges (S,) by hand (§III-C: 'decided empirically')."""
        low = np.asarray(low, np.float32).reshape(-1)
        high = np.asarray(high, np.float32).reshape(-1)
        s = len(self.codes)
        if low.shape != (s,) or high.shape != (s,):
            raise ValueError(f"low/high: expected {s} values each, got {low.shape}, {high.shape}")
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(high < low):
            raise ValueError("low/high: expected finite ranges with low <= high")
        self.low_, self.high_ = low, high
        self._fn = None
        self._copy_weights_to_morph_models()
        return self

    def _require_fit(self) -> None:
        if self.low_ is None:
            raise ValueError("MorphEngine: call fit(x_val) on clean validation images first")

    # -- the compiled engine ----------------------------------------------------------

    def draw_morphs(self, mean: tf.Tensor, seed) -> tuple[tf.Tensor, tf.Tensor]:
        """Morph values ((N, S, n), found (N, S)) of the selected codes of latents ``mean``.

        The engine's stochastic search (``stochastic_search``) around each selected code's
        current value, inside the fitted normal ranges; ``seed`` is (2,) for the batch or
        (N, 2) per image (``image_seeds``). TensorFlow ops; the resistance graph and the
        adaptive attacker's morphs (``sample_morph_latents``) both draw here.
        """
        self._require_fit()
        low, high = tf.constant(self.low_), tf.constant(self.high_)
        center = tf.gather(code_values_of(mean), self.codes, axis=1)
        return stochastic_search(center, low, high, self.n_morphs, self.delta_r * (high - low),
                                 self.samples_per_iteration, self.max_iterations, seed)

    def _morph_latents(self, mean: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
        """All morphed latents (N·S·n, *latent_shape): code codes[s] moved to values[:, s, k]."""
        codes = np.repeat(np.asarray(self.codes, np.int32), self.n_morphs)  # (S·n,)
        z = morph_latents(mean, codes, tf.reshape(values, [tf.shape(values)[0], -1]))
        return tf.reshape(z, tf.concat([[-1], tf.shape(mean)[1:]], 0))

    def sample_morph_latents(self, mean: tf.Tensor, n_samples: int, seed) -> tf.Tensor:
        """``n_samples`` random morphs per image, drawn the way ``resistance`` draws them.

        The engine's search (``draw_morphs`` with the (2,) ``seed``) gives the S·n morph
        values of each image; each sample is one of them, picked uniformly (with
        replacement), so a sample is a random (selected code, morph) of the engine. Returns
        latents (N, n_samples, *latent_shape); differentiable with respect to ``mean``.
        """
        check_positive_int(n_samples, "n_samples")
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        values, _ = self.draw_morphs(mean, seed)
        per_image = len(self.codes) * self.n_morphs
        n = tf.shape(mean)[0]
        pick = tf.random.stateless_uniform([n, n_samples], seed + 2, 0, per_image, tf.int32)
        picked = tf.gather(tf.reshape(values, [n, per_image]), pick, batch_dims=1)
        codes = tf.gather(np.repeat(np.asarray(self.codes, np.int32), self.n_morphs), pick)
        return morph_latents(mean, codes, picked)

    def _build_morph_models(self) -> tuple[Any, Any]:
        """(decoder, classifier) the morphs run through (``compute_dtype``)."""
        decoder, classifier = self.combo_vae.decoder, self.classifier
        if self.compute_dtype == "float32":
            return decoder, classifier
        return (mixed_bfloat16_clone(decoder, "combo_vae.decoder"),
                mixed_bfloat16_clone(classifier, "classifier"))

    def _copy_weights_to_morph_models(self) -> None:
        """The bfloat16 copies take the models' current weights (a no-op in float32)."""
        if self.compute_dtype != "float32":
            for model, copy in zip((self.combo_vae.decoder, self.classifier),
                                   self._morph_models, strict=True):
                copy.set_weights(model.get_weights())

    def _decode_and_classify(self, z_s: tf.Tensor, z_u: tf.Tensor) -> tf.Tensor:
        """float32 logits C(D([z_s, z_u])), decoder and classifier in ``compute_dtype``."""
        decoder, classifier = self._morph_models
        logits = classifier(decoder([z_s, z_u], training=False), training=False)
        return tf.cast(logits, tf.float32)

    def _classify_latents(self, z_s: tf.Tensor, z_u: tf.Tensor, original: tf.Tensor | None = None):
        """argmax C(D([z_s, z_u])) in chunks of ``chunk_size`` (one chunk in flight); with
        ``original`` labels also the softmax probability of them, (labels, probabilities)."""
        total = tf.shape(z_s)[0]
        c = tf.minimum(self.chunk_size, total)
        pad = (-total) % c

        def chunks(t):
            t = tf.pad(t, [[0, pad]] + [[0, 0]] * (t.shape.rank - 1))
            return tf.reshape(t, tf.concat([[-1, c], tf.shape(t)[1:]], 0))

        def step(args):
            logits = self._decode_and_classify(args[0], args[1])
            if original is None:
                return _argmax_labels(logits)
            return _argmax_labels(logits), tf.gather(tf.nn.softmax(logits), args[2], batch_dims=1)

        if original is None:
            preds = tf.map_fn(step, (chunks(z_s), chunks(z_u)), fn_output_signature=tf.int64,
                              parallel_iterations=1)
            return tf.reshape(preds, [-1])[:total]
        preds, probs = tf.map_fn(step, (chunks(z_s), chunks(z_u), chunks(original)),
                                 fn_output_signature=(tf.int64, tf.float32),
                                 parallel_iterations=1)
        return tf.reshape(preds, [-1])[:total], tf.reshape(probs, [-1])[:total]

    def resistance_of(self, mean: tf.Tensor, z_u: tf.Tensor, original: tf.Tensor, seed,
                      soft: bool = False):
        """Resistance from the parts of images the caller already has, as TensorFlow ops.

        Args:
            mean: posterior means μ(x), (N, *latent_shape).
            z_u: class-unique features z_u(x), (N, K).
            original: C(x) (int64 (N,)), the labels the morphs are compared with.
            seed: (N, 2) per-image seeds (``image_seeds``) or (2,) for the batch.
            soft: also return the smooth resistance: per code, the mean over its morphs of
                C's softmax probability of ``original`` (differentiable through ``mean``
                and ``z_u``).

        Returns:
            (r (N, S) float32, found (N, S) int32), with the smooth resistance (N, S)
            appended when ``soft``.
        """
        values, found = self.draw_morphs(mean, seed)
        z_s = self._morph_latents(mean, values)
        reps = len(self.codes) * self.n_morphs
        z_u = tf.repeat(z_u, reps, axis=0)
        if soft:
            preds, probs = self._classify_latents(z_s, z_u, tf.repeat(original, reps))
        else:
            preds = self._classify_latents(z_s, z_u)
        preds = tf.reshape(preds, tf.shape(values))
        r = tf.reduce_mean(tf.cast(tf.equal(preds, original[:, None, None]), tf.float32), -1)
        if not soft:
            return r, found
        return r, found, tf.reduce_mean(tf.reshape(probs, tf.shape(values)), -1)

    def resistance_graph(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(r (N, S) float32, found (N, S) int32) for images x, as TensorFlow ops.

        The public graph entry (for ``tf.function``, a serving signature or a defense's
        graph): encode, search the morphs with per-image seeds (``image_seeds(x, seed)``),
        decode, classify, compare. ``resistance`` runs it batch by batch.
        """
        self._require_fit()
        x = tf.convert_to_tensor(x, tf.float32)
        mean, _ = self.combo_vae.encode(x)
        original = _argmax_labels(self.classifier(x, training=False))
        return self.resistance_of(mean, self.combo_vae.class_unique(x), original,
                                  image_seeds(x, self.seed))

    def _compiled(self):
        if self._fn is None:
            spec = tf.TensorSpec((None, *self.input_shape), tf.float32, name="images")
            self._fn = tf.function(self.resistance_graph, input_signature=[spec],
                                   reduce_retracing=True)
        return self._fn

    @timed("score")
    def resistance(self, x, batch_size: int = 32) -> np.ndarray:
        """Resistance vector r (N, S) in [0, 1]: share of morphs keeping C(x) (§III-A)."""
        self._require_fit()
        x = check_images(x, "x", shape=self.input_shape)
        check_positive_int(batch_size, "batch_size")
        fn = self._compiled()
        rs, founds = [], []
        for i in range(0, len(x), batch_size):
            r, found = fn(tf.constant(x[i: i + batch_size]))
            rs.append(r.numpy())
            founds.append(found.numpy())
        self.last_found_ = np.concatenate(founds)
        return np.concatenate(rs)

    def morph_values(self, x) -> np.ndarray:
        """The morph values (N, S, n) ``resistance`` uses for the images x."""
        self._require_fit()
        x = check_images(x, "x", shape=self.input_shape)
        mean = self.combo_vae.encode(x)[0]
        return self.draw_morphs(mean, image_seeds(x, self.seed))[0].numpy()

    def morph_images(self, x) -> np.ndarray:
        """Decoded morphs (N, S, n, H, W, C) for figures; use on a few images only."""
        x = check_images(x, "x", shape=self.input_shape)
        values = tf.constant(self.morph_values(x))
        mean, _ = self.combo_vae.encode(x)
        z_s = self._morph_latents(mean, values)
        z_u = tf.repeat(self.combo_vae.class_unique(x), len(self.codes) * self.n_morphs, axis=0)
        images = tf.cast(self._morph_models[0]([z_s, z_u], training=False), tf.float32).numpy()
        return images.reshape(len(x), len(self.codes), self.n_morphs, *images.shape[1:])

    def resistance_naive(self, x) -> np.ndarray:
        """Reference: one image, one code, one morph at a time (eager, in ``compute_dtype``);
        the same values as ``resistance``. Slow; for tests and the benchmark only."""
        x = check_images(x, "x", shape=self.input_shape)
        values = self.morph_values(x)
        out = np.zeros(values.shape[:2], np.float32)
        for i in range(len(x)):
            xi = x[i: i + 1]
            original = int(_argmax_labels(self.classifier(xi, training=False))[0])
            mean = self.combo_vae.encode(xi)[0].numpy()
            z_u = self.combo_vae.class_unique(xi)
            for s, code in enumerate(self.codes):
                hits = 0
                for k in range(self.n_morphs):
                    z = mean.copy()
                    z[..., code] += values[i, s, k] - z[..., code].mean()
                    label = int(_argmax_labels(self._decode_and_classify(tf.constant(z), z_u))[0])
                    hits += label == original
                out[i, s] = hits / self.n_morphs
        return out

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "codes", "n_morphs", "delta_r", "samples_per_iteration", "max_iterations",
            "range_quantile", "chunk_size", "seed", "compute_dtype")}
