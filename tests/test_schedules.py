"""Official CD-VAE learning rates and curricula, hand-computed from kai-wen-yang/CD-VAE."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.optimizers import TorchSGD
from tfdefense.schedules import CurriculumCallback, EpochCurriculum, TorchCosineAnnealing, WarmupStepDecay

# CIFAR-10 has 50,000 training images; toolkits/adv_train_cifar.sh runs --batch_size 100.
AT_STEPS = 500


def at_lr(epoch: int, batch: int = 0) -> float:
    """The AT schedule at the official 1-based ``epoch`` and batch index within it."""
    return float(WarmupStepDecay(AT_STEPS)((epoch - 1) * AT_STEPS + batch))


# tools/adv_train_cifar.py:37-47 with epoch counted from 1 (:221) and the global iteration:
#   factor = epoch // 30 (+1 from epoch 80); lr = 0.1 * 0.1**factor
#   epoch < 5: lr *= (1 + iteration) / (5 * 500)
@pytest.mark.parametrize(
    "epoch, batch, expected",
    [
        (1, 0, 0.1 * 1 / 2500),  # 4e-5: iteration 0
        (1, 499, 0.1 * 500 / 2500),  # 0.02: last iteration of epoch 1
        (4, 0, 0.1 * 1501 / 2500),  # 0.06004: iteration 1500
        (4, 499, 0.1 * 2000 / 2500),  # 0.08: warm-up ends at 80 %, epoch 4 is the last with epoch < 5
        (5, 0, 0.1),  # 5 // 30 = 0, no warm-up: jumps from 0.08 to 0.1
        (29, 499, 0.1),  # 29 // 30 = 0
        (30, 0, 0.01),  # 30 // 30 = 1
        (79, 0, 0.001),  # 79 // 30 = 2
        (80, 0, 0.0001),  # 80 // 30 = 2, +1 from epoch 80 -> 3
        (90, 0, 1e-5),  # 3 + 1
        (150, 0, 1e-7),  # 150 // 30 = 5, +1 -> 6: the last official epoch
        (150, 499, 1e-7),
    ],
)
def test_official_at_learning_rate(epoch, batch, expected):
    assert at_lr(epoch, batch) == pytest.approx(expected, rel=1e-6)


# CosineAnnealingLR(T_max=50, eta_min=2e-4) on lr 1e-3, stepped once per epoch
# (tools/disentangle_cifar.py:206-219): lr(e) = 2e-4 + 8e-4 * (1 + cos(pi e / 50)) / 2,
# e = scheduler epoch = Keras epoch (from 0) = official epoch - 1.
@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0, 1e-3),  # cos 0 = 1
        (25, 6e-4),  # cos(pi/2) = 0 -> 2e-4 + 4e-4
        (50, 2e-4),  # cos(pi) = -1 -> eta_min
        (51, 2.0078931e-4),  # 2e-4 + 4e-4 * (1 - cos(0.02 pi)) = 2e-4 + 4e-4 * 0.0019733: rising again
        (100, 1e-3),  # cos(2 pi) = 1: back to the initial rate, no restart needed
        (150, 2e-4),
    ],
)
def test_torch_cosine_annealing(epoch, expected):
    steps = 196  # ceil(50,000 / 256)
    s = TorchCosineAnnealing(steps)
    assert float(s(epoch * steps)) == pytest.approx(expected, rel=1e-6)
    assert float(s(epoch * steps + steps - 1)) == pytest.approx(expected, rel=1e-6)  # constant in an epoch


def test_cosine_matches_pytorch_recursive_form():
    """PyTorch's CosineAnnealingLR.get_lr recursion (torch/optim/lr_scheduler.py), written out."""
    base, eta_min, t_max = 1e-3, 2e-4, 50
    s = TorchCosineAnnealing(1, base, t_max, eta_min)
    lr, got, want = base, [], []
    for e in range(301):
        if e > 0:
            if (e - 1 - t_max) % (2 * t_max) == 0:
                lr = lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
            else:
                ratio = (1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max))
                lr = ratio * (lr - eta_min) + eta_min
        want.append(lr)
        got.append(float(s(e)))
    np.testing.assert_allclose(got, want, rtol=1e-5)


# tools/disentangle_cifar.py:120-127 on the 1-based epoch: 10 x --re below 100, 5 x below 200, then 1 x.
@pytest.mark.parametrize(
    "epoch, expected", [(1, 10.0), (99, 10.0), (100, 5.0), (199, 5.0), (200, 1.0), (300, 1.0)]
)
def test_official_reconstruction_curriculum(epoch, expected):
    assert EpochCurriculum()(epoch) == expected


def test_curriculum_keras_epochs_are_official_minus_one():
    c = EpochCurriculum()
    assert [c.for_keras_epoch(e) for e in (0, 98, 99, 198, 199)] == [10.0, 10.0, 5.0, 5.0, 1.0]
    assert c.scaled(0.5)(1) == 5.0


@pytest.mark.parametrize(
    "pieces", [((100, 1.0),), ((200, 1.0), (100, 2.0), (None, 3.0)), ((None, 1.0), (None, 2.0))]
)
def test_curriculum_rejects_bad_pieces(pieces):
    with pytest.raises(ValueError, match="pieces"):
        EpochCurriculum(pieces)


class WeightedModel(keras.Model):
    """Reports the weight its compiled train_step sees, so History shows what the callback set."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)
        self.recon_weight = keras.Variable(0.0, trainable=False, name="recon_weight")
        self.plain_weight = 1.0
        self.seen = keras.metrics.Mean(name="seen")

    def call(self, x):
        return self.dense(x)

    def train_step(self, data):
        x, _ = data
        with tf.GradientTape() as tape:
            loss = self.recon_weight * tf.reduce_mean(tf.square(self(x)))
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        self.seen.reset_state()
        self.seen.update_state(self.recon_weight)
        return {"seen": self.seen.result()}

    @property
    def metrics(self):
        return [self.seen]


def _fit(callback, epochs=4):
    model = WeightedModel()
    model.compile(optimizer="sgd")
    x = np.ones((4, 2), "float32")
    return model, model.fit(x, x[:, :1], batch_size=4, epochs=epochs, verbose=0, callbacks=[callback])


def test_curriculum_callback_drives_a_compiled_train_step():
    # official epochs 1, 2, 3, 4 are Keras epochs 0..3: 10 below 2, 5 below 3, then 1
    curriculum = EpochCurriculum(((2, 10.0), (3, 5.0), (None, 1.0)), first_epoch=1)
    model, history = _fit(CurriculumCallback(curriculum, "recon_weight"))
    assert history.history["seen"] == [10.0, 5.0, 1.0, 1.0]
    assert history.history["recon_weight"] == [10.0, 5.0, 1.0, 1.0]
    assert float(model.recon_weight.numpy()) == 1.0


def test_curriculum_callback_takes_a_variable():
    v = keras.Variable(0.0, trainable=False)
    cb = CurriculumCallback(EpochCurriculum(), v)
    cb.on_epoch_begin(99)
    assert float(v.numpy()) == 5.0


def test_curriculum_callback_refuses_a_python_number():
    with pytest.raises(ValueError, match="plain_weight"):
        _fit(CurriculumCallback(EpochCurriculum(), "plain_weight"), epochs=1)
    with pytest.raises(ValueError, match="variable_or_attr"):
        CurriculumCallback(EpochCurriculum(), 1.0)


@pytest.mark.parametrize(
    "schedule",
    [
        TorchCosineAnnealing(7, initial_learning_rate=3e-3, t_max=5, eta_min=1e-4),
        WarmupStepDecay(7, initial_learning_rate=0.2, warmup_epochs=2, extra_decay_epochs=(3, 4)),
    ],
)
def test_schedule_config_round_trip(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    steps = [0, 6, 7, 20, 40, 70]
    assert [float(restored(s)) for s in steps] == [float(schedule(s)) for s in steps]


def test_curriculum_config_round_trip():
    c = EpochCurriculum(((3, 2.0), (None, 0.5)), first_epoch=0)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(c))
    assert restored == c and restored(2) == 2.0 and restored(3) == 0.5


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.AdamW(TorchCosineAnnealing(2, t_max=1), weight_decay=1e-6, epsilon=1e-8),
        lambda: TorchSGD(WarmupStepDecay(2), momentum=0.9, l2=2e-4, clipvalue=1.0),
    ],
)
def test_optimizer_with_schedule_saves_in_a_keras_file(tmp_path, make_optimizer):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=make_optimizer(), loss="mse")
    x = np.ones((4, 2), "float32")
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0)  # 2 steps
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    schedule, restored = model.optimizer._learning_rate, loaded.optimizer._learning_rate
    assert type(restored) is type(schedule) and restored.get_config() == schedule.get_config()
    assert type(loaded.optimizer) is type(model.optimizer)
    assert int(loaded.optimizer.iterations.numpy()) == 2
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(schedule(2)), rel=1e-6)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_step_decay_without_a_period_drops_only_at_the_listed_epochs():
    # bmsookim/wide-resnet.pytorch: 0.1, x0.2 from epochs 61, 121, 161 (counted from 1), no
    # warm-up, no periodic decay: epoch 60 -> 0.1, 61 -> 0.02, 121 -> 0.004, 161 -> 0.0008
    s = WarmupStepDecay(10, initial_learning_rate=0.1, warmup_epochs=0, decay_epochs=None,
                        decay_rate=0.2, extra_decay_epochs=(61, 121, 161))
    lrs = [float(s((epoch - 1) * 10)) for epoch in (1, 60, 61, 121, 161, 200)]
    assert lrs == pytest.approx([0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008], rel=1e-6)
    assert WarmupStepDecay.from_config(s.get_config()).decay_epochs is None
