"""Every trained model's recipe per preset: paper against its sources, quick against its old training."""

import dataclasses
import json
import math
import zipfile

import keras
import numpy as np
import pytest

from tfdefense.augment import AugmentSpec, PaddedRandomCrop, RandAugmentMC
from tfdefense.experiments import Context
from tfdefense.experiments import cdvae_models as cm
from tfdefense.experiments import cdvae_table7 as t7
from tfdefense.experiments import fm_models as fm
from tfdefense.experiments import training_recipes as tr
from tfdefense.experiments.context import PRESETS
from tfdefense.experiments.dry_run import DRY_RUN_SETTINGS, SettingsReadLog
from tfdefense.experiments.reference_recipes import REFERENCES, SOURCES, TITLES, UNSTATED
from tfdefense.models import CDVAE
from tfdefense.optimizers import TorchSGD
from tfdefense.recipes import recipe_fields, recipe_table, unmarked_deviations
from tfdefense.schedules import EpochCurriculum, TorchCosineAnnealing, WarmupStepDecay

# ------------------------------------------------------------------ the sources, typed by hand
# Each value typed from its source (file and argument), independent of reference_recipes.py.
SOURCE_VALUES = {
    "wrn_cifar10": {  # bmsookim/wide-resnet.pytorch
        "augmentation.crop_padding": 4,  # main.py RandomCrop(32, padding=4)
        "augmentation.horizontal_flip": True,  # main.py RandomHorizontalFlip()
        "augmentation.randaugment_ops": 0,
        "normalization": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # config.py
        "optimizer": "torch_sgd",  # optim.SGD(..., weight_decay=5e-4): coupled decay
        "optimizer_kwargs.momentum": 0.9,
        "optimizer_kwargs.l2": 5e-4,
        "learning_rate": 0.1,  # --lr default
        "lr_schedule_kwargs.decay_rate": 0.2,  # config.py math.pow(0.2, optim_factor)
        "lr_schedule_kwargs.extra_decay_epochs": (61, 121, 161),  # epoch > 60 / 120 / 160
        "lr_schedule_kwargs.first_epoch": 1,  # start_epoch = 1
        "batch_size": 128,
        "epochs": 200,
    },
    "pgd_at_cifar10": {  # cassidylaidlaw/perceptual-advex adv_train.py, --optim sgd, cifar
        "optimizer_kwargs.l2": 2e-4,  # weight_decay = 2e-4 unless ImageNet
        "learning_rate": 0.1,
        "lr_schedule_kwargs.extra_decay_epochs": (75, 90, 100),  # lr_schedule '75,90,100'
        "lr_schedule_kwargs.first_epoch": 0,  # epochs from 0
        "warmup_epochs": 5,  # epoch < 5
        "clipvalue": 1.0,  # --clip_grad 1.0
        "batch_size": 100,  # --batch_size default
        "epochs": 100,  # num_epochs = 100
        "attack.eps": 8 / 255,
    },
    "cw_mnist_classifier": {  # carlini/nn_robust_attacks train_models.py
        "optimizer": "sgd",
        "optimizer_kwargs.momentum": 0.9,
        "optimizer_kwargs.nesterov": True,
        "learning_rate": 0.01,
        "lr_schedule": "inverse_time",  # SGD(decay=1e-6)
        "lr_schedule_kwargs.decay_rate": 1e-6,
        "batch_size": 16,  # train(..., batch_size=16)
        "epochs": 50,  # --nb_epochs 50
        "model.validation_split": 0.2,
    },
    "fm_dgmm": {"loss_weights.lkd": 0.1, "model.train_images": 20000},  # fm-defense.txt §IV-A
    "fm_combo_vae": {"loss_weights.tc": 40.0, "model.latent_codes": 20},  # §IV-A γ = 40, m = 20
    "magnet_mnist": {"batch_size": 256, "epochs": 100, "model.noise_std": 0.1},  # Trevillie/MagNet
    "wgan_gp_mnist": {  # kabkabm/defensegan default.yml, models/gan.py
        "learning_rate": 1e-4, "optimizer_kwargs.beta_1": 0.5, "optimizer_kwargs.beta_2": 0.9,
        "loss_weights.gp": 10.0, "batch_size": 50, "model.critic_steps": 5, "model.width": 64,
        "model.latent_dim": 128,
        "epochs": round(200_000 * 5 * 50 / 55_000),  # TRAIN_ITERS x CRITIC_ITERS x BATCH / MNIST
    },
    "cdvae_restricted_imagenet": {"optimizer_kwargs.weight_decay": 1e-6, "epochs": 60},  # §4
}


@pytest.mark.parametrize("name", sorted(SOURCE_VALUES))
def test_reference_recipes_hold_their_sources_values(name):
    fields = recipe_fields(REFERENCES[name])
    for key, value in SOURCE_VALUES[name].items():
        assert fields[key] == value, key


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_every_reference_field_has_a_source_and_a_title(name):
    fields = recipe_fields(REFERENCES[name])
    assert not [k for k in fields if not SOURCES[name].get(k)]
    assert not set(SOURCES[name]) - set(fields)  # no stale source
    assert TITLES[name]


# ------------------------------------------------------------------ paper: no unmarked deviation
PAPER_MODELS = [(p, m) for p in ("paper", "paper_imagenet") for m in tr.RECIPES[p]]


@pytest.mark.parametrize("preset, model", PAPER_MODELS)
def test_paper_differs_from_its_reference_only_where_a_reason_says_why(preset, model):
    ref = tr.MODELS[model].reference_for(preset)
    unmarked = unmarked_deviations(tr.recipe(preset, model), REFERENCES[ref], tr.deviations(preset, model),
                                   UNSTATED.get(ref, ()))
    assert unmarked == []


@pytest.mark.parametrize("preset, model", PAPER_MODELS)
def test_no_reason_is_stale(preset, model):
    """Each reason explains a row that differs (or that the source leaves unstated)."""
    rows = tr.table(preset, model)
    explained = {r.field for r in rows if r.why}
    for key in tr.DEVIATIONS[preset].get(model, {}):
        assert any(f == key or f.startswith(key + ".") for f in explained), key


def test_an_unmarked_change_of_paper_fails_the_check():
    ref = REFERENCES["cdvae_cifar10"]
    changed = dataclasses.replace(tr.recipe("paper", "cdvae"), mixup_alpha=1.0, epochs=299)
    assert unmarked_deviations(changed, ref, tr.deviations("paper", "cdvae")) == ["mixup_alpha", "epochs"]


def test_paper_trains_the_cdvae_and_cdvae_at_as_the_official_code():
    vae, at = tr.recipe("paper", "cdvae"), tr.recipe("paper", "table7_cdvae_at")
    assert vae.augmentation == AugmentSpec() and vae.mixup_alpha == 2.0
    assert vae.curricula["re"] == EpochCurriculum() and vae.lr_schedule == "torch_cosine"
    assert (vae.optimizer, vae.optimizer_kwargs["epsilon"], vae.batch_size, vae.epochs) == (
        "adamw", 1e-8, 256, 300)
    assert vae.loss_weights["kl"] == pytest.approx(0.2 / 3)  # --kl 0.2 on Σ/(3·latent)
    assert (at.optimizer, at.lr_schedule, at.warmup_epochs, at.clipvalue, at.batch_size) == (
        "torch_sgd", "warmup_step", 5, 1.0, 100)
    assert at.augmentation == AugmentSpec() and at.mixup_alpha == 0.0
    assert at.loss_weights["kl"] == pytest.approx(0.01 / 3)


# --------------------------------------------------------------------------- quick: unchanged
# The quick preset's training before the recipes, typed from the code it replaced
# (optimizer, learning rate, batch, epochs; no augmentation, mixup, schedule or clipping).
QUICK_BEFORE = {
    "classifier": ("adam", 1e-3, 64, 4),  # cdvae_models.train_classifier: Adam(1e-3)
    "part_classifier": ("adam", 1e-3, 64, 4),
    "cdvae": ("adamw", 1e-3, 64, 6),  # CDVAE.compile(): AdamW(1e-3, weight_decay=1e-6)
    "table7_normal": ("adam", 1e-3, 64, 2),
    "table7_cdvae": ("adamw", 1e-3, 64, 10),
    "table7_d_g": ("adam", 1e-3, 64, 1),
    "table7_cdvae_at": ("adamw", 1e-3, 64, 8),  # _optimizer(ctx) None: AdamW
    "table7_pgd_at": ("adam", 1e-3, 64, 8),  # PGDAdversarialTraining.compile(): Adam(1e-3)
    "fm_classifier": ("adam", 1e-3, 64, 5),
    "fm_dgmm": ("adam", 1e-3, 64, 10),
    "fm_combo_vae": ("adam", 1e-3, 64, 15),
    "fm_magnet": ("adam", 1e-2, 64, 20),
    "fm_wgan_gp": ("adam", 1e-3, 32, 15),
}


@pytest.mark.parametrize("model", sorted(QUICK_BEFORE))
def test_quick_recipes_are_the_training_before_them(model):
    r = tr.recipe("quick", model)
    assert (r.optimizer, r.learning_rate, r.batch_size, r.epochs) == QUICK_BEFORE[model]
    assert r.augmentation is None and r.mixup_alpha == 0.0 and not r.curricula
    assert r.lr_schedule == "constant" and r.clipnorm is None and r.clipvalue is None
    opt = r.build_optimizer(steps_per_epoch=10)
    expected = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW}[r.optimizer]
    assert type(opt) is expected and float(opt.learning_rate) == pytest.approx(r.learning_rate)
    # the official AdamW (CD-VAE utils/set.py) and Madry et al.'s Adam have 1e-8; FM's and the
    # plain classifiers' Adam keep Keras' default 1e-7
    official = r.optimizer == "adamw" or model == "table7_pgd_at"
    assert opt.epsilon == (1e-8 if official else 1e-7)
    if r.optimizer == "adamw":
        assert opt.weight_decay == 1e-6


def test_every_quick_difference_has_a_reason():
    for model in tr.RECIPES["quick"]:
        ref = tr.MODELS[model].reference_for("quick")
        assert unmarked_deviations(tr.recipe("quick", model), REFERENCES[ref], tr.deviations("quick", model),
                                   UNSTATED.get(ref, ())) == []


def _module_default(preset, key):
    for table in (PRESETS[preset], t7.SETTINGS.get(preset, {}), fm.SETTINGS.get(preset, {}),
                  cm.SETTINGS.get(preset, {})):
        if key in table:
            return table[key]
    return None


#: (preset, model, field) whose bound setting's default is not the recipe's value, and why it may
#: differ: the setting is shared by models whose recipes differ; the recipe holds when unset
SHARED = {
    ("paper", "table7_normal", "batch_size"): "at_batch_size is CD-VAE-AT's 100; WRN's 128",
    ("paper", "table7_cdvae", "batch_size"): "official CD-VAE batch 256",
    ("paper", "table7_pgd_at", "epochs"): "at_epochs is CD-VAE-AT's 82; Laidlaw's 100",
    ("paper", "table7_d_g", "epochs"): "not trained under paper (d_g_epochs 0)",
    ("paper", "table7_d_g", "batch_size"): "WRN's 128 (only with --set d_g_epochs=N)",
}


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_settings_defaults_are_the_recipes_values(preset):
    """The settings a recipe binds default to its values (the dry run plans with them)."""
    for model, spec in tr.MODELS.items():
        if model not in tr.RECIPES[preset]:
            continue
        for path, key in spec.keys(preset).items():
            default = _module_default(preset, key)
            if default is None or (preset, model, path) in SHARED:
                continue
            head, _, sub = path.partition(".")
            value = getattr(tr.recipe(preset, model), head)
            assert (value[sub] if sub else value) == default, (model, path, key)


def test_table7_optimizer_setting_names_the_cdvae_at_recipes_optimizer():
    for preset in ("quick", "paper"):
        assert t7.SETTINGS[preset]["optimizer"] == tr.recipe(preset, "table7_cdvae_at").optimizer


# ------------------------------------------------------------------------- binding and records
def test_a_set_setting_replaces_the_recipe_field_and_is_recorded(tmp_path):
    ctx = Context("paper", str(tmp_path), {"at_epochs": 3, "at_batch_size": 8})
    r = tr.recipe_for(ctx, "table7_pgd_at")
    assert (r.epochs, r.batch_size, r.optimizer) == (3, 8, "torch_sgd")
    entry = ctx.recipes["table7_pgd_at"]
    assert entry["overridden"]["epochs"] == ("at_epochs", 3, 100)
    why = {row.field: row.why for row in tr.table("paper", "table7_pgd_at", r, entry["overridden"])}
    assert why["epochs"] == "`at_epochs=3` set for this run (the paper recipe: 100)"
    # unset: the recipe's values, although table7's at_epochs default is CD-VAE-AT's 82
    assert tr.recipe_for(Context("paper", str(tmp_path)), "table7_pgd_at").epochs == 100


def test_loss_weights_are_replaced_and_unknown_ones_refused(tmp_path):
    ctx = Context("quick", str(tmp_path))
    assert tr.recipe_for(ctx, "cdvae", ce=2e-3).loss_weights["ce"] == 2e-3
    with pytest.raises(ValueError, match="tc"):
        tr.recipe_for(ctx, "cdvae", tc=1.0)


def test_the_dry_run_recorder_sees_the_epochs_and_batch_settings_a_recipe_reads(tmp_path):
    """record_fits attributes a fit to the last *epochs / *batch* setting read before it."""
    for model, epochs_key, batch_key in (("cdvae", "cdvae_epochs", "batch_size"),
                                         ("table7_cdvae_at", "at_epochs", "at_batch_size"),
                                         ("table7_normal", "clean_epochs", "at_batch_size"),
                                         ("fm_magnet", "fm_magnet_epochs", "fm_magnet_batch")):
        ctx = Context("paper", str(tmp_path), dict(DRY_RUN_SETTINGS))
        ctx.settings = SettingsReadLog(ctx.settings)
        r = tr.recipe_for(ctx, model)
        reads = ctx.settings.reads
        assert next(k for k in reversed(reads) if k.endswith("epochs")) == epochs_key
        assert next(k for k in reversed(reads) if "batch" in k) == batch_key
        assert r.epochs == DRY_RUN_SETTINGS[epochs_key] and r.batch_size == DRY_RUN_SETTINGS[batch_key]


# ------------------------------------------------------------------------------- fingerprints
def test_a_paper_recipe_change_changes_the_fingerprints_and_quick_keeps_its_own(tmp_path, monkeypatch):
    paper, quick = Context("paper", str(tmp_path / "p")), Context("quick", str(tmp_path / "q"))
    with paper.experiment("x", ("cifar10",)), quick.experiment("x", ("cifar10",)):
        before = (paper.fingerprint(), t7.training_settings(paper), quick.fingerprint())
        assert "recipes" not in json.loads(before[2])["depends_on"]  # quick: as before the recipes
        changed = dict(tr.RECIPES["paper"])
        changed["cdvae"] = dataclasses.replace(changed["cdvae"], mixup_alpha=1.0)
        monkeypatch.setitem(tr.RECIPES, "paper", changed)
        assert paper.fingerprint() != before[0]
        assert t7.training_settings(paper) != before[1]
        assert quick.fingerprint() == before[2]


def test_fm_caches_depend_on_fm_recipes_only(tmp_path, monkeypatch):
    ctx = Context("paper", str(tmp_path))
    with ctx.experiment("x", ("mnist",)):
        before = ctx.fingerprint()
        changed = dict(tr.RECIPES["paper"])
        changed["cdvae"] = dataclasses.replace(changed["cdvae"], epochs=1)
        monkeypatch.setitem(tr.RECIPES, "paper", changed)
        assert ctx.fingerprint() == before
        changed["fm_magnet"] = dataclasses.replace(changed["fm_magnet"], epochs=1)
        assert ctx.fingerprint() != before


# -------------------------------------------------------------------- training with a recipe
def _tiny_cdvae(**kwargs) -> CDVAE:
    return CDVAE.for_dataset("cifar10", latent_dim=4, width=4, classifier="small_cnn", seed=0, **kwargs)


def test_the_curriculum_changes_the_weight_a_compiled_fit_uses_at_epoch_100(tmp_path):
    """Keras epochs 98, 99 are the official epochs 99, 100: reconstruction weight 10, then 5.

    With β = γ = 0 and a zero learning rate the model's loss is w · reconstruction, so the
    epoch's loss over its reconstruction is the weight the traced train_step multiplied by.
    """
    x = np.random.default_rng(0).uniform(size=(16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 10
    model = _tiny_cdvae(beta=0.0, gamma=0.0)
    model.compile(keras.optimizers.SGD(0.0))
    recipe = dataclasses.replace(tr.recipe("paper", "cdvae"), augmentation=None, batch_size=8, epochs=100)
    history = model.fit(x, y, batch_size=8, epochs=100, initial_epoch=98, verbose=0,
                        callbacks=recipe.callbacks())
    used = np.array(history.history["loss"]) / np.array(history.history["reconstruction"])
    np.testing.assert_allclose(used, [10.0, 5.0], rtol=1e-5)
    assert history.history["re_weight"] == [10.0, 5.0]
    # a Python number could not follow: the callback refuses it
    model.reconstruction_weight = 1.0
    with pytest.raises(ValueError, match="variable"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=recipe.callbacks())


def test_the_reconstruction_weight_variable_keeps_config_and_old_files(tmp_path):
    model = _tiny_cdvae(reconstruction_weight=3.0)
    model.reconstruction_weight.assign(30.0)
    assert model.get_config()["reconstruction_weight"] == 3.0  # the constructor's value
    assert model.trainable_variables and all("reconstruction_weight" not in v.path
                                             for v in model.trainable_variables)
    model.load_own_variables({})  # a .keras file saved before the variable existed
    assert float(model.reconstruction_weight.numpy()) == 30.0


def test_a_paper_recipe_trains_through_the_augmented_pipeline_and_no_augmentation_is_saved(tmp_path):
    """One fit with the paper CD-VAE recipe at dry-run size: augmentation, mixup 2, the cosine
    schedule and the curriculum; the saved model holds no augmentation layer."""
    x = np.random.default_rng(1).uniform(size=(16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 10
    recipe = dataclasses.replace(tr.recipe("paper", "cdvae"), batch_size=8, epochs=2)
    model = _tiny_cdvae(mixup_alpha=recipe.mixup_alpha, reconstruction_weight=1.0)
    model.compile(recipe.build_optimizer(tr.steps_per_epoch(len(x), recipe)))
    history = tr.fit(model, x, y, recipe, seed=0, verbose=0, callbacks=[])
    assert history.history["re_weight"] == [10.0, 10.0]
    assert isinstance(model.optimizer._learning_rate, TorchCosineAnnealing)
    assert int(model.optimizer.iterations) == 4  # 2 epochs of ⌈16 / 8⌉ steps
    path = str(tmp_path / "m.keras")
    model.save(path)
    layers = list(keras.models.load_model(path)._flatten_layers())
    assert not any(isinstance(layer, RandAugmentMC | PaddedRandomCrop | keras.layers.RandomFlip)
                   for layer in layers)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "RandAugmentMC" not in config and "PaddedRandomCrop" not in config


def test_the_training_pipeline_is_seeded_augments_and_keeps_labels_with_their_images():
    # constant images carry their label: the centre pixel survives a 4-pixel crop and a flip
    y = np.arange(24) % 10
    x = np.broadcast_to((y / 10.0).astype("float32")[:, None, None, None], (24, 32, 32, 3)).copy()
    recipe = dataclasses.replace(tr.recipe("paper", "classifier"), batch_size=8)
    first = [(a.numpy(), b.numpy()) for a, b in tr.training_dataset(x, y, recipe, seed=3)]
    again = [(a.numpy(), b.numpy()) for a, b in tr.training_dataset(x, y, recipe, seed=3)]
    for (a, b), (c, d) in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    images = np.concatenate([a for a, _ in first])
    labels = np.concatenate([b for _, b in first])
    assert sorted(labels.tolist()) == sorted(y.tolist())  # each image once per epoch
    np.testing.assert_allclose(images[:, 16, 16, 0], labels / 10.0, atol=1e-6)
    assert (images == 0).any() and images.min() >= 0.0 and images.max() <= 1.0  # crops padded


def test_the_paper_schedules_run_with_a_dry_run_size():
    """One or two epochs of 3 steps (24 mock images, batch 8): each schedule gives a finite rate."""
    for model in ("classifier", "cdvae", "table7_cdvae_at", "table7_pgd_at", "fm_classifier"):
        r = tr.recipe("paper", model)
        opt = r.build_optimizer(tr.steps_per_epoch(24, dataclasses.replace(r, batch_size=8)))
        lr = opt._learning_rate
        lrs = [float(lr(s)) if callable(lr) else float(lr) for s in range(6)]
        assert all(math.isfinite(v) and v > 0 for v in lrs), model
    # the AT warm-up over 3 steps per epoch: (1 + step) / (5 · 3) of 0.1
    at = tr.recipe("paper", "table7_cdvae_at").build_optimizer(3)
    assert isinstance(at, TorchSGD) and isinstance(at._learning_rate, WarmupStepDecay)
    assert float(at._learning_rate(2)) == pytest.approx(0.1 * 3 / 15)


def test_the_classifier_recipe_steps_at_epochs_61_121_161():
    """bmsookim's learning_rate(0.1, epoch): 0.1 · 0.2^(#{60, 120, 160} < epoch), epochs from 1."""
    s = tr.recipe("paper", "classifier").build_optimizer(10)._learning_rate
    got = [float(s(10 * (e - 1))) for e in (1, 60, 61, 120, 121, 160, 161, 200)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.02, 0.02, 0.004, 0.004, 0.0008, 0.0008], rtol=1e-6)


def test_the_pgd_at_recipe_warms_up_and_steps_as_laidlaw():
    """adv_train.py: epochs from 0, warm-up (1 + it) / (5 · len) for epoch < 5, x0.1 at 75/90/100."""
    s = tr.recipe("paper", "table7_pgd_at").build_optimizer(10)._learning_rate
    got = [float(s(10 * e + i)) for e, i in ((0, 0), (4, 9), (5, 0), (74, 0), (75, 0), (90, 0), (99, 9))]
    np.testing.assert_allclose(got, [0.1 / 50, 0.1 * 50 / 50, 0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-6)


def test_the_fm_classifier_recipe_decays_as_keras_1():
    s = tr.recipe("paper", "fm_classifier").build_optimizer(10)._learning_rate
    assert float(s(1_000_000)) == pytest.approx(0.01 / 2.0)  # lr / (1 + 1e-6 · step)


# --------------------------------------------------------------------------------- the report
def test_the_report_shows_each_trained_models_recipe_table(tmp_path):
    from tfdefense.report import recipe_section, write_report

    ctx = Context("paper", str(tmp_path), {"at_epochs": 2})
    tr.recipe_for(ctx, "table7_cdvae_at")
    tr.recipe_for(ctx, "cdvae", ce=2.0)
    text = "\n".join(recipe_section(ctx))
    assert "### `cdvae`: CD-VAE" in text and "### `table7_cdvae_at`" in text
    assert "| loss_weights.ce | 0.2 | toolkits/disentangle_cifar.sh --ce 0.2" in text
    assert "| epochs | 150 | tools/adv_train_cifar.py:63 --epochs default 150 | 2 | `at_epochs=2` set" in text
    assert "UNMARKED" not in text
    files = write_report(ctx, [], [], 0.0)
    with open(files["results"]) as f:
        recipes = json.load(f)["recipes"]
    assert {r["field"]: r["ours"] for r in recipes["cdvae"]}["mixup_alpha"] == 2.0
    assert "## Training recipes" in open(files["report"]).read()


def test_recipe_table_unstated_fields_need_a_reason():
    ref, ours = REFERENCES["fm_dgmm"], tr.recipe("paper", "fm_dgmm")
    rows = {r.field: r for r in recipe_table(ours, ref, {}, unstated=UNSTATED["fm_dgmm"])}
    assert rows["optimizer"].official is None and rows["optimizer"].why == "UNMARKED"
    assert rows["loss_weights.lkd"].why == ""  # stated (λ_lkd = 0.1) and equal


def test_fitting_names_the_model_while_its_fit_runs():
    """What the dry run's recorder can read to plan a fit with its preset's recipe."""
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(tr.fitting())

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    recipe = dataclasses.replace(tr.recipe("quick", "classifier"), epochs=1)
    model.compile(recipe.build_optimizer(1), loss="sparse_categorical_crossentropy")
    x, y = np.zeros((4, 4), "float32"), np.zeros(4, "int64")
    tr.fit(model, x, y, recipe, seed=0, verbose=0, callbacks=[Probe()], model_key="classifier")
    assert seen == [("classifier", recipe)] and tr.fitting() is None
