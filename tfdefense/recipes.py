"""Training recipes as data: what a model is trained with, and where each value comes from.

A :class:`Recipe` holds augmentation, mixup, loss weights and their curriculum,
optimizer, learning-rate schedule with warm-up, clipping, batch and epochs.
:data:`OFFICIAL` holds the official CD-VAE CIFAR-10 recipes (kai-wen-yang/CD-VAE) and
:data:`SOURCES` the file, line and argument of every field, so a report can print
(field, official, source, ours, why) with :func:`recipe_table`.

Loss-weight names are the official arguments: ``re`` (reconstruction), ``ce`` (D(R(x))
cross-entropy), ``kl``, and for adversarial training ``cr``/``cg``. In
:class:`tfdefense.models.CDVAE` they are ``reconstruction_weight``, ``gamma`` and ``beta``,
but their reductions differ (see ``loss_reductions``): the official KL is summed and
divided by batch·3·latent, three times smaller per unit weight than a per-latent mean.

Example:
    >>> r = OFFICIAL["cdvae_cifar10"]
    >>> r.batch_size, r.epochs, r.mixup_alpha, SOURCES["cdvae_cifar10"]["mixup_alpha"]
    (256, 300, 2.0, 'tools/disentangle_cifar.py:237 --alpha default 2.0 (mixup_data, :112)')
    >>> opt = r.build_optimizer(steps_per_epoch=196)
    >>> type(opt).__name__, round(float(opt.learning_rate), 6)
    ('AdamW', 0.001)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import keras

from tfdefense.augment import AugmentSpec
from tfdefense.optimizers import TorchSGD
from tfdefense.schedules import CurriculumCallback, EpochCurriculum, TorchCosineAnnealing, WarmupStepDecay

__all__ = [
    "Recipe",
    "RecipeRow",
    "OFFICIAL",
    "SOURCES",
    "recipe_fields",
    "recipe_table",
    "unmarked_deviations",
]

OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "torch_sgd": TorchSGD,
}
SCHEDULES = ("constant", "torch_cosine", "warmup_step", "inverse_time")

#: model attribute a curriculum of each loss weight is written to (CDVAE's names)
DEFAULT_WEIGHT_ATTRS = {"re": "reconstruction_weight", "ce": "gamma", "kl": "beta"}

CIFAR10_NORMALIZATION = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
NO_AUGMENTATION = AugmentSpec(crop_padding=0, horizontal_flip=False, randaugment_ops=0, cutout=0)


@dataclass(frozen=True)
class Recipe:
    """How one model is trained. Mappings are read-only by convention (the dataclass is frozen).

    ``curricula[name]`` multiplies ``loss_weights[name]`` by epoch; ``lr_schedule`` is one of
    ``"constant"``, ``"torch_cosine"`` (:class:`TorchCosineAnnealing`), ``"warmup_step"``
    (:class:`WarmupStepDecay`, with ``warmup_epochs``) or ``"inverse_time"`` (Keras 1's
    ``SGD(decay=d)``: ``lr / (1 + d·step)``, ``lr_schedule_kwargs={"decay_rate": d}``),
    parameterised by ``lr_schedule_kwargs``.
    ``model`` and ``attack`` hold architecture and training-attack settings for the table.
    """

    augmentation: AugmentSpec | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    mixup_alpha: float = 0.0
    loss_weights: Mapping[str, float] = field(default_factory=dict)
    loss_reductions: Mapping[str, str] = field(default_factory=dict)
    curricula: Mapping[str, EpochCurriculum] = field(default_factory=dict)
    optimizer: str = "adamw"
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    lr_schedule_kwargs: Mapping[str, Any] = field(default_factory=dict)
    warmup_epochs: int = 0
    clipnorm: float | None = None
    clipvalue: float | None = None
    batch_size: int = 128
    epochs: int = 1
    model: Mapping[str, Any] = field(default_factory=dict)
    attack: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_epochs and self.lr_schedule != "warmup_step":
            raise ValueError(
                f"warmup_epochs: only the 'warmup_step' schedule warms up, got {self.lr_schedule!r}"
            )
        unknown = set(self.curricula) - set(self.loss_weights)
        if unknown:
            raise ValueError(f"curricula: no loss weight named {sorted(unknown)}")
        for name in ("batch_size", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)!r}")

    def learning_rate_schedule(
        self, steps_per_epoch: int
    ) -> float | keras.optimizers.schedules.LearningRateSchedule:
        """The learning rate as the optimizer takes it (a float when constant)."""
        kwargs = dict(self.lr_schedule_kwargs)
        if self.lr_schedule == "torch_cosine":
            return TorchCosineAnnealing(steps_per_epoch, initial_learning_rate=self.learning_rate, **kwargs)
        if self.lr_schedule == "warmup_step":
            return WarmupStepDecay(
                steps_per_epoch,
                initial_learning_rate=self.learning_rate,
                warmup_epochs=self.warmup_epochs,
                **kwargs,
            )
        if self.lr_schedule == "inverse_time":
            return keras.optimizers.schedules.InverseTimeDecay(
                self.learning_rate, decay_steps=1, decay_rate=kwargs["decay_rate"])
        return self.learning_rate

    def build_optimizer(self, steps_per_epoch: int) -> keras.optimizers.Optimizer:
        """A fresh optimizer with this recipe's schedule, clipping and kwargs."""
        return OPTIMIZERS[self.optimizer](
            learning_rate=self.learning_rate_schedule(steps_per_epoch),
            clipnorm=self.clipnorm,
            clipvalue=self.clipvalue,
            **dict(self.optimizer_kwargs),
        )

    def callbacks(self, variables: Mapping[str, Any] | None = None) -> list[keras.callbacks.Callback]:
        """One :class:`CurriculumCallback` per curriculum, writing ``weight × multiplier``.

        ``variables`` maps a loss-weight name to a variable or model attribute name;
        unnamed ones use :data:`DEFAULT_WEIGHT_ATTRS` (``re`` → ``reconstruction_weight``).
        """
        variables = {**DEFAULT_WEIGHT_ATTRS, **(variables or {})}
        return [
            CurriculumCallback(
                curriculum.scaled(self.loss_weights[name]),
                variables.get(name, name),
                log_name=f"{name}_weight",
            )
            for name, curriculum in self.curricula.items()
        ]


# ------------------------------------------------------------------------ official
_DIS = "tools/disentangle_cifar.py"
_DIS_SH = "toolkits/disentangle_cifar.sh"
_AT = "tools/adv_train_cifar.py"
_AT_SH = "toolkits/adv_train_cifar.sh"
_RA = "utils/randaugment4fixmatch.py"

OFFICIAL: dict[str, Recipe] = {
    "cdvae_cifar10": Recipe(
        augmentation=AugmentSpec(crop_padding=4, horizontal_flip=True, randaugment_ops=2,
                                 randaugment_magnitude=10, cutout=16),
        normalization=CIFAR10_NORMALIZATION,
        mixup_alpha=2.0,
        loss_weights={"re": 1.0, "ce": 0.2, "kl": 0.2},
        loss_reductions={"re": "mean over pixels and batch", "ce": "mean over batch, mixed with lambda",
                         "kl": "sum / (batch*3*latent)"},
        curricula={"re": EpochCurriculum(((100, 10.0), (200, 5.0), (None, 1.0)), first_epoch=1)},
        optimizer="adamw",
        optimizer_kwargs={"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8, "weight_decay": 1e-6},
        learning_rate=1e-3,
        lr_schedule="torch_cosine",
        lr_schedule_kwargs={"t_max": 50, "eta_min": 2e-4},
        warmup_epochs=0,
        batch_size=256,
        epochs=300,
        model={"latent_dim": 2048, "feature_width": 32},
    ),
    "cdvae_at_cifar10": Recipe(
        augmentation=AugmentSpec(crop_padding=4, horizontal_flip=True, randaugment_ops=2,
                                 randaugment_magnitude=10, cutout=16),
        normalization=CIFAR10_NORMALIZATION,
        mixup_alpha=0.0,
        loss_weights={"re": 1.0, "kl": 0.01, "cr": 0.1, "cg": 0.1},
        loss_reductions={"re": "mean; target is the clean input, G sees the adversarial one",
                         "kl": "sum / (batch*3*latent)",
                         "cr": "mean CE of D(R(x')) against argmax G-classifier(G(x')) over all "
                               "classes, every sample (argmax from a no-grad eval-mode pass)",
                         "cg": "mean CE of G-classifier(G(x')) over examples with margin < 8 "
                               "(margin from that eval-mode pass)"},
        optimizer="torch_sgd",
        optimizer_kwargs={"momentum": 0.9, "l2": 2e-4},
        learning_rate=0.1,
        lr_schedule="warmup_step",
        lr_schedule_kwargs={"decay_epochs": 30, "decay_rate": 0.1, "extra_decay_epochs": (80,),
                            "first_epoch": 1},
        warmup_epochs=5,
        clipvalue=1.0,
        batch_size=100,
        epochs=150,
        model={"latent_dim": 2048, "feature_width": 32, "classifiers": "Wide_ResNet(28, 10, dropout 0.3)",
               "objective": "official"},
        attack={"norm": "linf", "eps": 8 / 255, "steps": 10, "step_size": "eps / sqrt(steps)",
                "loss": "margin (kappa 10)", "random_init": True, "only_correct": True, "margin": 8.0},
    ),
}  # fmt: skip

_AUG_SOURCES = {
    "augmentation.crop_padding": "{f}:{crop} transforms.RandomCrop(32, padding=4)",
    "augmentation.horizontal_flip": "{f}:{flip} transforms.RandomHorizontalFlip()",
    "augmentation.randaugment_ops": "{f}:{ra} RandAugmentMC(n=2, m=10); " + _RA + ":214 random.choices(k=n)",
    "augmentation.randaugment_magnitude": "{f}:{ra} RandAugmentMC(n=2, m=10); " + _RA + ":216 randint(1, m)",
    "augmentation.cutout": _RA + ":219 CutoutAbs(img, 16), inside RandAugmentMC.__call__",
}

SOURCES: dict[str, dict[str, str]] = {
    "cdvae_cifar10": {
        **{k: v.format(f=_DIS, crop=172, flip=173, ra=174) for k, v in _AUG_SOURCES.items()},
        "normalization": f"{_DIS}:176 transforms.Normalize((0.4914, 0.4822, 0.4465), "
        "(0.2470, 0.2435, 0.2616))",
        "mixup_alpha": f"{_DIS}:237 --alpha default 2.0 (mixup_data, :112)",
        "loss_weights.re": f"{_DIS}:244 --re default 1.0; loss = re*l1 + ... (:135)",
        "loss_weights.ce": f"{_DIS_SH} --ce 0.2 ({_DIS}:248 default 0.2)",
        "loss_weights.kl": f"{_DIS}:247 --kl default 0.2",
        "loss_reductions.re": f"{_DIS}:130 l1 = F.mse_loss(xi, x)",
        "loss_reductions.ce": f"{_DIS}:131 lam * F.cross_entropy(out, y[0]) "
        "+ (1. - lam) * F.cross_entropy(out, y[1])",
        "loss_reductions.kl": f"{_DIS}:133-134 -0.5*torch.sum(...); l3 /= bs * 3 * args.dim",
        "curricula.re": f"{_DIS}:120-127 10x if epoch < 100, 5x if < 200 (1-based epoch, :214); "
        f"--curriculum default True (:245), not passed by {_DIS_SH}",
        "optimizer": f"{_DIS}:201-203 AdamW (utils/set.py's own AdamW: decay scaled by lr*bias correction)",
        "optimizer_kwargs.beta_1": f"{_DIS}:203 betas=(0.9, 0.999)",
        "optimizer_kwargs.beta_2": f"{_DIS}:203 betas=(0.9, 0.999)",
        "optimizer_kwargs.epsilon": "utils/set.py AdamW(eps=1e-8) default",
        "optimizer_kwargs.weight_decay": f"{_DIS}:203 weight_decay=1.e-6",
        "learning_rate": f"{_DIS}:163 learning_rate = 1.e-3",
        "lr_schedule": f"{_DIS}:205-207 CosineAnnealingLR (--optim cosine, {_DIS_SH}); "
        "scheduler.step() once per epoch (:219)",
        "lr_schedule_kwargs.t_max": f"{_DIS}:206 T_max=50 (the --T argument is unused)",
        "lr_schedule_kwargs.eta_min": f"{_DIS}:164 learning_rate_min = 2.e-4 (eta_min, :207)",
        "warmup_epochs": f"{_DIS}: no warm-up",
        "clipnorm": f"{_DIS}:136-137 no clipping",
        "clipvalue": f"{_DIS}:136-137 no clipping",
        "batch_size": f"{_DIS}:239 --batch_size default 256",
        "epochs": f"{_DIS}:238 --epochs default 300",
        "model.latent_dim": f"{_DIS_SH} --dim 2048 ({_DIS}:240)",
        "model.feature_width": f"{_DIS_SH} --fdim 32 ({_DIS}:242)",
    },
    "cdvae_at_cifar10": {
        **{k: v.format(f=_AT, crop=86, flip=87, ra=88) for k, v in _AUG_SOURCES.items()},
        "normalization": f"{_AT}:23 normalize = CIFARNORMALIZE(32), applied before the VAE "
        "(utils/normalize.py:5-6)",
        "mixup_alpha": f"{_AT}: no mixup",
        "loss_weights.re": f"{_AT}:67 --re default 1.0",
        "loss_weights.kl": f"{_AT}:68 --kl default 0.01",
        "loss_weights.cr": f"{_AT_SH} --cr 0.1 ({_AT}:69 default 1.0)",
        "loss_weights.cg": f"{_AT_SH} --cg 0.1 ({_AT}:70 default 1.0)",
        "loss_reductions.re": f"{_AT}:189 l1 = F.mse_loss(gx, normalize(inputs)), "
        "gx = vae(normalize(adv_inputs)) (:185)",
        "loss_reductions.kl": f"{_AT}:194-195 -0.5*torch.sum(...); l3 /= bs * 3 * args.dim",
        "loss_reductions.cr": f"{_AT}:191 F.cross_entropy(logits_r, adv_logits_g.argmax(1)); "
        "adv_logits_g from the no-grad eval-mode pass (:173-178)",
        "loss_reductions.cg": f"{_AT}:178,192 F.cross_entropy(logits_g[incorrect], labels[incorrect]), "
        "Incorrect_Logits(..., args.margin)",
        "optimizer": f"{_AT}:137-141 optim.SGD (coupled weight decay)",
        "optimizer_kwargs.momentum": f"{_AT}:140 momentum=0.9",
        "optimizer_kwargs.l2": f"{_AT}:141 weight_decay=2e-4",
        "learning_rate": f"{_AT_SH} --lr 0.1 ({_AT}:58 default 0.1)",
        "lr_schedule": f"{_AT}:37-50 adjust_learning_rate, called every iteration (:225)",
        "lr_schedule_kwargs.decay_epochs": f"{_AT}:38 factor = epoch // 30",
        "lr_schedule_kwargs.decay_rate": f"{_AT}:43 lr = args.lr * (0.1 ** factor)",
        "lr_schedule_kwargs.extra_decay_epochs": f"{_AT}:40-41 if epoch >= 80: factor += 1",
        "lr_schedule_kwargs.first_epoch": f"{_AT}:221 start_epoch = 1",
        "warmup_epochs": f"{_AT}:46-47 if epoch < 5: lr *= (1 + iteration) / (5 * len_epoch)",
        "clipnorm": f"{_AT}:199-201 value clipping only",
        "clipvalue": f"{_AT}:73 --clip_grad default 1.0; clip_grad_value_ (:199-201)",
        "batch_size": f"{_AT_SH} --batch_size 100 ({_AT}:61 default 128)",
        "epochs": f"{_AT}:63 --epochs default 150",
        "model.latent_dim": f"{_AT}:64 --dim default 2048",
        "model.feature_width": f"{_AT}:65 --fdim default 32",
        "model.classifiers": f"{_AT}:105-106 Wide_ResNet(28, 10, 0.3, 10)",
        "model.objective": f"{_AT}:173-197 run_iter: margin set (< c) and D(R(x'))'s target (argmax over "
        "all classes) from a no-grad eval-mode pass, rec, KL and CE_r over every sample, CE_g over the "
        "margin set, no clean term (AdversarialCDVAE objective='official'; CD-VAE §3.4 instead masks "
        "every x' term to Eq. 8's set (<= c), targets argmax_{y'!=y} and mixes in the clean CD-VAE loss: "
        "objective='paper'. Not one objective under another normalisation: they weigh different samples; "
        "bench/equivalence_official.py B2o shows 'official' equals this loss)",
        "attack.norm": f"{_AT}:147 AttackV2(model_g, vae, num_iterations=10, loss='margin'); "
        "advex/attacks.py AttackV2(norm='linf') default",
        "attack.eps": "advex/attacks.py AttackV2(eps_max=8/255) default",
        "attack.steps": f"{_AT}:147 num_iterations=10",
        "attack.step_size": "advex/attacks.py AttackV2: step_size = eps_max / (num_iterations ** 0.5)",
        "attack.loss": f"{_AT}:147 loss='margin'; advex/attacks.py MarginLoss(kappa=10)",
        "attack.random_init": "advex/attacks.py AttackV2(rand_init=True) default",
        "attack.only_correct": f"{_AT}:168-172 attacks only examples G's classifier gets right",
        "attack.margin": f"{_AT}:66 --margin default 8.0 (Incorrect_Logits, :178)",
    },
}  # fmt: skip


# -------------------------------------------------------------------------- tables
class RecipeRow(NamedTuple):
    field: str
    official: Any
    source: str
    ours: Any
    why: str


def _plain(value: Any) -> Any:
    if isinstance(value, EpochCurriculum):
        return value.pieces
    if isinstance(value, list):
        return tuple(value)
    return value


def recipe_fields(recipe: Recipe) -> dict[str, Any]:
    """The recipe flattened to ``{"field" | "mapping.key": value}`` (augmentation too)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if f.name == "augmentation":  # None = every step off
            value = dataclasses.asdict(value if value is not None else NO_AUGMENTATION)
        if isinstance(value, Mapping):
            for key, item in value.items():
                out[f"{f.name}.{key}"] = _plain(item)
        else:
            out[f.name] = _plain(value)
    return out


def _reason(deviations: Mapping[str, str], key: str) -> str | None:
    """``deviations[key]``, else the reason of its nearest prefix (``"augmentation"`` covers
    ``"augmentation.cutout"``)."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        reason = deviations.get(".".join(parts[:n]))
        if reason:
            return reason
    return None


def _is_unstated(key: str, unstated: Collection[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:n]) in unstated for n in range(1, len(parts) + 1))


def recipe_table(
    ours: Recipe,
    official: Recipe,
    deviations: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    unstated: Collection[str] = (),
) -> list[RecipeRow]:
    """Rows (field, official value, source, ours, why) over the fields of both recipes.

    ``why`` is the reason ``deviations`` gives the field (or its nearest prefix, e.g.
    ``"augmentation"`` for every augmentation field) where the values differ ("" where they
    agree, and "UNMARKED" for a difference nobody explained). ``unstated`` names fields (or
    prefixes) the source does not state: their official value is ``None``, so ours always
    needs a reason. ``sources`` defaults to the :data:`SOURCES` entry of the
    :data:`OFFICIAL` recipe equal to ``official``.

    Example:
        >>> official = OFFICIAL["cdvae_cifar10"]
        >>> ours = dataclasses.replace(official, epochs=3)
        >>> row = recipe_table(ours, official, {"epochs": "quick preset"})
        >>> [(r.official, r.source, r.ours, r.why) for r in row if r.field == "epochs"]
        [(300, 'tools/disentangle_cifar.py:238 --epochs default 300', 3, 'quick preset')]
        >>> row = recipe_table(ours, official, {"epochs": "paper silent"}, unstated=("epochs",))
        >>> [(r.official, r.why) for r in row if r.field == "epochs"]
        [(None, 'paper silent')]
    """
    deviations = deviations or {}
    if sources is None:
        name = next((k for k, v in OFFICIAL.items() if v == official), None)
        sources = SOURCES.get(name, {}) if name else {}
    a, b = recipe_fields(official), recipe_fields(ours)
    rows = []
    for key in list(a) + [k for k in b if k not in a]:
        off = None if _is_unstated(key, unstated) else a.get(key)
        our = b.get(key)
        why = "" if off == our and not _is_unstated(key, unstated) else _reason(deviations, key) or "UNMARKED"
        rows.append(RecipeRow(key, off, sources.get(key, ""), our, why))
    return rows


def unmarked_deviations(
    ours: Recipe, official: Recipe, deviations: Mapping[str, str], unstated: Collection[str] = ()
) -> list[str]:
    """Fields where ``ours`` differs from ``official`` (or the source is silent) without a
    reason in ``deviations``."""
    rows = recipe_table(ours, official, deviations, sources={}, unstated=unstated)
    return [r.field for r in rows if r.why == "UNMARKED"]


def to_markdown(rows: list[RecipeRow]) -> str:
    """The rows as a Markdown table for the report."""
    lines = ["| field | official | source | ours | why |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r.field, "—" if r.official is None else repr(r.official), r.source,
                 "—" if r.ours is None else repr(r.ours), r.why]  # fmt: skip
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
