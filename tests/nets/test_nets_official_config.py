"""The CD-VAE nets build the official configuration (issue 17, bench/equivalence_official.py).

kai-wen-yang/CD-VAE builds every BatchNorm as ``nn.BatchNorm2d`` (eps 1e-5, momentum 0.1 in
PyTorch's convention, where it weighs the batch: Keras momentum 0.9), the WRN's final one with
``momentum=0.9`` (Keras 0.1), pads its 3x3 convolutions by 1 on each side, also at stride 2, and
trains with AdamW eps 1e-8. The numbers below are the official ones, written out, so a changed
constant fails here.
"""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest

from tfdefense import models, nets

# the modules (tfdefense.nets re-exports the builder functions under the same names)
cdvae_nets = importlib.import_module("tfdefense.nets.cdvae_nets")
resnet50 = importlib.import_module("tfdefense.nets.resnet50")
wide_resnet = importlib.import_module("tfdefense.nets.wide_resnet")


def _batchnorms(*networks):
    return [layer for net in networks for layer in net.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_cdvae_nets_batchnorm_is_nn_batchnorm2d_default(shape):
    enc = nets.cdvae_encoder(shape, d=8, latent_dim=4)
    dec = nets.cdvae_decoder(shape, d=8, latent_dim=4)
    bns = _batchnorms(enc, dec)
    assert len(bns) == 11  # encoder bn1, bn2, res1, bn3, res2; decoder res1, bn1, res2, bn2, bn3, xi_bn
    assert {(b.epsilon, b.momentum) for b in bns} == {(1e-5, 0.9)}


def test_wide_resnet_batchnorm_is_official_final_bn_momentum_point_nine_in_torch_terms():
    net = nets.wide_resnet((32, 32, 3), 10, depth=10, width=1)
    bns = _batchnorms(net)
    assert {b.epsilon for b in bns} == {1e-5}
    final = net.get_layer("bn_final")
    assert final.momentum == pytest.approx(0.1)  # official nn.BatchNorm2d(..., momentum=0.9)
    assert {b.momentum for b in bns if b is not final} == {0.9}
    assert len(bns) == 7  # 3 blocks x 2 + final


def test_vq_nets_and_resnet50_batchnorm_is_torch_default():
    bns = _batchnorms(nets.vq_encoder((32, 32, 3), d=4), nets.vq_decoder((32, 32, 3), d=4))
    backbone = [layer for layer in nets.resnet50((32, 32, 3), 9).layers if isinstance(layer, keras.Model)]
    bns += _batchnorms(*backbone)
    assert len(backbone) == 1 and len(bns) == 7 + 53
    assert {(b.epsilon, b.momentum) for b in bns} == {(1e-5, 0.9)}


def test_with_official_batchnorm_keeps_the_weights_and_moving_statistics():
    inputs = keras.Input((3,))
    h = keras.layers.Dense(2, name="dense")(inputs)
    out = keras.layers.BatchNormalization(name="bn")(h)
    net = keras.Model(inputs, out)
    rng = np.random.default_rng(0)
    net.set_weights([rng.normal(size=w.shape).astype("float32") + (2.0 if i == 5 else 0.0)
                     for i, w in enumerate(net.get_weights())])  # moving variance > 0
    rebuilt = resnet50.with_official_batchnorm(net)
    for a, b in zip(net.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)
    bn = rebuilt.get_layer("bn")
    assert (bn.epsilon, bn.momentum) == (1e-5, 0.9)


# 4x4 input 1..16, one channel, a 3x3 kernel of ones, no bias, stride 2. Padded (1, 1) as
# PyTorch's padding=1, the windows are rows/cols {-1,0,1} and {1,2,3}:
#   out[0,0] = x[0:2,0:2] = 1+2+5+6 = 14          out[0,1] = x[0:2,1:4] = 2+3+4+6+7+8 = 30
#   out[1,0] = x[1:4,0:2] = 5+6+9+10+13+14 = 57   out[1,1] = x[1:4,1:4] = 6+7+8+10+11+12+14+15+16 = 99
# Keras's padding="same" pads (0, 1) and would give x[0:3,0:3] = 54 at [0, 0].
HAND_PADDED = np.array([[14.0, 30.0], [57.0, 99.0]])


def test_stride2_conv3x3_pads_one_pixel_on_each_side_hand_case():
    inputs = keras.Input((4, 4, 1))
    net = keras.Model(inputs, wide_resnet.conv3x3(inputs, 1, 2, "c"))
    conv = net.get_layer("c")
    conv.set_weights([np.ones((3, 3, 1, 1), "float32"), np.zeros(1, "float32")])
    x = np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(net(x).numpy()[0, :, :, 0], HAND_PADDED)


def _conv_stride2_pad1(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """NHWC convolution, 3x3, stride 2, zero padding 1 on every side (nn.Conv2d padding=1)."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, w, _ = x.shape
    oh, ow = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    out = np.empty((n, oh, ow, kernel.shape[-1]))
    for i in range(oh):
        for j in range(ow):
            window = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", window, kernel)
    return out + bias


@pytest.mark.parametrize("size", [8, 7])
def test_wide_resnet_stride2_block_conv_equals_the_padding_one_convolution(size):
    net = nets.wide_resnet((size, size, 3), 10, depth=10, width=1)
    block = keras.Model(net.get_layer("stage2_block1_relu2").output,
                        net.get_layer("stage2_block1_conv2").output)
    h = np.random.default_rng(1).normal(size=(2, size, size, 32)).astype("float32")
    kernel, bias = (w.numpy() for w in net.get_layer("stage2_block1_conv2").weights)
    np.testing.assert_allclose(block(h).numpy(), _conv_stride2_pad1(h, kernel, bias), rtol=1e-5, atol=1e-5)


def test_default_optimizer_epsilons_are_the_official_1e_8():
    assert models.cdvae_optimizer().epsilon == 1e-8  # utils/set.py AdamW(eps=1e-8)
    cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=2, width=4)
    cdvae.compile()
    assert cdvae.optimizer.epsilon == 1e-8
    d_g = nets.small_cnn((28, 28, 1), 10, width=2, dense_units=4)
    at = models.AdversarialCDVAE.from_cdvae(cdvae, d_g)
    at.compile()
    assert at.optimizer.epsilon == 1e-8
    pgd = models.PGDAdversarialTraining(nets.small_cnn((28, 28, 1), 10, width=2, dense_units=4))
    pgd.compile()
    assert pgd.optimizer.epsilon == 1e-8  # Madry et al.'s tf.train.AdamOptimizer default


def _pre_fix_conv3x3(h, planes, stride, name):
    """The WRN's 3x3 convolution before the fix: Keras "same" padding at every stride."""
    return keras.layers.Conv2D(planes, 3, strides=stride, padding="same", name=name)(h)


def test_keras_file_saved_with_the_pre_fix_configuration_loads_it_and_predicts_identically(
        tmp_path, monkeypatch):
    with monkeypatch.context() as m:  # the nets as they were built before the fix
        m.setattr(cdvae_nets, "BN_EPSILON", 1e-3)
        m.setattr(cdvae_nets, "BN_MOMENTUM", 0.99)
        m.setattr(wide_resnet, "BN_EPSILON", 1e-3)
        m.setattr(wide_resnet, "BN_MOMENTUM", 0.99)
        m.setattr(wide_resnet, "FINAL_BN_MOMENTUM", 0.99)
        m.setattr(wide_resnet, "conv3x3", _pre_fix_conv3x3)
        clf = nets.wide_resnet((28, 28, 1), 10, depth=10, width=1)
        old = models.CDVAE.for_dataset("mnist_5k", latent_dim=2, width=4, classifier=clf)
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    rng = np.random.default_rng(2)
    old.set_weights([w + rng.uniform(0.1, 0.2, size=w.shape).astype("float32")
                     for w in old.get_weights()])  # moving statistics and weights away from init
    expected = old.predict(x, verbose=0)
    old.save(tmp_path / "old.keras")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    bns = _batchnorms(loaded.encoder, loaded.decoder, loaded.classifier)
    assert {(b.epsilon, b.momentum) for b in bns} == {(1e-3, 0.99)}
    assert not any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in loaded.classifier.layers)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    fresh = models.CDVAE.for_dataset("mnist_5k", latent_dim=2, width=4,
                                     classifier=nets.wide_resnet((28, 28, 1), 10, depth=10, width=1))
    assert any(isinstance(layer, keras.layers.ZeroPadding2D) for layer in fresh.classifier.layers)
