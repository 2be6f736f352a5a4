"""tune: objectives, the CD-VAE HyperModel under keras-tuner, probe metrics, bad input."""

import numpy as np
import pytest

from tfdefense import data, nets
from tfdefense.tune import (
    OBJECTIVES,
    PROBE_METRICS,
    CDVAEHyperModel,
    GreyBoxProbe,
    make_tuner,
    objective,
    probe_metrics,
    trial_table,
)


@pytest.fixture(scope="module")
def arrays():
    x, y = data.load_arrays("mnist_5k", "train")
    return x[:64], y[:64], x[64:96], y[64:96]


@pytest.fixture(scope="module")
def probe(arrays):
    x, y, xv, yv = arrays
    ref = nets.small_cnn(width=4, dense_units=8)
    noisy = np.clip(xv + 0.3 * np.sign(np.random.default_rng(0).normal(size=xv.shape)), 0, 1)
    return GreyBoxProbe(ref, xv, yv, noisy.astype("float32"), x, y)


def test_objective_names_match_logged_keys():
    for name, (key, direction) in OBJECTIVES.items():
        obj = objective(name)
        assert obj.name == key and obj.direction == direction
    assert objective("accuracy").name == "val_accuracy"  # CDVAE.test_step logs "accuracy"
    with pytest.raises(ValueError, match="objective"):
        objective("auc")


def test_search_logs_probe_metrics_and_reloads_best(arrays, probe, tmp_path):
    x, y, xv, yv = arrays
    hm = CDVAEHyperModel("mnist_5k", gamma=[2.0], latent_dim=8, width=8, probe=probe,
                         probe_metrics=PROBE_METRICS)
    tuner = make_tuner(hm, "defense_accuracy", "grid", directory=str(tmp_path))
    tuner.search(x, y, validation_data=(xv, yv), epochs=1, batch_size=32, verbose=0)
    rows = trial_table(tuner)
    assert len(rows) == 1 and rows[0]["gamma"] == 2.0 and rows[0]["beta"] == 0.2
    for key in ("val_accuracy", "val_reconstruction_accuracy", "val_g_accuracy",
                "val_defense_accuracy", "val_detection_auc"):
        assert 0.0 <= rows[0][key] <= 1.0 or key == "val_reconstruction_accuracy"
    assert rows[0]["score"] == pytest.approx(rows[0]["val_defense_accuracy"])
    best = tuner.get_best_models(1)[0]
    assert best.gamma == 2.0 and best(xv[:2]).shape == (2, 10)


def test_log_range_and_fixed_values():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    model = CDVAEHyperModel("mnist_5k", gamma=(2e-4, 20.0), beta=0.3, latent_dim=8, width=8).build(hp)
    assert 2e-4 <= model.gamma <= 20.0 and model.beta == 0.3
    assert hp._hps["gamma"][0].sampling == "log"


def test_a_builder_makes_each_trials_model_with_the_trials_gamma_and_beta():
    import keras_tuner

    from tfdefense.models import VQCDVAE

    calls = []

    def builder(gamma, beta):  # a variant for_dataset cannot build: a VQ-VAE G
        calls.append((gamma, beta))
        model = VQCDVAE.for_dataset("mnist_5k", gamma=gamma, beta=beta, width=8, num_codes=4,
                                    classifier="small_cnn")
        model.compile()
        return model

    hp = keras_tuner.HyperParameters()
    model = CDVAEHyperModel("mnist_5k", gamma=[0.5, 2.0], beta=0.1, builder=builder).build(hp)
    assert calls == [(0.5, 0.1)] and isinstance(model, VQCDVAE) and model.built
    with pytest.raises(ValueError, match="builder"):
        CDVAEHyperModel("mnist_5k", builder="vq")


def test_probe_metrics_in_range(probe):
    from tfdefense.models import CDVAE

    model = CDVAE.for_dataset("mnist_5k", latent_dim=8, width=8)
    out = probe_metrics(model, probe)
    assert set(out) == set(PROBE_METRICS) and all(0.0 <= v <= 1.0 for v in out.values())
    with pytest.raises(ValueError, match="names"):
        probe_metrics(model, probe, ["nope"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": (0.0, 1.0)}, r"gamma\[0\]"),
        ({"gamma": (2.0, 1.0)}, r"gamma\[1\]"),
        ({"gamma": []}, "gamma"),
        ({"beta": "x"}, "beta"),
        ({"dataset": "nope"}, "nope"),
        ({"probe_metrics": ["defense_accuracy"]}, "probe"),
        ({"probe_metrics": ["auc"]}, "probe_metrics"),
    ],
)
def test_hypermodel_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CDVAEHyperModel(**kwargs)


def test_make_tuner_bad_params(tmp_path):
    hm = CDVAEHyperModel(gamma=[2.0])
    with pytest.raises(ValueError, match="algorithm"):
        make_tuner(hm, "accuracy", "hyperband", directory=str(tmp_path))
    with pytest.raises(ValueError, match="probe_metrics"):
        make_tuner(hm, "detection_auc", directory=str(tmp_path))
    with pytest.raises(ValueError, match="hypermodel"):
        make_tuner(object(), directory=str(tmp_path))
    with pytest.raises(ValueError, match="max_trials"):
        make_tuner(hm, max_trials=0, directory=str(tmp_path))


def test_probe_bad_input(arrays):
    x, y, xv, yv = arrays
    ref = nets.small_cnn(width=4, dense_units=8)
    with pytest.raises(ValueError, match="x_adv"):
        GreyBoxProbe(ref, xv, yv, xv[:3], x, y)
    with pytest.raises(ValueError, match="y"):
        GreyBoxProbe(ref, xv, yv[:3], xv, x, y)
    with pytest.raises(ValueError, match="reference_classifier"):
        GreyBoxProbe(None, xv, yv, xv, x, y)


def test_each_trial_starts_from_the_seed_whatever_the_process_drew_before():
    import keras
    import keras_tuner

    from tfdefense.models import VQCDVAE

    def builder(gamma, beta):  # builds from the global RNG, as an experiment's builder does
        return VQCDVAE.for_dataset("mnist_5k", gamma=gamma, beta=beta, width=8, num_codes=4,
                                   classifier="small_cnn")

    hypermodel = CDVAEHyperModel("mnist_5k", gamma=[1.0], beta=0.1, builder=builder, seed=3)
    first = hypermodel.build(keras_tuner.HyperParameters()).get_weights()
    keras.random.uniform((7,), seed=keras.random.SeedGenerator(11))  # the process draws on
    keras.utils.set_random_seed(99)                                   # and reseeds elsewhere
    second = hypermodel.build(keras_tuner.HyperParameters()).get_weights()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = CDVAEHyperModel("mnist_5k", gamma=[1.0], beta=0.1, builder=builder, seed=4)
    flat = lambda ws: np.concatenate([w.ravel() for w in ws])  # noqa: E731
    assert not np.array_equal(flat(other.build(keras_tuner.HyperParameters()).get_weights()),
                              flat(first))
