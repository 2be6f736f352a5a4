"""Randomized smoothing (tfdefense.certify): bounds by hand, a linear classifier whose smoothed
probability has a closed form, denoised smoothing, stability fine-tuning, and ART's CERTIFY."""

import keras
import numpy as np
import pytest
from scipy import stats

from tfdefense.certify import (
    SmoothedClassifier,
    StabilityTraining,
    abstain_p_value,
    certified_accuracy,
    certified_radius,
    lower_confidence_bound,
)
from tfdefense.decisions import REJECTED_LABEL

SHAPE = (4, 4, 1)  # 16 pixels


def mean_threshold(shape=SHAPE) -> keras.Model:
    """Logits (x̄ − 1/2, 1/2 − x̄): class 0 iff the mean pixel x̄ exceeds 1/2.

    Under x + δ, δ ~ N(0, σ² I) on d pixels, x̄ + δ̄ ~ N(x̄, σ²/d), so the smoothed
    probability of class 0 is Φ((x̄ − 1/2) √d / σ), and σ Φ⁻¹(p_A) = |x̄ − 1/2| √d is the
    l2 distance of x to the decision hyperplane (w = 1/d per pixel, |w| = 1/√d).
    """
    d = int(np.prod(shape))
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.layers[-1].set_weights([np.tile([[1 / d, -1 / d]], (d, 1)).astype("float32"),
                                  np.array([-0.5, 0.5], "float32")])
    return model


def images(means) -> np.ndarray:
    return np.stack([np.full(SHAPE, m, "float32") for m in means])


# ----------------------------------------------------------------------------- statistics
def test_the_clopper_pearson_bound_matches_alpha_to_the_one_over_n_and_scipys_exact_interval():
    # all n draws: the bound solves p^n = alpha; 0.001 ** (1 / 100) = exp(ln(0.001) / 100) = 0.933254
    assert lower_confidence_bound(np.array([100]), 100, 0.001)[0] == pytest.approx(0.933254, abs=1e-6)
    assert lower_confidence_bound(np.array([0]), 100, 0.001)[0] == 0.0
    # one-sided (1 - a) lower bound = lower end of the two-sided exact interval at 1 - 2a
    k = np.array([1, 37, 512, 999])
    ours = lower_confidence_bound(k, 1000, 0.001)
    exact = [stats.binomtest(int(i), 1000).proportion_ci(0.998, "exact").low for i in k]
    np.testing.assert_allclose(ours, exact, rtol=1e-9)


def test_the_abstain_test_is_the_two_sided_binomial_test_at_one_half():
    # 10 of 10 against 0: p = 2 * 0.5 ** 10 = 0.001953125
    assert abstain_p_value(np.array([10]), np.array([0]))[0] == pytest.approx(0.001953125)
    top, second = np.array([6, 60, 500, 3, 0]), np.array([4, 40, 480, 3, 0])
    expected = [stats.binomtest(int(a), int(a + b), 0.5).pvalue if a + b else 1.0
                for a, b in zip(top, second)]
    np.testing.assert_allclose(abstain_p_value(top, second), expected, rtol=1e-9)
    with pytest.raises(ValueError, match="at least the second"):
        abstain_p_value(np.array([1]), np.array([2]))


def test_radius_is_sigma_times_the_normal_quantile_and_zero_below_one_half():
    # Phi(2) = 0.97725: radius 2 sigma; p_lower 0.4 abstains (radius 0)
    radii = certified_radius(np.array([stats.norm.cdf(2.0), 0.5, 0.4]), sigma=0.25)
    np.testing.assert_allclose(radii, [0.5, 0.0, 0.0], atol=1e-12)


def test_certified_accuracy_counts_right_labels_with_radius_at_least_r():
    # right with radius 0.3 and 0.6, wrong with 1.0, abstained (radius 0)
    acc = certified_accuracy([0.3, 0.6, 1.0, 0.0], [True, True, False, False], [0.0, 0.3, 0.5, 0.7])
    np.testing.assert_allclose(acc, [0.5, 0.5, 0.25, 0.0])
    with pytest.raises(ValueError, match="booleans"):
        certified_accuracy([0.1], [1], [0.0])


# ----------------------------------------------------------------------------- the linear case
LINEAR_MEANS = (0.55, 0.45, 0.6, 0.3)  # margins ±0.05, 0.1, 0.2 from the threshold 1/2


def test_certify_on_a_linear_classifier_matches_the_closed_form_within_the_binomial_error():
    sigma, n = 0.25, 20_000
    # batch 4,096: one image per pass, 5 chunks of draws (the last one 3,616)
    result = SmoothedClassifier(mean_threshold(), sigma, n0=100, n=n, alpha=0.001,
                                batch_size=4096, seed=1).certify(images(LINEAR_MEANS))
    margins = np.abs(np.array(LINEAR_MEANS) - 0.5) * 4  # |x̄ - 1/2| √16
    p_true = stats.norm.cdf(margins / sigma)  # Φ(0.8), Φ(0.8), Φ(1.6), Φ(3.2)
    assert result.labels.tolist() == [0, 1, 0, 1]
    se = np.sqrt(p_true * (1 - p_true) / n)
    assert np.all(np.abs(result.counts / n - p_true) < 5 * se + 1 / n)
    # the true smoothed radius is the distance to the hyperplane, margins = 0.2, 0.2, 0.4, 0.8;
    # the certified one is below it (w.p. 1 - alpha) and above sigma Φ⁻¹(p - 8 se)
    assert np.all(result.radii <= margins)
    assert np.all(result.radii >= sigma * stats.norm.ppf(p_true - 8 * se))
    np.testing.assert_allclose(result.radii, sigma * stats.norm.ppf(result.p_lower))


def test_batching_and_seeds_change_the_draws_not_the_answer():
    x = images(LINEAR_MEANS)
    one = SmoothedClassifier(mean_threshold(), 0.25, n0=50, n=3000, batch_size=1000, seed=3)
    # 7,000 noisy images per pass: two images with all their draws at once
    two = SmoothedClassifier(mean_threshold(), 0.25, n0=50, n=3000, batch_size=7000, seed=3)
    a, b = one.certify(x), two.certify(x)
    assert np.array_equal(a.counts, one.certify(x).counts)  # same seed, same batching: same draws
    assert not np.array_equal(a.counts, b.counts)
    p_true = stats.norm.cdf(np.abs(np.array(LINEAR_MEANS) - 0.5) * 4 / 0.25)
    for r in (a, b):
        assert r.labels.tolist() == [0, 1, 0, 1]
        assert np.all(np.abs(r.counts / 3000 - p_true) < 5 * np.sqrt(p_true * (1 - p_true) / 3000) + 1e-3)


def test_predict_abstains_on_the_boundary_and_answers_away_from_it():
    smoothed = SmoothedClassifier(mean_threshold(), 0.25, n=1000, seed=0)
    # x̄ = 1/2: both classes at p = 1/2, the test rejects with probability about alpha
    assert smoothed.predict(images([0.9, 0.5, 0.2])).tolist() == [0, REJECTED_LABEL, 1]


def test_an_abstained_certificate_has_label_minus_one_and_radius_zero():
    result = SmoothedClassifier(mean_threshold(), 0.25, n0=20, n=500, seed=0).certify(images([0.5]))
    assert result.labels.tolist() == [REJECTED_LABEL] and result.radii.tolist() == [0.0]
    assert result.p_lower[0] < 0.5
    assert result.certified_accuracy(np.array([0]), [0.0]).tolist() == [0.0]


# ----------------------------------------------------------------------------- denoised smoothing
def test_noise_is_added_before_the_denoiser():
    # G(x) = 0.25 x + 0.375 shrinks toward 1/2: the margin and the noise both shrink by 4,
    # so p_A stays Φ(0.8) = 0.788; noise added after G would give Φ(0.2) = 0.579
    shrink = keras.Sequential([keras.Input(SHAPE), keras.layers.Rescaling(0.25, offset=0.375)])
    result = SmoothedClassifier(mean_threshold(), 0.25, denoiser=shrink, n0=50, n=10_000,
                                seed=0).certify(images([0.55]))
    assert abs(result.counts[0] / 10_000 - stats.norm.cdf(0.8)) < 5 * np.sqrt(0.788 * 0.212 / 1e4)


def test_the_denoiser_output_is_clipped_to_images():
    # G(x) = 1.2 (outside [0, 1]); clipped to 1 it is still class 0 for every draw
    constant = keras.Sequential([keras.Input(SHAPE), keras.layers.Rescaling(0.0, offset=1.2)])
    result = SmoothedClassifier(mean_threshold(), 0.5, denoiser=constant, n0=10, n=100,
                                seed=0).certify(images([0.1]))
    assert result.labels.tolist() == [0] and result.counts.tolist() == [100]
    # all 100 of 100: p_lower = 0.001 ** (1 / 100) = 0.933254, radius 0.5 Φ⁻¹(0.933254) = 0.7502
    assert result.radii[0] == pytest.approx(0.5 * stats.norm.ppf(0.001 ** 0.01), rel=1e-9)


def test_a_cdvae_denoiser_counts_as_the_grey_box_defense_does():
    from tfdefense import models, nets
    from tfdefense.defend import GreyBoxDefense

    keras.utils.set_random_seed(0)
    cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8)
    clf = nets.small_cnn(width=4, dense_units=8)
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    direct = SmoothedClassifier(clf, 0.25, denoiser=cdvae, seed=5).sample_counts(x, 40)
    # the same noise through G(x) -> clip -> classifier, written as the grey-box defense
    defense = SmoothedClassifier(GreyBoxDefense(cdvae, clf).logits, 0.25, num_classes=10,
                                 seed=5).sample_counts(x, 40)
    assert np.array_equal(direct, defense) and direct.sum(axis=1).tolist() == [40, 40, 40]


def test_stability_training_changes_only_the_denoiser_and_keeps_the_config():
    from tfdefense import models, nets

    keras.utils.set_random_seed(0)
    cdvae = models.CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8)
    clf = nets.small_cnn(width=4, dense_units=8)
    before = {"clf": [w.copy() for w in clf.get_weights()],
              "d": [w.copy() for w in cdvae.classifier.get_weights()],
              "g": [w.copy() for w in cdvae.decoder.get_weights()]}
    trainer = StabilityTraining(cdvae, clf, sigma=0.5, seed=1)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = np.random.default_rng(0).uniform(size=(16, 28, 28, 1)).astype("float32")
    history = trainer.fit(x, epochs=1, batch_size=16, verbose=0).history
    assert all(np.array_equal(a, b) for a, b in zip(before["clf"], clf.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(before["d"], cdvae.classifier.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(before["g"], cdvae.decoder.get_weights()))
    assert 0.0 <= history["agreement"][0] <= 1.0
    config = trainer.get_config()
    assert (config["sigma"], config["clip"], config["seed"]) == (0.5, True, 1)
    assert StabilityTraining.from_config(config).sigma == 0.5


def test_stability_training_teaches_a_toy_denoiser_to_average_out_the_noise():
    # f reads pixel 0 only (class 0 iff it exceeds 1/2); the images are constant, so G can
    # replace pixel 0 by the mean of all 16, cutting the noise f sees from σ to σ/4.
    # G: a dense map of the 16 pixels starting as the identity.
    d = int(np.prod(SHAPE))
    f = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(2)])
    kernel = np.zeros((d, 2), "float32")
    kernel[0] = [4.0, -4.0]
    f.layers[-1].set_weights([kernel, np.array([-2.0, 2.0], "float32")])
    g = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(),
                          keras.layers.Dense(d, kernel_initializer="identity"), keras.layers.Reshape(SHAPE)])
    x = images(np.random.default_rng(1).uniform(0.2, 0.8, size=256))
    trainer = StabilityTraining(g, f, sigma=0.25, seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    history = trainer.fit(x, epochs=30, batch_size=64, verbose=0).history
    smoothed = lambda: SmoothedClassifier(f, 0.25, denoiser=g, n=400, seed=0).sample_counts(x, 400)  # noqa: E731
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["agreement"][-1] > history["agreement"][0] + 0.05
    # pixel 0 of G now draws on the other pixels (its weight on itself fell below 1)
    assert g.layers[1].get_weights()[0][0, 0] < 0.9
    assert smoothed().shape == (256, 2)


# ----------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("kwargs, match", [({"sigma": 0.0}, "sigma"), ({"n": 0}, "n"),
                                           ({"alpha": 0.7}, "alpha"), ({"batch_size": -1}, "batch_size")])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SmoothedClassifier(mean_threshold(), **{"sigma": 0.25, **kwargs})


@pytest.mark.parametrize("x, match", [(np.full((1, *SHAPE), 2.0, "float32"), "range"),
                                      (np.full((1, *SHAPE), np.nan, "float32"), "NaN"),
                                      (np.zeros((1, 5, 5, 1), "float32"), "shape"),
                                      (np.zeros((4, 4), "float32"), "rank 4")])
def test_bad_images_raise(x, match):
    with pytest.raises(ValueError, match=match):
        SmoothedClassifier(mean_threshold(), 0.25, n=10, n0=5).certify(x)


def test_config_round_trip():
    smoothed = SmoothedClassifier(mean_threshold(), 0.5, n0=7, n=70, alpha=0.01, seed=2)
    again = SmoothedClassifier.from_config(smoothed.get_config(), smoothed.base)
    assert again.get_config() == smoothed.get_config()


# ----------------------------------------------------------------------------- ART
def test_our_certificates_agree_with_arts_within_the_monte_carlo_error():
    rs = pytest.importorskip(
        "art.estimators.certification.randomized_smoothing",
        reason="ART is an optional extra: pip install tfdefense[art]")
    pytest.importorskip("statsmodels", reason="ART's certify bounds p_A with statsmodels ([art] extra)")
    from tfdefense import data, nets

    keras.utils.set_random_seed(0)
    x_train, y_train = data.load_arrays("mnist_5k", "train", limit=1000)
    x, y = data.load_arrays("mnist_5k", "test", limit=12)
    clf = nets.small_cnn(width=8, dense_units=32)
    clf.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clf.fit(x_train + np.random.default_rng(0).normal(0, 0.25, x_train.shape).astype("float32"),
            y_train, epochs=2, batch_size=64, verbose=0)
    sigma, n0, n, alpha = 0.25, 100, 1000, 0.001
    ours = SmoothedClassifier(clf, sigma, n0=n0, n=n, alpha=alpha, seed=0).certify(x)
    art = rs.TensorFlowV2RandomizedSmoothing(clf, nb_classes=10, input_shape=(28, 28, 1),
                                             sample_size=n0, scale=sigma, alpha=alpha)
    np.random.seed(0)  # ART draws its noise from NumPy's global generator
    art_labels, art_radii = art.certify(x, n=n, batch_size=1000)

    # ART's radius must lie where ours would land for any count within 5 binomial standard
    # deviations of two independent estimates (a floor of 3/n on p(1-p) for counts near n)
    p_hat = ours.counts / n
    spread = 5 * np.sqrt(2 * n * np.maximum(p_hat * (1 - p_hat), 3 / n)) + 1
    low = np.clip(np.floor(ours.counts - spread), 0, n).astype(np.int64)
    high = np.clip(np.ceil(ours.counts + spread), 0, n).astype(np.int64)
    radius = lambda k: certified_radius(lower_confidence_bound(k, n, alpha), sigma)  # noqa: E731
    assert np.all((art_radii >= radius(low) - 1e-9) & (art_radii <= radius(high) + 1e-9)), (
        ours.radii, art_radii)
    both = (ours.labels >= 0) & (art_labels >= 0)
    assert np.array_equal(ours.labels[both], art_labels[both])
    assert both.sum() >= 8  # most of the 12 digits are certified by both
    assert np.mean(ours.labels == y) >= 0.5  # a classifier worth certifying (9 of 12 here)
    print(f"ART agreement: n = {n}, largest |radius difference| = "
          f"{np.max(np.abs(ours.radii - art_radii)):.4f}")


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A 28x28 mean-threshold classifier and a denoiser that outputs 0.9 everywhere, saved."""
    folder = tmp_path_factory.mktemp("certify_cli")
    mean_threshold((28, 28, 1)).save(folder / "clf.keras")
    constant = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(0.0, offset=0.9)])
    constant.save(folder / "g.keras")
    return folder


def test_the_certify_command_prints_the_table_and_writes_one_line_per_image(saved_models, tmp_path,
                                                                             capsys):
    import json

    from tfdefense import data
    from tfdefense.cli import main

    out = tmp_path / "certify.jsonl"
    args = ["certify", "--model", str(saved_models / "clf.keras"), "--sigma", "0.25", "--n", "100",
            "--n0", "10", "--alpha", "0.001", "--images", "12", "--skip", "2", "--data", "mnist_5k",
            "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    # digits have mean pixel ~0.13: |x̄ - 1/2| * 28 ≈ 10 >> σ, so every draw says class 1;
    # all 100 of 100 give radius 0.25 Φ⁻¹(0.001 ** (1 / 100)) = 0.3751 for every image
    _, y = data.load_arrays("mnist_5k", "test")
    ones = float(np.mean(y[::2][:12] == 1))
    assert summary["certified_accuracy"] == {"0": ones, "0.25": ones, "0.5": 0.0, "0.75": 0.0, "1": 0.0}
    assert f"| 0.25 | {100 * ones:.2f} |" in printed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12 and {r["label"] for r in records} == {1}
    assert all(r["radius"] == pytest.approx(0.3751188) and r["count"] == 100 for r in records)
    assert [r["true_label"] for r in records] == y[::2][:12].tolist()

    # behind a denoiser that outputs 0.9 everywhere, every image is class 0
    assert main([*args[:-2], "--denoiser", str(saved_models / "g.keras")]) == 0
    printed = capsys.readouterr().out
    zeros = float(np.mean(y[::2][:12] == 0))
    assert json.loads(printed[printed.index("{"):])["certified_accuracy"]["0.25"] == zeros


@pytest.mark.parametrize("change, message", [
    ({"--model": "missing.keras"}, "no such file"),
    ({"--sigma": "-1"}, "sigma"),
    ({"--images": "0"}, "--images"),
])
def test_the_certify_command_fails_clearly(saved_models, capsys, change, message):
    from tfdefense.cli import main

    options = {"--model": str(saved_models / "clf.keras"), "--sigma": "0.25", "--n": "10",
               "--n0": "5", "--images": "2", **change}
    assert main(["certify", *[item for pair in options.items() for item in pair]]) == 2
    assert message in capsys.readouterr().err
