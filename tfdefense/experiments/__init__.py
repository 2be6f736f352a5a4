"""One module per paper table or figure; each registers ``run(context) -> Result``.

Importing this package imports every experiment module so the registry is
complete. Nothing in the library imports ``experiments``.
"""

from tfdefense.experiments.context import PRESETS, Context
from tfdefense.experiments.registry import available, get, register
from tfdefense.experiments.result import Result, beside_paper, fmt

__all__ = ["PRESETS", "Context", "Result", "available", "beside_paper", "fmt", "get", "register"]

# Experiment modules (each adds itself to the registry on import) are listed below.
from tfdefense.experiments import cdvae_table7  # noqa: E402, F401, I001
from tfdefense.experiments import cdvae_empirical, cdvae_detection  # noqa: E402, F401, I001
from tfdefense.experiments import cdvae_greybox, cdvae_gamma_sweep  # noqa: E402, F401, I001
from tfdefense.experiments import fm_table2  # noqa: E402, F401, I001
from tfdefense.experiments import fm_fig4  # noqa: E402, F401, I001
from tfdefense.experiments import cdvae_mixup_ablation  # noqa: E402, F401, I001
from tfdefense.experiments import certified_l2  # noqa: E402, F401, I001
