"""``reproduce --preset paper --dry-run`` of Table 7 (white-box adversarial training) on
CIFAR-shaped mock data: all four unseen attacks get a column (slow)."""

import pytest
from dry_run_check import check_dry_run


@pytest.mark.slow
@pytest.mark.ci_first
def test_paper_dry_run_of_table_7_fills_the_four_unseen_columns(tmp_path):
    table7 = check_dry_run("paper", ["cdvae_table7"], tmp_path)["results"]["cdvae_table7"]
    rows = [r for r in table7.rows if r["evaluation"].startswith(("white-box", "adaptive"))
            and r["defense"] in ("PGD-AT", "CD-VAE-AT")]
    assert len(rows) == 4
    for row in rows:
        for column in ("PGD-ℓ2", "JPEG-ℓ∞", "ReColor", "StAdv"):
            assert float(row[column].split(" ")[0]) >= 0.0, (row["defense"], column, row[column])
        assert row["unseen mean"].split(" ")[0] != "–"
        assert "mean of" not in row["unseen mean"]  # all four averaged: no "mean of ..." caveat
