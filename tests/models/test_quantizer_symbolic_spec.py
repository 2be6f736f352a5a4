"""VectorQuantizer's symbolic output spec (``compute_output_spec``, what Keras reads on a
``KerasTensor``): the four outputs' shapes and dtypes without running the layer."""

import keras

from tfdefense.models import VectorQuantizer


def test_the_output_spec_gives_the_straight_through_codes_two_losses_and_int_indices():
    layer = VectorQuantizer(num_codes=2, code_dim=2)
    z_st, codebook, commitment, idx = layer.compute_output_spec(keras.KerasTensor((4, 3, 5, 2)))
    assert (tuple(z_st.shape), z_st.dtype) == ((4, 3, 5, 2), "float32")
    assert (tuple(codebook.shape), codebook.dtype) == ((4,), "float32")
    assert (tuple(commitment.shape), commitment.dtype) == ((4,), "float32")
    assert (tuple(idx.shape), idx.dtype) == ((4, 3, 5), "int32")


def test_the_quantizer_builds_into_a_functional_model_on_a_symbolic_input():
    """Keras passes ``training=`` to ``compute_output_spec`` on a ``keras.Input``; the layer
    once refused it (TypeError), so it could not sit in a functional model."""
    z_e = keras.Input((3, 5, 2))
    outputs = VectorQuantizer(num_codes=2, code_dim=2)(z_e)
    model = keras.Model(z_e, outputs)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 3, 5, 2), (None,), (None,),
                                                       (None, 3, 5)]
