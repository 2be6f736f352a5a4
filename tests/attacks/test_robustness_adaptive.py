"""evaluate_robustness's adaptive evaluation: per-norm worst case over every attack, the
adaptive preset, the attack surface of a Defense, and the RobustBench-style claim."""

import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import evaluate_robustness, get_attack, get_preset, preset_params
from tfdefense.attacks.base import Attack
from tfdefense.attacks.robustness import threat_norm
from tfdefense.decisions import Decision
from tfdefense.defend import ClassifierDefense
from tfdefense.defend.base import REJECTED, Defense
from tfdefense.nets import small_cnn


class PixelDefense(Defense):
    """Two-pixel images (1, 2, 1): class 1 where x1 > 1/2 (logits [1/2 - x1, x1 - 1/2]),
    rejected where x2 > 1/2 (detection margin x2 - 1/2)."""

    input_shape = (1, 2, 1)
    detects = True

    def logits(self, x):
        x1 = tf.reshape(tf.cast(x, tf.float32), [-1, 2])[:, 0]
        return tf.stack([0.5 - x1, x1 - 0.5], axis=1)

    def detection_margin(self, x):
        return tf.reshape(tf.cast(x, tf.float32), [-1, 2])[:, 1] - 0.5

    def defend(self, x):
        labels = tf.argmax(self.logits(x), axis=-1, output_type=tf.int64)
        rejected = self.detection_margin(x) > 0
        labels = tf.where(rejected, tf.constant(REJECTED, tf.int64), labels)
        return labels, tf.cast(tf.where(rejected, int(Decision.REJECTED), 0), tf.int32)


CLEAN = (0.25, 0.25)  # class 0, accepted
FOOL = (0.75, 0.25)   # class 1 (wrong), accepted: fooled
CAUGHT = (0.75, 0.75)  # class 1 but rejected: not fooled


class ScriptedAttack(Attack):
    """Moves image i to FOOL if i is in ``fools``, to CAUGHT if in ``caught``, else leaves it."""

    name = "scripted"
    supported_norms = ("linf", "l2")
    params = ("eps", "norm")

    def __init__(self, model=None, *, eps=None, norm="linf", fools=(), caught=(), **kwargs):
        super().__init__(model, batch_size=64, **kwargs)
        self.eps, self.norm, self.fools, self.caught = eps, norm, fools, caught
        self._check_params()

    def _attack_batch(self, model, x, y, seed):
        out = x.numpy().copy()
        out[list(self.fools)] = np.reshape(FOOL, (1, 2, 1))
        out[list(self.caught)] = np.reshape(CAUGHT, (1, 2, 1))
        return out


def _eight_images():
    """Images 0-6 clean and correct (class 0), image 7 already wrong clean (at FOOL)."""
    x = np.tile(np.reshape(CLEAN, (1, 1, 2, 1)), (8, 1, 1, 1)).astype("float32")
    x[7] = np.reshape(FOOL, (1, 2, 1))
    return x, np.zeros(8, np.int64)


@pytest.fixture(scope="module")
def scripted():
    attacks = {
        "a_linf": ScriptedAttack(eps=8 / 255, fools=[0], caught=[1, 2]),
        "b_linf": ScriptedAttack(eps=8 / 255, fools=[3]),
        "c_l2": ScriptedAttack(eps=0.5, norm="l2", fools=[1, 4], caught=[5]),
        "d_unbounded": ScriptedAttack(eps=None, fools=[6]),
    }
    return evaluate_robustness(PixelDefense(), _eight_images(), attacks, verbose=False,
                               reported={"linf": 0.7})


def test_worst_case_is_the_per_image_minimum_over_the_attacks_of_each_norm(scripted):
    # robust = correct clean (0-6) and fooled by no attack of the norm (a catch is no fool):
    # linf: A fools 0, B fools 3 -> 1 2 4 5 6; l2: C fools 1 4 -> 0 2 3 5 6; other: 6 -> 0-5
    t, f = True, False
    assert scripted.robust == {"linf": [f, t, t, f, t, t, t, f], "l2": [t, f, t, t, f, t, t, f],
                               "other": [t, t, t, t, t, t, f, f]}
    assert scripted.worst_case == {"linf": 5 / 8, "l2": 5 / 8, "other": 6 / 8}
    # not the minimum over all norms together (0 1 3 4 6 fooled: 2/8), not one attack per
    # norm (A alone leaves 6/8), not the lowest row accuracy (A's rejections count as wrong
    # there: 4/8)
    assert scripted.worst_case_accuracy == 2 / 8
    rows = {r.label: r for r in scripted.rows}
    assert rows["a_linf"].accuracy == 4 / 8 and rows["a_linf"].defense_accuracy == 6 / 8
    # each row keeps the per-image labels: A moved 0 to FOOL (1), caught 1 and 2 (-1); 7 was
    # at FOOL already
    assert rows["a_linf"].labels == [1, REJECTED, REJECTED, 0, 0, 0, 0, 1]
    assert rows["c_l2"].labels == [0, 1, 0, 0, 1, REJECTED, 0, 1]
    # and the defense's decisions: C's catch (image 5) rejected, everything else accepted
    r = int(Decision.REJECTED)
    assert rows["c_l2"].decisions == [0, 0, 0, 0, 0, r, 0, 0]
    assert rows["a_linf"].decisions == [0, r, r, 0, 0, 0, 0, 0]
    assert scripted.clean_decisions == [0] * 8
    assert [rows[k].norm for k in ("a_linf", "b_linf", "c_l2", "d_unbounded")] == [
        "linf", "linf", "l2", "other"]


def test_markdown_prints_one_worst_case_row_per_norm(scripted):
    table = scripted.to_markdown()
    assert "| **worst case (linf)** | linf | 62.5 |" in table
    assert "| **worst case (l2)** | l2 | 62.5 |" in table
    assert "| **worst case (other)** | other | 75.0 |" in table


def test_claim_is_in_robustbench_format(scripted):
    claim = scripted.claim("linf")
    assert claim["threat_model"] == "Linf" and claim["eps"] == "8/255" and claim["n"] == 8
    assert claim["clean_acc"] == "87.50" and claim["worst_case_acc"] == "62.50"
    assert claim["reported"] == "70.00" and claim["autoattack_acc"] is None
    assert claim["attacks"] == ["a_linf", "b_linf"] and claim["seeds"] == {"a_linf": 0,
                                                                           "b_linf": 0}
    assert claim["name"] == "PixelDefense" and not claim["unreliable"]
    assert set(claim["versions"]) == {"tfdefense", "tensorflow", "keras"}
    assert scripted.claim("l2", reported=0.5, dataset="toy")["reported"] == "50.00"
    assert scripted.claim("l2", dataset="toy")["dataset"] == "toy"
    assert scripted.claim()["threat_model"] == "Linf"
    assert sorted(scripted.claims()) == ["L2", "Linf", "other"]
    with pytest.raises(ValueError, match="norm"):
        scripted.claim("l1")


def test_detector_aware_attacks_count_in_the_worst_case():
    # PGD through the logits walks x1 past 1/2 and leaves x2: not rejected here, so give the
    # defense a detector that PGD trips: d = x1 - x2 - 1/4 (rejects (0.75, 0.25))
    class Tripwire(PixelDefense):
        def detection_margin(self, x):
            flat = tf.reshape(tf.cast(x, tf.float32), [-1, 2])
            return flat[:, 0] - flat[:, 1] - 0.25

    x = np.reshape(CLEAN, (1, 1, 2, 1)).astype("float32")
    common = dict(eps=0.375, steps=12, step_size=0.0625, rand_init=False)
    attacks = {"pgd": get_attack("pgd_linf", **common),
               "aware": get_attack("detector_aware_pgd_linf", tau=0.0625, **common)}
    result = evaluate_robustness(Tripwire(), (x, np.array([0])), attacks, verbose=False)
    rows = {r.label: r for r in result.rows}
    assert rows["pgd"].rejection_rate == 1.0 and rows["pgd"].success_rate == 0.0
    assert rows["aware"].success_rate == 1.0
    assert result.worst_case == {"linf": 0.0}


def test_a_defense_is_attacked_through_its_logits_with_eot_when_stochastic():
    # logits [0, s (x1 - 1/2)], s = -1 (3 draws in 4) or +7: the mean slope is +1
    class RandomSlope(PixelDefense):
        stochastic = True
        detects = False

        def __init__(self):
            self.generator = tf.random.Generator.from_seed(1)

        def logits(self, x):
            x1 = tf.reshape(tf.cast(x, tf.float32), [-1, 2])[:, 0]
            slope = tf.where(self.generator.uniform(tf.shape(x1)) < 0.25, 7.0, -1.0)
            return tf.stack([tf.zeros_like(x1), slope * (x1 - 0.5)], axis=1)

        def defend(self, x):  # the label of the mean slope: class 1 where x1 > 1/2
            x1 = tf.reshape(tf.cast(x, tf.float32), [-1, 2])[:, 0]
            labels = tf.cast(x1 > 0.5, tf.int64)
            return labels, tf.zeros(tf.shape(labels), tf.int32)

    x = np.reshape(CLEAN, (1, 1, 2, 1)).astype("float32")
    pgd = get_attack("pgd_linf", eps=0.375, steps=12, step_size=0.0625, rand_init=False)
    many = evaluate_robustness(RandomSlope(), (x, np.array([0])), [pgd], eot_samples=40,
                               verbose=False)
    one = evaluate_robustness(RandomSlope(), (x, np.array([0])), [pgd], eot_samples=1,
                              verbose=False)
    assert many.worst_case == {"linf": 0.0} and one.worst_case == {"linf": 1.0}


def test_adaptive_preset_adapts_to_the_defense():
    plain = preset_params("adaptive", "mnist", quick=True)
    assert list(plain) == ["pgd_linf", "pgd_l2", "cw_linf", "autoattack_linf", "autoattack_l2"]
    assert plain["pgd_linf"][1] == {"eps": 0.3, "steps": 20}
    assert plain["autoattack_l2"][1] == {"eps": 2.0, "norm": "l2", "version": "quick"}
    assert preset_params("adaptive")["autoattack_linf"][1]["version"] == "standard"
    both = get_preset("adaptive", "mnist", quick=True, detects=True, stochastic=True)
    aware = [k for k in both if k.startswith("detector_aware")]
    assert aware == ["detector_aware_pgd_linf", "detector_aware_pgd_l2", "detector_aware_cw_linf"]
    assert both["detector_aware_cw_linf"].loss == "margin" and both["detector_aware_pgd_l2"].eps == 2
    assert all(both[k].eot_iter == 5 for k in aware)
    assert both["autoattack_linf"].version == "rand" and both["autoattack_linf"].eot_iter == 5
    assert [threat_norm(a) for a in both.values()] == ["linf", "l2", "linf", "linf", "l2", "linf",
                                                       "linf", "l2"]
    with pytest.raises(ValueError, match="detects"):
        preset_params("adaptive", detects="yes")


@pytest.mark.slow  # about 10 s: AutoAttack compiles four components per norm
def test_adaptive_evaluation_of_a_classifier_defense_covers_both_norms():
    model = small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    x = np.random.default_rng(0).uniform(size=(6, 28, 28, 1)).astype("float32")
    y = np.argmax(model(x).numpy(), 1)  # every image correct clean
    result = evaluate_robustness(ClassifierDefense(model), (x, y), quick=True, verbose=False)
    labels = [r.label for r in result.rows if not r.cumulative]
    assert labels == ["pgd_linf", "pgd_l2", "cw_linf", "autoattack_linf", "autoattack_l2"]
    assert sorted(result.worst_case) == ["l2", "linf"]
    fooled = {r.label: r.success_rate for r in result.rows if not r.cumulative}
    for norm, attacks in (("linf", ("pgd_linf", "cw_linf", "autoattack_linf")),
                          ("l2", ("pgd_l2", "autoattack_l2"))):
        assert result.worst_case[norm] <= 1 - max(fooled[a] for a in attacks)
    assert set(result.gradient_masking_flags) == {"autoattack_linf", "autoattack_l2"}
    assert result.claim("l2")["eps"] == "2" and result.claim("l2")["autoattack_acc"] is not None


def test_bad_adaptive_arguments_raise():
    x, y = _eight_images()
    with pytest.raises(ValueError, match="preset"):
        evaluate_robustness(PixelDefense(), (x, y), "fgsm", preset="adaptive", verbose=False)
    with pytest.raises(ValueError, match="preset"):
        evaluate_robustness(PixelDefense(), (x, y), preset="nope", verbose=False)
    with pytest.raises(ValueError, match="reported"):
        evaluate_robustness(PixelDefense(), (x, y), [ScriptedAttack(eps=0.1)], verbose=False,
                            reported={"l1": 0.5})
    with pytest.raises(ValueError, match="eot_samples"):
        evaluate_robustness(PixelDefense(), (x, y), [ScriptedAttack(eps=0.1)], verbose=False,
                            eot_samples=0)
    with pytest.raises(ValueError, match="Defense"):
        evaluate_robustness(lambda t: PixelDefense().logits(t), (x, y),
                            [get_attack("detector_aware_pgd_linf", eps=0.1, steps=1)],
                            verbose=False)


def test_a_read_hook_reads_every_set_once_and_its_answers_score_the_rows():
    x, y = _eight_images()
    defense, calls = PixelDefense(), []

    def read(label, images):  # the defense's answers, every attacked image rejected
        calls.append((label, len(images)))
        labels, decisions = defense.predict_with_decisions(images)
        if label != "clean":
            labels, decisions = np.full(len(images), REJECTED), np.full(len(images), 2)
        return labels, decisions

    attacks = {"a": ScriptedAttack(eps=0.1, fools=[0]), "b": ScriptedAttack(eps=0.1, fools=[3])}
    result = evaluate_robustness(defense, (x, y), attacks, read=read, verbose=False)
    assert calls == [("clean", 8), ("a", 8), ("b", 8)]
    assert result.clean_labels == [0] * 7 + [1]
    rows = {r.label: r for r in result.rows}
    assert rows["a"].labels == [REJECTED] * 8 and rows["a"].decisions == [2] * 8
    assert rows["a"].rejection_rate == 1.0 and result.worst_case == {"linf": 7 / 8}


def test_a_targeted_attack_gets_its_targets_and_is_scored_on_the_true_labels():
    x = np.reshape(CLEAN, (1, 1, 2, 1)).astype("float32")
    pgd = get_attack("pgd_linf", eps=0.375, steps=12, step_size=0.0625, rand_init=False,
                     targeted=True)
    # toward class 1: x1 past 1/2, labelled 1, a success against the true label 0
    to_one = evaluate_robustness(PixelDefense(), (x, np.array([0])), {"t": pgd},
                                 targets={"t": np.array([1])}, verbose=False)
    assert to_one.rows[0].labels == [1] and to_one.rows[0].success_rate == 1.0
    # without targets a targeted attack aims at the true labels: nothing moves
    to_true = evaluate_robustness(PixelDefense(), (x, np.array([0])), {"t": pgd}, verbose=False)
    assert to_true.rows[0].labels == [0] and to_true.rows[0].success_rate == 0.0
    with pytest.raises(ValueError, match="not a targeted attack"):
        evaluate_robustness(PixelDefense(), (x, np.array([0])), {"u": get_attack("fgsm")},
                            targets={"u": np.array([1])}, verbose=False)


def test_autoattack_judged_by_the_defense_keeps_its_labels_and_reads_the_decisions():
    from tfdefense.attacks import AutoAttack

    # image 0 correct and accepted, image 1 rejected clean (not attacked), image 2 wrong clean
    x = np.array([CLEAN, CAUGHT, FOOL], "float32").reshape(3, 1, 2, 1)
    aa = AutoAttack(eps=0.375, version="quick", steps=4, queries=10, batch_size=4)
    result = evaluate_robustness(PixelDefense(), (x, np.array([0, 0, 0])), {"aa": aa},
                                 verbose=False)
    row = next(r for r in result.rows if r.label == "aa" and not r.cumulative)
    r = int(Decision.REJECTED)
    assert row.labels == [1, REJECTED, 1]  # APGD walks x1 past 1/2: broken, accepted
    assert row.decisions == [0, r, 0]
