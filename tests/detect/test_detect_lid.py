import numpy as np
import pytest
import tensorflow as tf
from detect_test_helpers import separation_auc
from scipy.spatial.distance import cdist

from tfdefense.detect import LID, FeatureExtractor


def _flat():
    return FeatureExtractor(lambda x: tf.reshape(x, (tf.shape(x)[0], -1)))


def _subspace_images(n, dim, seed):
    """Points uniform in a dim-dimensional cube, embedded in 64 'pixels'."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 64, 1), "float32")
    x[:, 0, :dim, 0] = rng.uniform(size=(n, dim))
    return x


def test_lid_equals_ma_et_al_mle_formula():
    ref = _subspace_images(50, 5, 0)
    query = _subspace_images(8, 5, 1)
    lid = LID(_flat(), k=10, batch_size=50).fit(ref)
    got = lid.score(query)[:, 0]
    d = np.sort(cdist(query.reshape(8, -1), ref.reshape(50, -1)), axis=1)[:, :10]
    want = -10 / np.sum(np.log(d / d[:, -1:]), axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.parametrize("dim", [2, 8])
def test_lid_recovers_the_intrinsic_dimension_of_a_subspace(dim):
    # reference batches of 500 points, k = 20: the MLE is close to the true dimension
    lid = LID(_flat(), k=20, batch_size=500).fit(_subspace_images(2000, dim, 0))
    estimate = float(np.median(lid.score(_subspace_images(200, dim, 1))))
    assert abs(estimate - dim) < 0.25 * dim, estimate


def test_query_identical_to_a_reference_point_skips_it():
    ref = _subspace_images(40, 3, 0)
    lid = LID(_flat(), k=5, batch_size=40).fit(ref)
    assert np.all(np.isfinite(lid.score(ref[:40])))


def test_score_grid_matches_single_k_scores():
    ref = _subspace_images(60, 4, 0)
    query = _subspace_images(10, 4, 1)
    grid = LID(_flat(), k=5, batch_size=60).fit(ref).score_grid(query, [5, 20])
    np.testing.assert_allclose(grid[20], LID(_flat(), k=20, batch_size=60).fit(ref).score(query))


def test_lid_separates_fgsm_from_clean_and_noisy_mnist(mnist_cnn):
    lid = LID(FeatureExtractor(mnist_cnn.model), k=20, batch_size=100).fit(mnist_cnn.x_train)
    (auc,) = separation_auc(lid, mnist_cnn)
    assert auc > 0.65  # measured 0.73 on the penultimate layer


def test_k_not_below_batch_size_raises():
    with pytest.raises(ValueError, match="k: expected fewer neighbours"):
        LID(_flat(), k=100, batch_size=100)


def test_too_few_reference_images_raise():
    with pytest.raises(ValueError, match="needs more than 20"):
        LID(_flat(), k=20).fit(_subspace_images(20, 2, 0))


def test_k_grid_above_reference_size_raises():
    lid = LID(_flat(), k=5, batch_size=100).fit(_subspace_images(30, 2, 0))
    with pytest.raises(ValueError, match="k < 30"):
        lid.score_grid(_subspace_images(3, 2, 1), [5, 40])


def test_lid_config_round_trip():
    lid = LID(_flat(), k=30, batch_size=200, seed=4)
    assert LID.from_config(lid.get_config(), _flat()).get_config() == lid.get_config()
