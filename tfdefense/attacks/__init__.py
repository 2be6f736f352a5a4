"""Attacks and the robustness-evaluation harness.

``get_attack(name, **params)`` builds any attack; ``attack.generate(x, y)``
runs it against a callable images in [0, 1] -> logits. ``bpda``/``eot`` make
whole defenses attackable; ``presets`` holds the papers' attack settings;
``AdversarialSet`` caches generated examples; ``DetectorAwarePGD`` attacks a
whole ``Defense``, classifier and detector together; ``evaluate_robustness``
scores a model or defense under a list of attacks (for a defense by default
the adaptive evaluation: worst case per norm, a RobustBench-style claim).

Example:
    >>> from tfdefense.attacks import available_attacks
    >>> "pgd_linf" in available_attacks()
    True
"""

from tfdefense.attacks.adaptive import bpda, eot
from tfdefense.attacks.adversarial_set import AdversarialSet, data_fingerprint, model_fingerprint
from tfdefense.attacks.apgd import APGD, APGDTargeted
from tfdefense.attacks.autoattack import AutoAttack, AutoAttackRun
from tfdefense.attacks.base import Attack, available_attacks, get_attack
from tfdefense.attacks.cw_linf import CWPGD
from tfdefense.attacks.detector_aware import DetectorAwarePGD
from tfdefense.attacks.fab import FAB
from tfdefense.attacks.foolbox_attacks import CWL2, DeepFool
from tfdefense.attacks.iterative import BIM, FGSM, MIM, PGD
from tfdefense.attacks.jpeg import JPEGLinf
from tfdefense.attacks.presets import PRESETS, get_preset, preset_params
from tfdefense.attacks.recolor import ReColor
from tfdefense.attacks.robustness import (
    AttackResult,
    RobustnessResult,
    evaluate_robustness,
    threat_norm,
)
from tfdefense.attacks.spsa import SPSA
from tfdefense.attacks.square import Square
from tfdefense.attacks.stadv import StAdv

__all__ = [
    "APGD",
    "APGDTargeted",
    "AdversarialSet",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "AutoAttackRun",
    "BIM",
    "CWL2",
    "CWPGD",
    "DeepFool",
    "DetectorAwarePGD",
    "FAB",
    "FGSM",
    "JPEGLinf",
    "MIM",
    "PGD",
    "PRESETS",
    "ReColor",
    "RobustnessResult",
    "SPSA",
    "Square",
    "StAdv",
    "available_attacks",
    "bpda",
    "data_fingerprint",
    "eot",
    "evaluate_robustness",
    "get_attack",
    "get_preset",
    "model_fingerprint",
    "preset_params",
    "threat_norm",
]
