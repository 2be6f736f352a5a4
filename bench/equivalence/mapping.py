"""Name and layout mapping between the official PyTorch CD-VAE and tfdefense's Keras nets.

One table, ``pairs(...)``: (PyTorch state-dict key, Keras variable, layout). ``to_keras`` turns a
PyTorch array (weight, gradient or updated weight: all share the layout) into the Keras one:

* ``conv``: Conv2d (out, in, kh, kw) → (kh, kw, in, out); ``deconv``: ConvTranspose2d
  (in, out, kh, kw) → Conv2DTranspose (kh, kw, out, in) — the same transpose;
* ``dense``: Linear (out, in) → (in, out);
* ``dense_from_chw``: ``fc11``/``fc12`` read ``h.view(-1, d·8·8)`` of an NCHW map, Keras's
  Flatten reads NHWC: rows permuted (c, h, w) → (h, w, c);
* ``dense_to_chw`` / ``bias_to_chw``: ``fc21`` feeds ``view(-1, d, 8, 8)``, Keras's Reshape
  (8, 8, d): columns (and bias) permuted the same way;
* ``vector``: biases, BN γ / β / running mean / running variance, unchanged.
"""

from __future__ import annotations

import numpy as np


def to_keras(layout: str, a: np.ndarray, d: int = 32, f: int = 8) -> np.ndarray:
    if layout in ("conv", "deconv"):
        return a.transpose(2, 3, 1, 0)
    if layout == "dense":
        return a.T
    if layout == "dense_from_chw":  # (z, d·f·f) -> (f·f·d, z)
        return a.reshape(a.shape[0], d, f, f).transpose(2, 3, 1, 0).reshape(f * f * d, a.shape[0])
    if layout == "dense_to_chw":  # (d·f·f, z) -> (z, f·f·d)
        return a.reshape(d, f, f, a.shape[1]).transpose(1, 2, 0, 3).reshape(f * f * d, a.shape[1]).T
    if layout == "bias_to_chw":
        return a.reshape(d, f, f).transpose(1, 2, 0).reshape(-1)
    if layout == "vector":
        return a
    raise ValueError(f"layout: unknown {layout!r}")


def _bn(torch_prefix: str, layer) -> list:
    return [(f"{torch_prefix}.weight", layer.gamma, "vector"),
            (f"{torch_prefix}.bias", layer.beta, "vector"),
            (f"{torch_prefix}.running_mean", layer.moving_mean, "vector"),
            (f"{torch_prefix}.running_var", layer.moving_variance, "vector")]


def _conv(torch_prefix: str, layer, layout: str = "conv") -> list:
    out = [(f"{torch_prefix}.weight", layer.kernel, layout)]
    if getattr(layer, "use_bias", False):
        out.append((f"{torch_prefix}.bias", layer.bias, "vector"))
    return out


def _resblock(torch_prefix: str, net, name: str) -> list:
    """``ResBlock.convs`` = [LeakyReLU, Conv3x3 (1), BN (2), LeakyReLU, Conv1x1 (4)]."""
    return (_conv(f"{torch_prefix}.convs.1", net.get_layer(f"{name}_conv3"))
            + _bn(f"{torch_prefix}.convs.2", net.get_layer(f"{name}_bn"))
            + _conv(f"{torch_prefix}.convs.4", net.get_layer(f"{name}_conv1")))


def vae_pairs(encoder, decoder, prefix: str = "") -> list:
    """``CVAE_cifar`` (encoder Sequential indices, fc11/fc12/fc21, decoder, xi_bn) ↔
    ``nets.cdvae_encoder`` / ``nets.cdvae_decoder`` layer names."""
    e, dcd, p = encoder, decoder, prefix
    return (
        _conv(f"{p}encoder.0", e.get_layer("conv1")) + _bn(f"{p}encoder.1", e.get_layer("bn1"))
        + _conv(f"{p}encoder.3", e.get_layer("conv2")) + _bn(f"{p}encoder.4", e.get_layer("bn2"))
        + _resblock(f"{p}encoder.6", e, "res1") + _bn(f"{p}encoder.7", e.get_layer("bn3"))
        + _resblock(f"{p}encoder.8", e, "res2")
        + [(f"{p}fc11.weight", e.get_layer("mu").kernel, "dense_from_chw"),
           (f"{p}fc11.bias", e.get_layer("mu").bias, "vector"),
           (f"{p}fc12.weight", e.get_layer("log_var").kernel, "dense_from_chw"),
           (f"{p}fc12.bias", e.get_layer("log_var").bias, "vector"),
           (f"{p}fc21.weight", dcd.get_layer("project").kernel, "dense_to_chw"),
           (f"{p}fc21.bias", dcd.get_layer("project").bias, "bias_to_chw")]
        + _resblock(f"{p}decoder.0", dcd, "res1") + _bn(f"{p}decoder.1", dcd.get_layer("bn1"))
        + _resblock(f"{p}decoder.2", dcd, "res2") + _bn(f"{p}decoder.3", dcd.get_layer("bn2"))
        + _conv(f"{p}decoder.4", dcd.get_layer("deconv1"), "deconv")
        + _bn(f"{p}decoder.5", dcd.get_layer("bn3"))
        + _conv(f"{p}decoder.7", dcd.get_layer("deconv2"), "deconv")
        + _bn(f"{p}xi_bn", dcd.get_layer("xi_bn"))
    )


def wrn_pairs(net, depth: int, prefix: str = "") -> list:
    """``Wide_ResNet`` (conv1, layer{1,2,3}.{i}.{bn1,conv1,bn2,conv2,shortcut.0}, bn1, linear) ↔
    ``nets.wide_resnet`` (conv1, stage{s}_block{b}_..., bn_final, logits)."""
    n = (depth - 4) // 6
    out = _conv(f"{prefix}conv1", net.get_layer("conv1"))
    for s in range(1, 4):
        for i in range(n):
            tp, kp = f"{prefix}layer{s}.{i}", f"stage{s}_block{i + 1}"
            out += (_bn(f"{tp}.bn1", net.get_layer(f"{kp}_bn1"))
                    + _conv(f"{tp}.conv1", net.get_layer(f"{kp}_conv1"))
                    + _bn(f"{tp}.bn2", net.get_layer(f"{kp}_bn2"))
                    + _conv(f"{tp}.conv2", net.get_layer(f"{kp}_conv2")))
            names = {layer.name for layer in net.layers}
            if f"{kp}_shortcut" in names:
                out += _conv(f"{tp}.shortcut.0", net.get_layer(f"{kp}_shortcut"))
    dense = net.get_layer("logits")
    out += _bn(f"{prefix}bn1", net.get_layer("bn_final"))
    out += [(f"{prefix}linear.weight", dense.kernel, "dense"), (f"{prefix}linear.bias", dense.bias, "vector")]
    return out


def check_complete(pairs: list, torch_keys, keras_variables) -> None:
    """Every PyTorch tensor and every Keras weight mapped exactly once (else ValueError)."""
    mapped_t = [k for k, _, _ in pairs]
    missing = sorted(set(torch_keys) - set(mapped_t))
    if missing or len(mapped_t) != len(set(mapped_t)):
        raise ValueError(f"PyTorch keys unmapped or twice: {missing[:5]}")
    mapped_k = {id(v) for _, v, _ in pairs}
    left = [v.path for v in keras_variables if id(v) not in mapped_k]
    if left:
        raise ValueError(f"Keras variables unmapped: {left[:5]}")
