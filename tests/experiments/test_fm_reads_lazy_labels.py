"""FMReads labels a row's images with the bare classifier only when asked (Fig 4's "fooled by
C"): Table II's reads never run that labelling; the labels, when asked, are the classifier's
argmax on that row's images (what the reads computed eagerly before), once per image set,
then from the run's cache, in this process and in a new one."""

import numpy as np
import pytest

from tfdefense.defend import FMDefense
from tfdefense.detect import MorphEngine, ResistanceDetector
from tfdefense.experiments import Context
from tfdefense.experiments import fm_models as fm
from tfdefense.models import DGMM, ComboVAE
from tfdefense.nets import small_cnn


@pytest.fixture(scope="module")
def defense():
    dgmm = DGMM.for_dataset("mnist_5k", feature_dim=4, seed=0)
    vae = ComboVAE.for_dataset("mnist_5k", dgmm, latent_dim=4, discriminator_units=8,
                               discriminator_depth=1, seed=0)
    clf = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    engine = MorphEngine(vae, clf, codes=[0, 1], n_morphs=4, samples_per_iteration=2,
                         max_iterations=4).set_ranges([-1, -1], [1, 1])
    det = ResistanceDetector(engine, unified_threshold=0.5, theta_d=0.3)
    return FMDefense(det.fit_resistance(np.ones((4, 2))), eot_morphs=2)


@pytest.fixture()
def counted(monkeypatch):
    """Counts the calls of the classifier labelling (``fm_models.argmax_labels``)."""
    calls = []
    real = fm.argmax_labels

    def counting(model, x, batch=256):
        calls.append(len(x))
        return real(model, x, batch)

    monkeypatch.setattr(fm, "argmax_labels", counting)
    return calls


def _sets():
    rng = np.random.default_rng(0)
    return {name: rng.random((n, 28, 28, 1), dtype="float32")
            for name, n in (("clean", 5), ("fgsm", 5), ("pgd", 3))}


def _table2_reads(ctx, defense) -> fm.FMReads:
    reads = fm.FMReads(ctx, defense)
    read = reads.reader()
    for name, images in _sets().items():
        labels, decisions = read(name, images)
        assert len(labels) == len(decisions) == len(images)
    return reads


def test_table2_reads_do_not_label_with_the_classifier(tmp_path, defense, counted):
    reads = _table2_reads(Context("quick", str(tmp_path)), defense)
    assert counted == []
    assert set(reads.resistances) == set(reads.classifier_labels) == {"clean", "fgsm", "pgd"}
    assert counted == []  # listing the rows labels nothing either


def test_labels_on_access_are_the_classifiers_and_computed_once_per_set(tmp_path, defense,
                                                                        counted):
    sets = _sets()
    reads = _table2_reads(Context("quick", str(tmp_path)), defense)
    for name, images in sets.items():
        expected = np.argmax(np.asarray(defense.classifier(images, training=False)), -1)
        np.testing.assert_array_equal(reads.classifier_labels[name], expected)
        assert reads.classifier_labels[name].dtype == np.int64
    assert counted == [5, 5, 3]
    reads.classifier_labels["fgsm"]
    assert counted == [5, 5, 3]  # kept
    # a new process (a new Context on the same folder): the labels come from the cache
    again = _table2_reads(Context("quick", str(tmp_path)), defense)
    for name in sets:
        np.testing.assert_array_equal(again.classifier_labels[name],
                                      reads.classifier_labels[name])
    assert counted == [5, 5, 3]


def test_a_row_read_again_on_other_images_is_labelled_again(tmp_path, defense, counted):
    reads = fm.FMReads(Context("quick", str(tmp_path)), defense)
    read = reads.reader()
    first, second = _sets()["fgsm"], _sets()["pgd"]
    read("pgd", first)
    np.testing.assert_array_equal(reads.classifier_labels["pgd"],
                                  fm.argmax_labels(defense.classifier, first))
    read("pgd", second)
    np.testing.assert_array_equal(reads.classifier_labels["pgd"],
                                  np.argmax(np.asarray(defense.classifier(second)), -1))
    read("clean", second)
    read("clean", first)  # "clean" keeps the first clean set read
    assert len(reads.classifier_labels["clean"]) == len(second)
