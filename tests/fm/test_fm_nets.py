"""Table I networks: shapes and the documented choices."""

import pytest

from tfdefense.nets import (
    fm_decoder,
    fm_dgmm_network,
    fm_encoder,
    fm_face_decoder,
    fm_face_encoder,
    tc_discriminator,
)


def test_mnist_shapes_table_i():
    enc = fm_encoder((28, 28, 1), latent_dim=20)
    assert enc.output_shape == (None, 40)
    convs = [la for la in enc.layers if la.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (4, 4) and c.strides == (2, 2) for c in convs)
    assert fm_dgmm_network((28, 28, 1), 10).output_shape == (None, 10)
    dec = fm_decoder(20, 10, (28, 28, 1))
    assert dec.output_shape == (None, 28, 28, 1)
    assert fm_decoder(10, 0, (32, 32, 3)).output_shape == (None, 32, 32, 3)
    assert tc_discriminator(20).output_shape == (None, 1)


def test_face_shapes():
    enc = fm_face_encoder((32, 32, 3), latent_channels=6, filters=(4, 4, 4),
                          residual_filters=8, residual_blocks=1)
    assert enc.output_shape == (None, 8, 8, 12)
    dec = fm_face_decoder((8, 8, 6), 3, 3, filters=(4, 4), residual_filters=8,
                          residual_blocks=1)
    assert dec.output_shape == (None, 32, 32, 3)


@pytest.mark.parametrize("call, match", [
    (lambda: fm_encoder((28, 28), 20), "input_shape"),
    (lambda: fm_encoder((28, 28, 1), 0), "latent_dim"),
    (lambda: fm_dgmm_network((28, 28, 1), -1), "feature_dim"),
    (lambda: fm_decoder(20, 10, (28, 28, 0)), "output_shape"),
    (lambda: tc_discriminator(20, units=0), "units"),
    (lambda: fm_face_encoder((30, 30, 3)), "divisible"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
