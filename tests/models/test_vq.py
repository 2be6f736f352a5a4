"""VQ-VAE generator: codebook maths, straight-through gradients, VQCDVAE on tiny 32x32 inputs.

The classifier here is ``small_cnn`` (width 4-8), not ResNet-50: keras.applications'
ResNet-50 (25M parameters) is too heavy for the shared 2-core CI machine; one
test builds ``for_dataset``'s ResNet-50 at 32x32 without training it.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense import nets
from tfdefense.models import VQCDVAE, VectorQuantizer
from tfdefense.models.vq import codebook_loss, commitment_loss, nearest_code

SHAPE = (32, 32, 3)

# two grid positions, two codes: p1 → e0 (0.82 vs 3.62), p2 → e1 (0.68 vs 3.28)
Z_E = np.array([[[[0.9, 0.1], [0.2, 1.8]]]], np.float32)  # (1, 1, 2, 2)
CODEBOOK = np.array([[0.0, 0.0], [1.0, 2.0]], np.float32)


def _quantizer(ema=False):
    layer = VectorQuantizer(num_codes=2, code_dim=2, ema=ema)
    layer.build((None, 1, 2, 2))
    layer.codebook.assign(CODEBOOK)
    if ema:
        layer.ema_sum.assign(CODEBOOK)
    return layer


def _model(d=4, codes=8, ema=False, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return VQCDVAE(nets.vq_encoder(SHAPE, d=d), nets.vq_decoder(SHAPE, d=d),
                   nets.small_cnn(SHAPE, 9, width=4, dense_units=8), num_codes=codes, ema=ema,
                   seed=seed, **kwargs)


def _blobs(n, seed=0):
    """Coloured discs on shaded backgrounds: images with structure for the codebook to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    x = np.empty((n, *SHAPE), np.float32)
    for i in range(n):
        c0, c1 = rng.random(3), rng.random(3)
        cx, cy, rad = rng.random(), rng.random(), 0.1 + 0.3 * rng.random()
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < rad ** 2)[..., None]
        x[i] = np.where(disc, c1, c0 * (0.5 + 0.5 * xx[..., None]))
    return x, rng.integers(0, 9, n).astype(np.int64)


# ----------------------------------------------------------------- maths
def test_nearest_code_and_losses_hand_computed():
    assert nearest_code(tf.constant(Z_E), tf.constant(CODEBOOK)).numpy().tolist() == [[[0, 1]]]
    z_q = tf.constant([[[[0.0, 0.0], [1.0, 2.0]]]])
    # mean over positions of squared distances 0.82 and 0.68
    np.testing.assert_allclose(codebook_loss(tf.constant(Z_E), z_q).numpy(), [0.75], rtol=1e-6)
    np.testing.assert_allclose(commitment_loss(tf.constant(Z_E), z_q).numpy(), [0.75], rtol=1e-6)


def test_quantizer_forward_is_nearest_code():
    z_st, cb, commit, idx = _quantizer()(tf.constant(Z_E))
    np.testing.assert_allclose(z_st.numpy(), [[[[0.0, 0.0], [1.0, 2.0]]]], atol=1e-7)
    assert idx.numpy().tolist() == [[[0, 1]]]
    np.testing.assert_allclose([cb.numpy()[0], commit.numpy()[0]], [0.75, 0.75], rtol=1e-6)


def test_straight_through_gradients():
    layer = _quantizer()
    z_e = tf.Variable(Z_E)
    w = tf.constant(np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2))
    with tf.GradientTape(persistent=True) as tape:
        z_st, cb, commit, _ = layer(z_e)
        downstream = tf.reduce_sum(w * z_st)
    # straight through: d(downstream)/dz_e = w exactly, and no gradient reaches the codebook
    np.testing.assert_allclose(tape.gradient(downstream, z_e).numpy(), w.numpy())
    g_code = tape.gradient(downstream, layer.codebook)
    assert g_code is None or not np.any(tf.convert_to_tensor(g_code).numpy())
    # codebook loss moves only the codes: d/de_j = (e_j − p) / positions, per assigned position
    np.testing.assert_allclose(tf.convert_to_tensor(tape.gradient(cb, layer.codebook)).numpy(),
                               [[-0.9, -0.1], [0.8, 0.2]], rtol=1e-6)
    assert tape.gradient(cb, z_e) is None
    # commitment moves only the encoder: d/dz_e = (z_e − z_q) / positions
    np.testing.assert_allclose(tape.gradient(commit, z_e).numpy(),
                               [[[[0.9, 0.1], [-0.8, -0.2]]]], rtol=1e-6)
    assert tape.gradient(commit, layer.codebook) is None


def test_ema_update_hand_computed():
    layer = _quantizer(ema=True)
    assert not layer.codebook.trainable
    layer(tf.constant(Z_E), training=True)
    count = 0.99 * 1.0 + 0.01 * np.array([1.0, 1.0])
    total = 0.99 * CODEBOOK + 0.01 * Z_E[0, 0]
    n = count.sum()
    smoothed = (count + 1e-5) / (n + 2 * 1e-5) * n
    np.testing.assert_allclose(layer.codebook.numpy(), total / smoothed[:, None], rtol=1e-5)
    before = layer.codebook.numpy().copy()
    layer(tf.constant(Z_E), training=False)  # inference never moves the codebook
    np.testing.assert_array_equal(layer.codebook.numpy(), before)


# ----------------------------------------------------------------- model
def test_latent_hook_and_joint_loss():
    model = _model()
    x, y = _blobs(4)
    z_e, z_st, cb, commit, _ = model.encode(tf.constant(x))
    z, latent_loss = model.latent(tf.constant(x))
    assert z.shape == (4, 8 * 8 * 4)
    np.testing.assert_allclose(z.numpy(), tf.reshape(z_st, (4, -1)).numpy())
    np.testing.assert_allclose(latent_loss.numpy(), (cb + 0.5 * commit).numpy(), rtol=1e-6)
    terms = model.compute_losses(tf.constant(x), tf.constant(y), training=False)
    expected = terms["reconstruction"] + 0.1 * terms["kl"] + 2.0 * terms["ce"]
    np.testing.assert_allclose(terms["loss"].numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(terms["kl"].numpy(), latent_loss.numpy(), rtol=1e-6)
    # the VQ posterior is deterministic: its mean is z_q, sampling changes nothing
    np.testing.assert_allclose(model.posterior(tf.constant(x)).mean().numpy(), z.numpy())
    g1, _ = model.decompose(x, sample=True)
    g2, r2 = model.decompose(x)
    np.testing.assert_allclose(g1.numpy(), g2.numpy())
    np.testing.assert_allclose((g2 + r2).numpy(), x, atol=1e-5)


def test_ema_latent_loss_is_commitment_only():
    model = _model(ema=True)
    x, _ = _blobs(2)
    _, _, _, commit, _ = model.encode(tf.constant(x))
    np.testing.assert_allclose(model.latent(tf.constant(x))[1].numpy(), (0.5 * commit).numpy(),
                               rtol=1e-6)


def test_fit_reports_vq_key_and_ema_moves_codebook():
    model = _model(ema=True)
    model.compile()
    before = model.quantizer.codebook.numpy().copy()
    x, y = _blobs(16)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "reconstruction", "vq", "ce", "accuracy",
                                    "reconstruction_accuracy"}
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.abs(model.quantizer.codebook.numpy() - before).max() > 1e-4
    assert all(v is not model.quantizer.codebook for v in model.trainable_variables)


def test_codebook_usage_after_short_run():
    """48 steps on structured 32x32 images: inference uses well over a few of the 32 codes.

    (Measured while writing: 28 of 32 codes, perplexity 15.5, after 48 steps of batch 32.
    Before ~30 steps the BatchNorm moving statistics still start from variance 1 and
    inference maps everything to one code.)
    """
    model = _model(d=16, codes=32)
    model.compile()
    x, y = _blobs(256)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=True, verbose=0)
    usage = model.codebook_usage(x)
    assert usage["codes_used"] >= 8, usage
    assert usage["perplexity"] > 4.0, usage


def test_keras_round_trip(tmp_path):
    for ema in (False, True):
        model = _model(ema=ema, commitment_weight=0.25)
        model.compile()
        x, _ = _blobs(8)
        model.quantizer.codebook.assign(np.random.default_rng(1).normal(0, 0.05, (8, 4)))
        path = os.path.join(tmp_path, f"vq_{ema}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is VQCDVAE
        config = loaded.get_config()
        assert (config["num_codes"], config["ema"], config["commitment_weight"]) == (8, ema, 0.25)
        np.testing.assert_allclose(loaded.quantizer.codebook.numpy(), model.quantizer.codebook.numpy())
        np.testing.assert_allclose(loaded.decompose(x)[0].numpy(), model.decompose(x)[0].numpy(),
                                   atol=1e-5)
    layer = VectorQuantizer.from_config(VectorQuantizer(4, 3, ema=True, decay=0.9).get_config())
    assert (layer.num_codes, layer.code_dim, layer.ema, layer.decay) == (4, 3, True, 0.9)


def test_float32_codebook_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _model()
        z, loss = model.latent(tf.constant(_blobs(2)[0]))
        assert (z.dtype, loss.dtype, model.quantizer.codebook.dtype) == (tf.float32,) * 3
        assert model(tf.constant(_blobs(2)[0])).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_for_dataset_resnet50_builds():
    model = VQCDVAE.for_dataset("restricted_imagenet_32", width=4, num_codes=8)
    assert model.classifier.output_shape == (None, 9)
    assert any("resnet50" in layer.name for layer in model.classifier.layers)
    assert model.code_dim == 4 and model.beta == 0.1
    assert model.normalization_mean == (0.485, 0.456, 0.406)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("codes", [1, 0, -3, 2.5, True])
def test_bad_num_codes(codes):
    with pytest.raises(ValueError, match="num_codes"):
        VectorQuantizer(num_codes=codes, code_dim=4)


def test_bad_quantizer_params():
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(8, 4, ema=True, decay=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        VectorQuantizer(8, 4, ema=True, epsilon=0.0)
    with pytest.raises(ValueError, match="code_dim"):
        VectorQuantizer(8, 0)
    with pytest.raises(ValueError, match="channels"):
        VectorQuantizer(8, 4).build((None, 2, 2, 5))


def test_code_dim_mismatch():
    with pytest.raises(ValueError, match="decoder"):
        VQCDVAE(nets.vq_encoder(SHAPE, d=4), nets.vq_decoder(SHAPE, d=8),
                nets.small_cnn(SHAPE, 9, width=4, dense_units=8))
    with pytest.raises(ValueError, match="latent_dim and width"):
        VQCDVAE.for_dataset("restricted_imagenet_32", latent_dim=8, width=4)
    with pytest.raises(ValueError, match="num_codes"):
        _model(codes=1)


@pytest.mark.parametrize("shape", [(299, 299, 3), (30, 32, 3), (32, 32)])
def test_resolution_the_architecture_cannot_take(shape):
    with pytest.raises(ValueError, match="divisible by 4"):
        nets.vq_encoder(shape)
    with pytest.raises(ValueError, match="divisible by 4"):
        nets.vq_decoder(shape)


def test_bad_images():
    model = _model()
    with pytest.raises(ValueError):
        model.codebook_usage(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(ValueError):
        model.decompose(np.full((2, *SHAPE), 2.0, np.float32))


def test_attack_and_detect_through_the_vq_generator():
    """PGD through x → encoder → straight-through codebook → decoder → D, and KD/LID/MD on R(x)."""
    from threadpoolctl import threadpool_limits

    from tfdefense import detect
    from tfdefense.attacks import get_attack

    model = _model()
    model.compile()
    x, _ = _blobs(60)
    y = np.arange(60, dtype=np.int64) % 9  # every class among the 30 fitting images
    # no random start: every move of adv away from x is a gradient step
    adv = get_attack("pgd_linf", model=model, eps=0.03, steps=2, rand_init=False,
                     seed=0).generate(x[:30], y[:30])
    assert np.abs(adv - x[:30]).max() > 0.0  # the attack's gradient reached the input
    xt = tf.constant(x[:2])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        g = model.generate(xt)
    grad = tape.gradient(g, xt)  # G(x) alone: only the straight-through codebook connects it to x
    assert grad is not None and np.abs(grad.numpy()).max() > 0.0
    det = detect.LogisticDetector(model, features=["kd", "lid", "mahalanobis"], on="residual",
                                  lid_k=(5,), lid_batch_size=30, md_magnitude=(0.0,), seed=0)
    # One BLAS/OpenMP thread: the regression on 90 rows is ~10x slower with 2 threads on a
    # loaded 2-core host (thread hand-offs per L-BFGS iteration), and it computes the same.
    with threadpool_limits(1):
        det.fit(x[30:], y[30:], x[:30], adv)
        scores = det.score(adv)
    assert scores.shape == (30,) and np.all(np.isfinite(scores))
