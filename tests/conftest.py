"""Shared test setup: quiet TF, deterministic seeds, and the order xdist workers take the files in.

The README runs the suite with ``pytest -n 2 --dist loadfile``: each test file runs whole in one
of two worker processes (so a module-scoped trained model is trained once), one per core.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core: a second TF thread per worker only makes the two contend for the cores.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    # The same for numpy's BLAS and OpenMP (scikit-learn's logistic regression): on 2 threads a
    # 90-row fit ran 10x slower than on one while the other worker held the second core.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")

import keras  # noqa: E402
import pytest  # noqa: E402

TESTS = Path(__file__).resolve().parent
#: files that train for a minute or more on 2 cores, longest first: handed out first, so that
#: the two workers finish together instead of one waiting on a long file picked up last
LONG_FILES = (
    "attacks/test_autoattack.py",
    "test_export.py",
    "models/test_cdvae.py",
    "models/test_adversarial.py",
    "attacks/test_autoattack_few_classes.py",
    "fm/test_fm_morphs.py",
)


def _rank(item: pytest.Item) -> int:
    path = Path(item.path).resolve()
    rel = path.relative_to(TESTS).as_posix() if path.is_relative_to(TESTS) else None
    return LONG_FILES.index(rel) if rel in LONG_FILES else len(LONG_FILES)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_rank)  # stable: the order within a file, and among the other files, is kept


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
