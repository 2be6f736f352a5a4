"""Official recipes held against values typed from kai-wen-yang/CD-VAE, and the recipe table."""

import dataclasses

import keras
import numpy as np
import pytest

from tfdefense.augment import AugmentSpec
from tfdefense.optimizers import TorchSGD
from tfdefense.recipes import (
    OFFICIAL,
    SOURCES,
    Recipe,
    recipe_fields,
    recipe_table,
    to_markdown,
    unmarked_deviations,
)
from tfdefense.schedules import CurriculumCallback, TorchCosineAnnealing, WarmupStepDecay

# Typed from the official code (file:line or argument), independent of tfdefense/recipes.py.
CDVAE = {
    "augmentation.crop_padding": 4,  # tools/disentangle_cifar.py:172 RandomCrop(32, padding=4)
    "augmentation.horizontal_flip": True,  # :173 RandomHorizontalFlip()
    "augmentation.randaugment_ops": 2,  # :174 RandAugmentMC(n=2, m=10)
    "augmentation.randaugment_magnitude": 10,  # :174
    "augmentation.cutout": 16,  # utils/randaugment4fixmatch.py:219 CutoutAbs(img, 16)
    "normalization": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # :176
    "mixup_alpha": 2.0,  # :237 --alpha default
    "loss_weights.re": 1.0,  # :244 --re default
    "loss_weights.ce": 0.2,  # toolkits/disentangle_cifar.sh --ce 0.2
    "loss_weights.kl": 0.2,  # :247 --kl default
    "curricula.re": ((100, 10.0), (200, 5.0), (None, 1.0)),  # :120-127
    "optimizer": "adamw",  # :201 AdamW
    "optimizer_kwargs.beta_1": 0.9,  # :203 betas=(0.9, 0.999)
    "optimizer_kwargs.beta_2": 0.999,
    "optimizer_kwargs.epsilon": 1e-8,  # utils/set.py AdamW eps default
    "optimizer_kwargs.weight_decay": 1e-6,  # :203
    "learning_rate": 1e-3,  # :163
    "lr_schedule": "torch_cosine",  # :205-207 CosineAnnealingLR, --optim cosine
    "lr_schedule_kwargs.t_max": 50,  # :206
    "lr_schedule_kwargs.eta_min": 2e-4,  # :164
    "warmup_epochs": 0,
    "clipnorm": None,
    "clipvalue": None,
    "batch_size": 256,  # :239
    "epochs": 300,  # :238
    "model.latent_dim": 2048,  # toolkits/disentangle_cifar.sh --dim 2048
    "model.feature_width": 32,  # toolkits/disentangle_cifar.sh --fdim 32
}
CDVAE_AT = {
    "augmentation.crop_padding": 4,  # tools/adv_train_cifar.py:86
    "augmentation.horizontal_flip": True,  # :87
    "augmentation.randaugment_ops": 2,  # :88
    "augmentation.randaugment_magnitude": 10,  # :88
    "augmentation.cutout": 16,  # utils/randaugment4fixmatch.py:219
    "normalization": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # :23 CIFARNORMALIZE
    "mixup_alpha": 0.0,
    "loss_weights.re": 1.0,  # :67
    "loss_weights.kl": 0.01,  # :68 --kl default 0.01
    "loss_weights.cr": 0.1,  # toolkits/adv_train_cifar.sh --cr 0.1
    "loss_weights.cg": 0.1,  # toolkits/adv_train_cifar.sh --cg 0.1
    "optimizer": "torch_sgd",  # :137 optim.SGD
    "optimizer_kwargs.momentum": 0.9,  # :140
    "optimizer_kwargs.l2": 2e-4,  # :141 weight_decay=2e-4 (coupled)
    "learning_rate": 0.1,  # toolkits/adv_train_cifar.sh --lr 0.1
    "lr_schedule": "warmup_step",  # :37-50 adjust_learning_rate
    "lr_schedule_kwargs.decay_epochs": 30,  # :38
    "lr_schedule_kwargs.decay_rate": 0.1,  # :43
    "lr_schedule_kwargs.extra_decay_epochs": (80,),  # :40-41
    "lr_schedule_kwargs.first_epoch": 1,  # :221
    "warmup_epochs": 5,  # :46-47
    "clipnorm": None,
    "clipvalue": 1.0,  # :73 --clip_grad, clip_grad_value_ :199-201
    "batch_size": 100,  # toolkits/adv_train_cifar.sh --batch_size 100
    "epochs": 150,  # :63
    "model.latent_dim": 2048,  # :64
    "model.feature_width": 32,  # :65
    "attack.eps": 8 / 255,  # advex/attacks.py AttackV2(eps_max=8/255)
    "attack.steps": 10,  # :147 num_iterations=10
    "attack.margin": 8.0,  # :66 --margin
    "model.objective": "official",  # :173-197 run_iter's composition (AdversarialCDVAE objective)
}


@pytest.mark.parametrize("name, expected", [("cdvae_cifar10", CDVAE), ("cdvae_at_cifar10", CDVAE_AT)])
def test_official_recipes_hold_the_official_values(name, expected):
    fields = recipe_fields(OFFICIAL[name])
    for key, value in expected.items():
        assert fields[key] == value, key


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_every_official_field_has_a_source(name):
    fields = recipe_fields(OFFICIAL[name])
    missing = [k for k in fields if not SOURCES[name].get(k)]
    assert not missing
    assert not set(SOURCES[name]) - set(fields)  # no stale sources


def test_cdvae_optimizer_and_schedule():
    opt = OFFICIAL["cdvae_cifar10"].build_optimizer(steps_per_epoch=196)
    assert isinstance(opt, keras.optimizers.AdamW)
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.weight_decay) == (0.9, 0.999, 1e-8, 1e-6)
    assert opt.clipvalue is None and opt.clipnorm is None
    schedule = opt._learning_rate
    assert isinstance(schedule, TorchCosineAnnealing)
    assert float(schedule(50 * 196)) == pytest.approx(2e-4)  # the floor at scheduler epoch 50


def test_cdvae_at_optimizer_and_schedule():
    opt = OFFICIAL["cdvae_at_cifar10"].build_optimizer(steps_per_epoch=500)
    assert isinstance(opt, TorchSGD)
    assert (opt.momentum, opt.l2, opt.clipvalue) == (0.9, 2e-4, 1.0)
    schedule = opt._learning_rate
    assert isinstance(schedule, WarmupStepDecay)
    assert float(schedule(0)) == pytest.approx(0.1 / 2500)  # (1 + 0) / (5 * 500) of 0.1
    assert float(schedule(2000)) == pytest.approx(0.1)  # official epoch 5


def test_curriculum_callback_writes_weight_times_multiplier():
    (cb,) = OFFICIAL["cdvae_cifar10"].callbacks()
    assert isinstance(cb, CurriculumCallback) and cb.variable_or_attr == "reconstruction_weight"
    v = keras.Variable(0.0, trainable=False)
    (cb,) = dataclasses.replace(
        OFFICIAL["cdvae_cifar10"], loss_weights={"re": 0.5, "ce": 0.2, "kl": 0.2}
    ).callbacks({"re": v})
    # Keras epochs 0, 99, 199 are official epochs 1, 100, 200: 10x, 5x, 1x of --re 0.5
    values = []
    for epoch in (0, 99, 199):
        cb.on_epoch_begin(epoch)
        values.append(float(v.numpy()))
    assert values == [5.0, 2.5, 0.5]
    assert OFFICIAL["cdvae_at_cifar10"].callbacks() == []


def test_recipe_table_marks_each_difference():
    official = OFFICIAL["cdvae_cifar10"]
    ours = dataclasses.replace(official, epochs=3, batch_size=64, augmentation=None)
    rows = {r.field: r for r in recipe_table(ours, official, {"epochs": "quick preset"})}
    assert rows["epochs"][1:] == (
        300,
        "tools/disentangle_cifar.py:238 --epochs default 300",
        3,
        "quick preset",
    )
    assert rows["batch_size"].why == "UNMARKED"
    assert rows["augmentation.cutout"][1::2] == (16, 0)
    assert rows["learning_rate"].why == ""
    assert unmarked_deviations(ours, official, {"epochs": "quick preset"}) == [
        "augmentation.crop_padding",
        "augmentation.horizontal_flip",
        "augmentation.randaugment_ops",
        "augmentation.cutout",
        "batch_size",
    ]
    assert unmarked_deviations(official, official, {}) == []
    table = to_markdown(list(rows.values()))
    assert table.splitlines()[0] == "| field | official | source | ours | why |"
    assert (
        "| epochs | 300 | tools/disentangle_cifar.py:238 --epochs default 300 | 3 | quick preset |" in table
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"warmup_epochs": 5}, "warmup_epochs"),
        ({"curricula": {"re": OFFICIAL["cdvae_cifar10"].curricula["re"]}}, "curricula"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_recipe_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**kwargs)


def test_recipe_augmentation_spec_is_the_augment_default():
    assert OFFICIAL["cdvae_cifar10"].augmentation == AugmentSpec()


# ------------------------------------------------------------------- TorchSGD
def _steps(opt, grads, w0=1.0):
    w = keras.Variable([w0])
    out = []
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor([g])], [w])
        out.append(float(w.numpy()[0]))
    return out


def test_torch_sgd_matches_pytorch_update():
    # torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.1), w = 1, g = 0.5 twice:
    # d1 = 0.5 + 0.1 * 1 = 0.6, buf = 0.6, w = 1 - 0.06 = 0.94
    # d2 = 0.5 + 0.1 * 0.94 = 0.594, buf = 0.9 * 0.6 + 0.594 = 1.134, w = 0.94 - 0.1134 = 0.8266
    got = _steps(TorchSGD(learning_rate=0.1, momentum=0.9, l2=0.1), [0.5, 0.5])
    np.testing.assert_allclose(got, [0.94, 0.8266], rtol=1e-6)
    # Keras SGD's decoupled decay is a different optimizer: w = 1 - 0.1*0.5 - 0.1*0.1*1 = 0.94 at step 1,
    # then the decay skips the momentum buffer
    keras_sgd = _steps(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.1), [0.5, 0.5])
    assert keras_sgd[1] != pytest.approx(0.8266, rel=1e-4)


def test_torch_sgd_clips_before_adding_the_decay():
    # clip_grad_value_(1.0) then weight_decay: d = clip(5) + 0.1 * 1 = 1.1, w = 1 - 0.1 * 1.1 = 0.89
    got = _steps(TorchSGD(learning_rate=0.1, l2=0.1, clipvalue=1.0), [5.0])
    np.testing.assert_allclose(got, [0.89], rtol=1e-6)


def test_torch_sgd_refuses_decoupled_decay():
    with pytest.raises(ValueError, match="weight_decay"):
        TorchSGD(weight_decay=1e-4)
