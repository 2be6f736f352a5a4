"""The recipes our models are held against: the official CD-VAE code and the named sources.

Each trained model of the experiments (``training_recipes.MODELS``) names one reference
here: the official CD-VAE CIFAR-10 recipes (``tfdefense.recipes.OFFICIAL``), the training
script of the source a baseline follows, or FM-Defense's paper. ``SOURCES[name][field]``
says where each value comes from (file:line and argument, or paper section);
``UNSTATED[name]`` lists the fields (or field prefixes) the source does not state, which
the recipe table shows as "not stated" (so every value of ours there needs a reason).

Sources beyond the official CD-VAE code (each checked in its repository):

* ``wrn_cifar10``: bmsookim/wide-resnet.pytorch (``main.py``, ``config.py``), whose
  ``Wide_ResNet(depth, widen_factor, dropout_rate, num_classes)`` the official CD-VAE code
  copies (``Wide_ResNet(28, 10, 0.3, 10)``); the official repository has no classifier
  script, only a downloadable ``wide_resnet.pth`` "trained on clean data x" (README).
* ``pgd_at_cifar10``: Laidlaw et al. 2021, cassidylaidlaw/perceptual-advex ``adv_train.py``:
  CD-VAE Table 7's PGD-AT row is their "AT ℓ∞" model (86.8 / 49.0 / 19.2 / 4.8 / 54.5), and
  the official ``tools/adv_train_cifar.py`` is a modification of this script (the same SGD,
  5-epoch warm-up and ``clip_grad_value_(1.0)``).
* ``cw_mnist_classifier``: FM-Defense §IV-A trains its MNIST classifier "using the setting in
  [19]" (Carlini & Wagner; carlini/nn_robust_attacks ``train_models.py``, 99.4%).
* ``fm_dgmm``, ``fm_combo_vae``: fm-defense.txt (§III-D, §IV-A, Table I); it states the
  loss weights and the data, not the optimisation.
* ``magnet_mnist``: Meng & Chen 2017, Trevillie/MagNet ``train_defense.py`` and
  ``defensive_models.py`` (FM-Defense's MagNet baseline).
* ``wgan_gp_mnist``: Samangouei et al. 2018, kabkabm/defensegan ``models/gan.py`` and
  ``experiments/cfgs/gans/default.yml`` (FM-Defense's Defense-GAN baseline).
* ``cdvae_restricted_imagenet``, ``resnet50_restricted_imagenet``: CD-VAE §4 (no official
  ImageNet script).

Example:
    >>> REFERENCES["pgd_at_cifar10"].epochs, SOURCES["pgd_at_cifar10"]["epochs"][:40]
    (100, 'perceptual-advex adv_train.py: --num_epo')
    >>> "optimizer" in UNSTATED["fm_dgmm"]
    True
"""

from __future__ import annotations

from tfdefense.augment import AugmentSpec
from tfdefense.recipes import OFFICIAL, Recipe, recipe_fields
from tfdefense.recipes import SOURCES as OFFICIAL_SOURCES

__all__ = ["REFERENCES", "SOURCES", "UNSTATED", "TITLES", "CROP_FLIP"]

#: random crop (padding 4) + horizontal flip, nothing else
CROP_FLIP = AugmentSpec(crop_padding=4, horizontal_flip=True, randaugment_ops=0, cutout=0)
#: robustness / wide-resnet.pytorch CIFAR-10 statistics (std differs from the CD-VAE code's)
_CIFAR_STATS_0_2023 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))

_WRN = "bmsookim/wide-resnet.pytorch"
_PA = "perceptual-advex adv_train.py"
_CW = "carlini/nn_robust_attacks train_models.py"
_FM = "fm-defense.txt"
_MAG = "Trevillie/MagNet"
_DG = "kabkabm/defensegan"

REFERENCES: dict[str, Recipe] = {
    **OFFICIAL,
    "wrn_cifar10": Recipe(
        augmentation=CROP_FLIP, normalization=_CIFAR_STATS_0_2023, optimizer="torch_sgd",
        optimizer_kwargs={"momentum": 0.9, "l2": 5e-4}, learning_rate=0.1, lr_schedule="warmup_step",
        lr_schedule_kwargs={"decay_epochs": None, "decay_rate": 0.2, "extra_decay_epochs": (61, 121, 161),
                            "first_epoch": 1},
        batch_size=128, epochs=200, model={"architecture": "Wide_ResNet(28, 10, dropout 0.3)"},
    ),
    "pgd_at_cifar10": Recipe(
        augmentation=CROP_FLIP, normalization=_CIFAR_STATS_0_2023, optimizer="torch_sgd",
        optimizer_kwargs={"momentum": 0.9, "l2": 2e-4}, learning_rate=0.1, lr_schedule="warmup_step",
        lr_schedule_kwargs={"decay_epochs": None, "decay_rate": 0.1, "extra_decay_epochs": (75, 90, 100),
                            "first_epoch": 0},
        warmup_epochs=5, clipvalue=1.0, batch_size=100, epochs=100,
        model={"architecture": "ResNet-50 (robustness cifar_models)", "init": "random"},
        attack={"norm": "linf", "eps": 8 / 255, "steps": 10, "step_size": "eps / sqrt(steps)", "loss": "ce",
                "random_init": True},
    ),
    "cw_mnist_classifier": Recipe(
        optimizer="sgd", optimizer_kwargs={"momentum": 0.9, "nesterov": True}, learning_rate=0.01,
        lr_schedule="inverse_time", lr_schedule_kwargs={"decay_rate": 1e-6}, batch_size=16, epochs=50,
        model={"architecture": "conv 32-32-pool-64-64-pool, dense 200 (dropout 0.5) - 200 - 10",
               "validation_split": 0.2},
    ),
    "fm_dgmm": Recipe(loss_weights={"lkd": 0.1}, model={"train_images": 20000}),
    "fm_combo_vae": Recipe(loss_weights={"tc": 40.0}, model={"train_images": 20000, "latent_codes": 20}),
    "magnet_mnist": Recipe(
        optimizer="adam", learning_rate=1e-3, batch_size=256, epochs=100,
        model={"noise_std": 0.1, "activity_l2": 1e-9, "noise_draws": "once"},
    ),
    "wgan_gp_mnist": Recipe(
        optimizer="adam", optimizer_kwargs={"beta_1": 0.5, "beta_2": 0.9}, learning_rate=1e-4,
        loss_weights={"gp": 10.0}, batch_size=50, epochs=909,
        model={"critic_steps": 5, "width": 64, "latent_dim": 128},
    ),
    "cdvae_restricted_imagenet": Recipe(
        optimizer="adamw", optimizer_kwargs={"weight_decay": 1e-6}, loss_weights={"ce": 2.0, "kl": 0.1},
        epochs=60, model={"generator": "VQ-VAE", "classifier": "ResNet-50"},
    ),
    "resnet50_restricted_imagenet": Recipe(model={"architecture": "ResNet-50"}),
}  # fmt: skip

_AUG_CROP_FLIP = {
    "augmentation.randaugment_ops": "{f}: no RandAugment",
    "augmentation.randaugment_magnitude": "{f}: no RandAugment (AugmentSpec default, unused)",
    "augmentation.cutout": "{f}: no cutout",
}
_NOT_STATED = "not stated in " + _FM + " ({what})"

SOURCES: dict[str, dict[str, str]] = {
    **OFFICIAL_SOURCES,
    "wrn_cifar10": {
        "augmentation.crop_padding": f"{_WRN} main.py transform_train: RandomCrop(32, padding=4)",
        "augmentation.horizontal_flip": f"{_WRN} main.py transform_train: RandomHorizontalFlip()",
        **{k: v.format(f=f"{_WRN} main.py") for k, v in _AUG_CROP_FLIP.items()},
        "normalization": f"{_WRN} main.py Normalize(cf.mean['cifar10'], cf.std['cifar10']) "
        "(config.py: (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))",
        "mixup_alpha": f"{_WRN} main.py: no mixup",
        "optimizer": f"{_WRN} main.py train(): optim.SGD(..., momentum=0.9, weight_decay=5e-4) "
        "(coupled decay), built anew every epoch (its momentum buffer restarts each epoch; ours "
        "carries over)",
        "optimizer_kwargs.momentum": f"{_WRN} main.py momentum=0.9",
        "optimizer_kwargs.l2": f"{_WRN} main.py weight_decay=5e-4",
        "learning_rate": f"{_WRN} main.py --lr default 0.1",
        "lr_schedule": f"{_WRN} config.py learning_rate(init, epoch): init * 0.2 ** factor",
        "lr_schedule_kwargs.decay_epochs": f"{_WRN} config.py: drops at listed epochs only",
        "lr_schedule_kwargs.decay_rate": f"{_WRN} config.py math.pow(0.2, optim_factor)",
        "lr_schedule_kwargs.extra_decay_epochs": f"{_WRN} config.py epoch > 60 / > 120 / > 160",
        "lr_schedule_kwargs.first_epoch": f"{_WRN} config.py start_epoch = 1",
        "warmup_epochs": f"{_WRN}: no warm-up",
        "clipnorm": f"{_WRN}: no clipping",
        "clipvalue": f"{_WRN}: no clipping",
        "batch_size": f"{_WRN} config.py batch_size = 128",
        "epochs": f"{_WRN} config.py num_epochs = 200",
        "model.architecture": f"{_WRN} networks/wide_resnet.py, --depth 28 --widen_factor 10 --dropout "
        "0.3 defaults; the CD-VAE code's Wide_ResNet(28, 10, 0.3, 10)",
    },
    "pgd_at_cifar10": {
        "augmentation.crop_padding": f"{_PA} -> perceptual_advex/datasets.py robustness CIFAR: "
        "TRAIN_TRANSFORMS_DEFAULT(32) = RandomCrop(32, padding=4), RandomHorizontalFlip(), "
        "ColorJitter(.25, .25, .25), RandomRotation(2) (robustness/data_augmentation.py); the jitter "
        "and rotation have no AugmentSpec field and are not applied here",
        "augmentation.horizontal_flip": "robustness/data_augmentation.py RandomHorizontalFlip()",
        **{k: v.format(f="robustness/data_augmentation.py") for k, v in _AUG_CROP_FLIP.items()},
        "normalization": "robustness/datasets.py CIFAR mean (0.4914, 0.4822, 0.4465), std (0.2023, "
        "0.1994, 0.2010), applied inside the model (InputNormalize)",
        "mixup_alpha": f"{_PA}: no mixup",
        "optimizer": f"{_PA}: optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, "
        "weight_decay=2e-4) for CIFAR (--optim sgd default)",
        "optimizer_kwargs.momentum": f"{_PA}: momentum=0.9",
        "optimizer_kwargs.l2": f"{_PA}: weight_decay = 2e-4 unless ImageNet",
        "learning_rate": f"{_PA}: args.lr = 1e-1 for cifar",
        "lr_schedule": f"{_PA}: lr *= 0.1 for each lr_drop_epoch <= epoch; warm-up below",
        "lr_schedule_kwargs.decay_epochs": f"{_PA}: drops at listed epochs only",
        "lr_schedule_kwargs.decay_rate": f"{_PA}: lr *= 0.1",
        "lr_schedule_kwargs.extra_decay_epochs": f"{_PA}: args.lr_schedule = '75,90,100' for cifar",
        "lr_schedule_kwargs.first_epoch": f"{_PA}: for epoch in range(start_epoch, ...), start_epoch = 0",
        "warmup_epochs": f"{_PA}: if epoch < 5 and sgd and lr >= 0.1: lr = (iteration + 1) / "
        "(5 * len(train_loader)) * args.lr",
        "clipnorm": f"{_PA}: value clipping only",
        "clipvalue": f"{_PA}: --clip_grad default 1.0, nn.utils.clip_grad_value_",
        "batch_size": f"{_PA}: --batch_size default 100",
        "epochs": f"{_PA}: --num_epochs = 100 for cifar with sgd",
        "model.architecture": "Laidlaw et al. 2021 §5: ResNet-50 on CIFAR-10 (--arch resnet50)",
        "model.init": f"{_PA}: trained from scratch (no --checkpoint)",
        "attack.norm": f"{_PA} --attack \"LinfAttack(model, 'cifar', ...)\" (perceptual_advex/attacks.py)",
        "attack.eps": "perceptual_advex/attacks.py LinfAttack: bound 8/255 for cifar",
        "attack.steps": "not published for the AT ℓ∞ model (the README gives the PAT command, "
        "num_iterations=10)",
        "attack.step_size": "not published for the AT ℓ∞ model (UAR PGD, as the official CD-VAE "
        "AttackV2 copies it: eps / sqrt(iterations))",
        "attack.loss": "not published for the AT ℓ∞ model (cross-entropy is LinfAttack's default)",
        "attack.random_init": "not published for the AT ℓ∞ model",
    },
    "cw_mnist_classifier": {
        **{f"augmentation.{k}": f"{_CW}: no augmentation" for k in
           ("crop_padding", "horizontal_flip", "randaugment_ops", "randaugment_magnitude", "cutout")},
        "normalization": f"{_FM} §IV-A: 'We normalized the data between 0 and 1'",
        "mixup_alpha": f"{_CW}: no mixup",
        "optimizer": f"{_CW}: sgd = SGD(lr=0.01, decay=1e-6, momentum=0.9, nesterov=True)",
        "optimizer_kwargs.momentum": f"{_CW}: momentum=0.9",
        "optimizer_kwargs.nesterov": f"{_CW}: nesterov=True",
        "learning_rate": f"{_CW}: lr=0.01",
        "lr_schedule": f"{_CW}: decay=1e-6, Keras 1's lr / (1 + decay * iterations)",
        "lr_schedule_kwargs.decay_rate": f"{_CW}: decay=1e-6",
        "warmup_epochs": f"{_CW}: no warm-up",
        "clipnorm": f"{_CW}: no clipping",
        "clipvalue": f"{_CW}: no clipping",
        "batch_size": f"{_CW}: train(..., batch_size=16) default, main() passes none",
        "epochs": f"{_CW}: --nb_epochs default 50",
        "model.architecture": f"{_CW}: train(MNIST(), ..., [32, 32, 64, 64, 200, 200])",
        "model.validation_split": f"{_CW}: model.fit(..., validation_split=0.2)",
    },
    "fm_dgmm": {
        "loss_weights.lkd": f"{_FM} §IV-A 'λlkd = 0.1'",
        "model.train_images": f"{_FM} §IV-A: 20,000 clean examples train the combo-VAE",
    },
    "fm_combo_vae": {
        "loss_weights.tc": f"{_FM} §IV-A 'γ = 40'",
        "model.train_images": f"{_FM} §IV-A: 20,000 clean examples",
        "model.latent_codes": f"{_FM} §IV-A: 20-dimensional codes on MNIST (10 on FMNIST)",
    },
    "magnet_mnist": {
        "optimizer": f"{_MAG} defensive_models.py DenoisingAutoEncoder.train: optimizer='adam'",
        "learning_rate": "Keras' Adam default, 1e-3",
        "batch_size": f"{_MAG} defensive_models.py train(..., batch_size=256)",
        "epochs": f"{_MAG} train_defense.py epochs = 100",
        "model.noise_std": f"{_MAG} train_defense.py v_noise=0.1 (one noise draw for all epochs)",
        "model.activity_l2": f"{_MAG} train_defense.py reg_strength = 1e-9 (activity_regularizer)",
        "model.noise_draws": f"{_MAG} defensive_models.py train: noise = v_noise * np.random.normal(...) "
        "once, before model.fit(noisy_train_data, ...)",
    },
    "wgan_gp_mnist": {
        "optimizer": f"{_DG} models/gan.py wgan-gp: tf.train.AdamOptimizer(1e-4, beta1=0.5, beta2=0.9)",
        "optimizer_kwargs.beta_1": f"{_DG} models/gan.py beta1=0.5",
        "optimizer_kwargs.beta_2": f"{_DG} models/gan.py beta2=0.9",
        "learning_rate": f"{_DG} models/gan.py learning_rate=1e-4",
        "loss_weights.gp": f"{_DG} experiments/cfgs/gans/default.yml GRADIENT_PENALTY_LAMBDA: 10.0",
        "batch_size": f"{_DG} default.yml BATCH_SIZE: 50 (real images per critic update)",
        "epochs": f"{_DG} default.yml TRAIN_ITERS: 200000 generator updates of 5 critic batches of 50 "
        "= 909 passes over MNIST's 55,000 training images",
        "model.critic_steps": f"{_DG} experiments/cfgs/gans/mnist.yml CRITIC_ITERS: 5",
        "model.width": f"{_DG} default.yml NET_DIM: 64",
        "model.latent_dim": f"{_DG} default.yml LATENT_DIM: 128",
    },
    "cdvae_restricted_imagenet": {
        "optimizer": "CD-VAE §4: 'we use AdamW [12] with a weight decay of 1e-6'",
        "optimizer_kwargs.weight_decay": "CD-VAE §4: weight decay of 1e-6",
        "loss_weights.ce": "CD-VAE Fig. 4: the sweet spot γ = 2 (§4.3's grey-box defense: 2e-1)",
        "loss_weights.kl": "kai-wen-yang/CD-VAE#4 (authors): VQ latent loss weight 0.1",
        "epochs": "CD-VAE §4: 60 epochs on restricted ImageNet",
        "model.generator": "CD-VAE §4: VQ-VAE [38] as G",
        "model.classifier": "CD-VAE §4: ResNet-50 [19] as D",
    },
    "resnet50_restricted_imagenet": {
        "model.architecture": "CD-VAE §4.3: 'pre-trained WideResNet-28-10 (Resnet50)'",
    },
}  # fmt: skip

#: fields (or prefixes) each source leaves unstated; every such row of ours needs a reason
_OPTIMISATION = ("optimizer", "optimizer_kwargs", "learning_rate", "lr_schedule", "lr_schedule_kwargs",
                 "warmup_epochs", "clipnorm", "clipvalue", "batch_size", "epochs")
_DATA = ("augmentation", "normalization", "mixup_alpha")
UNSTATED: dict[str, frozenset[str]] = {
    "pgd_at_cifar10": frozenset({"attack.steps", "attack.step_size", "attack.loss", "attack.random_init"}),
    "fm_dgmm": frozenset(_OPTIMISATION + _DATA),
    "fm_combo_vae": frozenset(_OPTIMISATION + _DATA),
    "magnet_mnist": frozenset(_DATA + ("optimizer_kwargs", "lr_schedule", "lr_schedule_kwargs",
                                       "warmup_epochs", "clipnorm", "clipvalue")),
    "wgan_gp_mnist": frozenset(_DATA + ("lr_schedule", "lr_schedule_kwargs", "warmup_epochs",
                                        "clipnorm", "clipvalue")),
    "cdvae_restricted_imagenet": frozenset(
        _DATA + ("optimizer_kwargs.beta_1", "optimizer_kwargs.beta_2", "optimizer_kwargs.epsilon",
                 "learning_rate", "lr_schedule", "lr_schedule_kwargs", "warmup_epochs", "clipnorm",
                 "clipvalue", "batch_size")),
    "resnet50_restricted_imagenet": frozenset(_OPTIMISATION + _DATA),
}

#: the unstated fields' source text (so every row still says where to look)
for _name, _prefixes in UNSTATED.items():
    _text = (_NOT_STATED.format(what=_name) if _name.startswith("fm_")
             else f"not stated by the source ({_name})")
    for _field in recipe_fields(REFERENCES[_name]):
        if any(_field == p or _field.startswith(p + ".") for p in _prefixes):
            SOURCES[_name].setdefault(_field, _text)

#: one line per reference: what it is
TITLES: dict[str, str] = {
    "cdvae_cifar10": "official CD-VAE code, kai-wen-yang/CD-VAE tools/disentangle_cifar.py "
                     "(toolkits/disentangle_cifar.sh)",
    "cdvae_at_cifar10": "official CD-VAE code, kai-wen-yang/CD-VAE tools/adv_train_cifar.py "
                        "(toolkits/adv_train_cifar.sh)",
    "wrn_cifar10": "WRN-28-10 on clean CIFAR-10 as bmsookim/wide-resnet.pytorch trains it (the "
                   "Wide_ResNet the official CD-VAE code uses; the official repository has no "
                   "classifier script)",
    "pgd_at_cifar10": "PGD-AT as Laidlaw et al. 2021 (perceptual-advex adv_train.py) train the "
                      "'AT ℓ∞' model whose numbers CD-VAE Table 7 reprints",
    "cw_mnist_classifier": "FM-Defense §IV-A: the MNIST classifier 'using the setting in [19]' "
                           "(Carlini & Wagner, nn_robust_attacks train_models.py)",
    "fm_dgmm": "FM-Defense (fm-defense.txt §III-D, §IV-A): DGMM, stage 1 of the combo-VAE",
    "fm_combo_vae": "FM-Defense (fm-defense.txt §III-D, §IV-A, Table I): combo-VAE, stage 2",
    "magnet_mnist": "MagNet's MNIST autoencoders (Meng & Chen 2017, Trevillie/MagNet)",
    "wgan_gp_mnist": "Defense-GAN's WGAN-GP (Samangouei et al. 2018, kabkabm/defensegan)",
    "cdvae_restricted_imagenet": "CD-VAE §4 on restricted ImageNet (no official script)",
    "resnet50_restricted_imagenet": "CD-VAE §4.3's pre-trained ResNet-50 (training not stated)",
}
