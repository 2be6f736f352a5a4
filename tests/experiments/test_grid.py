"""experiments.grid on hand-made results: cells, verdicts with rejections, worst cases over the
rows of several evaluations, AutoAttack's per-component breaks, and Table 6's AutoAttack cells."""

import numpy as np
import pytest

from tfdefense.attacks.robustness import AttackResult, RobustnessResult
from tfdefense.defend.base import REJECTED
from tfdefense.experiments import grid
from tfdefense.experiments.cdvae_greybox import autoattack_row_cells

Y = np.array([0, 1, 2, 3, 4])


def _row(label, labels, attack="x", cumulative=False, accuracy=0.0, seconds=0.0):
    return AttackResult(label, attack, {"version": "quick", "eps": 0.3}, accuracy, 0, 0, 0, 0, 0,
                        0, 0, seconds, 0, cumulative=cumulative, labels=list(labels))


def _result(clean, *rows, flags=None):
    return RobustnessResult(len(clean), 0.0, 0.0, rows=list(rows), clean_labels=list(clean),
                            gradient_masking_flags=flags or {})


def test_cells_are_per_image_verdicts_on_the_first_n_images():
    # clean: 4 of 5 right (image 4 wrong); pgd: 0, 2 right; cw: 0, 1, 2 right, 3 rejected
    r = _result([0, 1, 2, 3, 9], _row("pgd", [0, 9, 2, 9, 9]),
                _row("cw", [0, 1, 2, REJECTED, 9]))
    assert grid.accuracies(r, Y) == {"clean": 80.0, "pgd": 40.0, "cw": 60.0}
    assert grid.accuracies(r, Y, n=2, labels=["cw"]) == {"clean": 100.0, "cw": 100.0}
    assert grid.robust(r, "cw", Y).tolist() == [True, True, True, False, False]
    assert grid.robust(r, "cw", Y, rejected_ok=True).tolist() == [True, True, True, True, False]
    with pytest.raises(ValueError, match="no attack row 'fgsm'"):
        grid.robust(r, "fgsm", Y)


def test_worst_case_is_the_per_image_and_over_the_common_prefix():
    a = np.array([True, True, False, True])
    b = np.array([True, False, True])
    # common prefix 3 images: a & b = [T, F, F] -> 1/3; not min(mean a, mean b) = 2/3
    assert grid.survivors([a, b]).tolist() == [True, False, False]
    assert grid.worst_case([a, b]) == pytest.approx(100 / 3)


def test_autoattack_summary_counts_the_points_each_component_broke():
    # clean: 0-3 right; APGD-CE fools 1; APGD-T then fools 3 (1 stays fooled); Square fools
    # nothing more; image 2 rejected by the last component (not a break)
    parts = [_row("aa/apgd-ce", [0, 7, 2, 3, 9], "apgd-ce", True),
             _row("aa/apgd-t", [0, 7, 2, 8, 9], "apgd-t", True),
             _row("aa/square", [0, 7, REJECTED, 8, 9], "square", True)]
    r = _result([0, 1, 2, 3, 9], *parts, _row("aa", [0, 7, REJECTED, 8, 9], "autoattack",
                                               accuracy=0.2, seconds=1.5),
                flags={"aa": False})
    s = grid.autoattack_summary(r, "aa", Y)
    assert s["broken_by"] == {"apgd-ce": 1, "apgd-t": 1, "square": 0}
    assert s["square_only"] == 0 and s["gradient_masking"] is False
    assert (s["n"], s["clean"], s["robust"], s["seconds"]) == (5, 80.0, 20.0, 1.5)


def test_table6_autoattack_cells_take_the_worst_case_over_pgd_cw_and_autoattack():
    # the base (grey-box) evaluation on 5 images; AutoAttack on the first 4
    base = _result([0, 1, 2, 3, 4], _row("pgd_linf", [0, 1, 9, 3, 4]),
                   _row("cw_linf", [0, 9, 2, 3, 4]), _row("pgd_l2", [9, 1, 2, 3, 4]))
    aa = _result([0, 1, 2, 3], _row("aa_linf", [0, 1, 2, 9]))
    cells = autoattack_row_cells({"base": (base, Y), "aa": (aa, Y[:4])}, "aa", "base", ("linf",))
    # on images 0-3: pgd_linf fails 2, cw_linf fails 1, AutoAttack fails 3 -> only 0 survives all
    assert cells["aa_linf"] == 75.0 and cells["worst_linf"] == 25.0
    assert (cells["pgd_linf"], cells["cw_linf"], cells["pgd_l2"], cells["clean"]) == (
        75.0, 75.0, 75.0, 100.0)


def test_cached_reads_read_each_image_set_once_per_defense(tmp_path):
    from tfdefense.defend import ClassifierDefense
    from tfdefense.experiments import Context
    from tfdefense.nets import small_cnn

    class Counting(ClassifierDefense):
        calls = 0

        def predict_with_decisions(self, x, batch_size=None):
            Counting.calls += 1
            return super().predict_with_decisions(x, batch_size)

    defense = Counting(small_cnn((28, 28, 1), 10, width=4, dense_units=8))
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(size=(3, 28, 28, 1)).astype("float32") for _ in range(2))
    read = grid.cached_reads(Context("quick", str(tmp_path)), defense, "plain")
    first = read("clean", a)
    assert Counting.calls == 1
    again = read("pgd", a.copy())  # the same images under another row: read from the cache
    assert Counting.calls == 1
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[0], np.argmax(defense.logits(a), 1))
    read("pgd", b)
    assert Counting.calls == 2
    # a new process (a new Context on the same folder) reads the file
    read = grid.cached_reads(Context("quick", str(tmp_path)), defense, "plain")
    read("clean", a)
    assert Counting.calls == 2
