"""``reproduce --jobs 2`` on the real experiments (tiny settings): the same tables as one process.

Table 1 and Table 2 need the same CD-VAE and classifiers (one trains them, the other waits on
the cache's lock and loads them); the γ sweep trains its own models from its seed. Each runs in
a fresh worker, so a number that depended on what the process drew before would differ here.
"""

import json

from tfdefense.report import reproduce
from tfdefense.report_jobs import reproduce_jobs

NAMES = ["cdvae_table1", "cdvae_table2", "cdvae_fig4_gamma"]


def test_two_jobs_give_the_tables_of_one_process(tmp_path, tiny_settings):
    settings = {**tiny_settings, "gamma_grid": [2.0], "eval_images": 24, "detection_train_images": 100}
    one = reproduce("quick", str(tmp_path / "one"), only=NAMES, overrides=settings,
                    log=lambda *_: None)
    two = reproduce_jobs("quick", str(tmp_path / "two"), jobs=2, only=NAMES, overrides=settings,
                         log=lambda *_: None)
    assert one.failed == two.failed == []
    for a, b in zip(one.results, two.results, strict=True):
        assert (a.name, a.rows) == (b.name, b.rows)
    saved = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [e["name"] for e in saved["experiments"]] == NAMES
