"""The detectors' logistic regression runs with one BLAS thread (OpenBLAS's threads made
these tiny fits 8x slower on 2 loaded cores; see ``detector._fit_regression``)."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from tfdefense.detect import detector


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = np.repeat([0, 0, 1], 40)
    x[y == 1, 0] += 1.5  # a separable-ish first feature
    return x, y


def test_the_regression_fit_runs_under_one_blas_thread(monkeypatch):
    seen = []
    real_fit = detector.LogisticRegressionCV.fit

    def spy(self, *args, **kwargs):
        seen.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(detector.LogisticRegressionCV, "fit", spy)
    detector._fit_regression(*_data())
    assert seen and all(threads == [1] * len(threads) for threads in seen), seen
