"""AdversarialCDVAE: CD-VAE's white-box adversarial training (§3.4, Eq. 7–10) in ``train_step``.

A CD-VAE (VAE G, classifier D on R(x) = x − G(x)) plus D_G, a classifier on
G(x); the defended prediction is D_G(G(x)) (``call``). Every training batch,
in one compiled graph:

1. **Craft x′ (Eq. 7)** against the whole pipeline D_G(G(·)): Linf PGD on the
   Carlini-Wagner margin ``min(max_{j≠y} Z_j − Z_y, κ)`` (``perturbation.margin``,
   the same function the attacks layer uses), uniform random start, ``steps``
   steps of eps/√steps, only on the samples D_G(G(x)) classifies right
   (official ``tools/adv_train_cifar.py``: eps 8/255, 10 steps, κ = 10; the
   networks in inference mode while attacking).
2. **Select (Eq. 8)** the samples within the margin c of D_G(G(x′)) (c = 8, the
   official ``--margin`` default; its README uses 20).
3. **Adversarial loss (Eq. 9–10)**: L_G(x′) + γ·L_D with
   L_D = CE(D_G(G(x′)), y) + CE(D(R(x′)), t). L_G reconstructs x′ (Eq. 9) or, with
   ``reconstruction_target="clean"``, pulls G(x′) towards the clean x as the official
   code does (``F.mse_loss(gx, normalize(inputs))``).

Steps 2–3 and the clean term are composed in one of two ways, ``objective``:

* ``"paper"`` (default): CD-VAE §3.4 as written. m = 1[Z_y − max_{y′≠y} Z_{y′} ≤ c] on
  the D_G(G(x′)) logits of the loss pass itself (Eq. 8), t = argmax_{y′≠y} of those logits
  (Eq. 10: always a wrong class), every x′ term masked to the margin set, plus the clean
  CD-VAE loss (Eq. 1–3, ``CDVAE.compute_losses``, ``clean_weight`` 1: "mix the original
  CD-VAE training on clean images with the above adversarial training"). Per batch of N:
  loss = mean_i [clean_weight · L_clean(x_i) + m_i · (L_G(x′_i) + γ L_D(x′_i))], i.e.
  Eq. 8's conditional expectation weighted by the in-margin fraction (the form that
  stays exact under ``tf.distribute``).
* ``"official"``: what kai-wen-yang/CD-VAE ``tools/adv_train_cifar.py`` ``run_iter``
  trains (@0c92c65). A separate no-gradient pass in inference mode (posterior mean
  here, running BN statistics, no dropout; :173-178) gives D_G(G(x′)) logits Z; the
  margin set is m = 1[Z_y − max_{y′≠y} Z_{y′} < c] (``Incorrect_Logits``, :26-34, strict)
  and the target of D(R(x′)) is t = argmax over *all* classes of Z (:191: y itself where
  D_G is still right). Then, from the training-mode pass (:181-187),
  loss = re·mean_i rec_i + γ·mean_i CE_r,i + γ·(Σ_i m_i CE_g,i)/(Σ_i m_i) + β·mean_i KL_i
  (:189-197; cr = cg = γ): reconstruction, KL and CE_r over every sample, CE_g averaged
  over the in-margin samples only, and no clean term (``clean_weight`` 0). An empty
  margin set makes the official CE_g a NaN (mean of nothing); here it contributes 0.
  Under ``tf.distribute`` the in-margin count is summed over replicas, as the official
  ``DataParallel`` computes the loss on the gathered batch.

``bench/equivalence_official.py`` checks both against a PyTorch rebuild of the official
script on one batch: ``"official"`` equals its loss, ``"paper"`` differs as explained there.

Start from a pre-trained CD-VAE with ``AdversarialCDVAE.from_cdvae``.

Example:
    >>> import numpy as np
    >>> from tfdefense import models, nets
    >>> base = models.CDVAE.for_dataset("mnist_5k", latent_dim=4, width=4)
    >>> d_g = nets.small_cnn((28, 28, 1), 10, width=4, dense_units=8)
    >>> model = models.AdversarialCDVAE.from_cdvae(base, d_g, eps=0.3, attack_steps=2)
    >>> model.compile()
    >>> x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    >>> history = model.fit(x, np.arange(8) % 10, epochs=1, verbose=0)
    >>> "in_margin" in history.history
    True
    >>> official = models.AdversarialCDVAE.from_cdvae(base, d_g, objective="official")
    >>> official.clean_weight
    0.0
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from tfdefense.models import vae_losses
from tfdefense.models.adversarial_losses import (  # noqa: F401 (re-exported)
    disentangling_loss,
    global_count,
    margin_to_wrong_class,
    most_likely_wrong_class,
    official_objective,
    official_selection,
)
from tfdefense.models.cdvae import CDVAE
from tfdefense.perturbation import iterative_attack
from tfdefense.validation import check_number, check_positive_int

RECONSTRUCTION_TARGETS = ("adversarial", "clean")
#: how the adversarial terms and the clean term are composed (module docstring)
OBJECTIVES = ("paper", "official")

# Keras runs ``train_step`` without AutoGraph; the attack's ``tf.range`` loop needs it, so the
# attack graph is its own (inlined) ``tf.function``.
_attack_graph = tf.function(iterative_attack, autograph=True)
_SUBNETS = ("encoder", "decoder", "classifier")


@keras.saving.register_keras_serializable(package="tfdefense")
class AdversarialCDVAE(CDVAE):
    """CD-VAE with D_G on G(x), adversarially trained by Eq. 7–10 inside ``train_step``.

    ``objective`` picks the paper's composition (default) or the official script's
    (module docstring).

    ``call(x)`` returns D_G(G(x))'s logits, the defended prediction;
    ``residual_logits(x)`` gives D(R(x))'s.

    Args:
        encoder, decoder, classifier: the CD-VAE's networks (``CDVAE``); D is
            ``classifier``.
        generated_classifier: functional model D_G, images (G(x), pixel scale)
            → logits over the same classes as D.
        eps: Linf budget of the training attack; 8/255 on CIFAR-10 (official
            ``AttackV2`` default); 0.3 is the MNIST scaling (Madry et al. 2018).
        attack_steps: PGD steps per batch; 10 (official ``num_iterations=10``).
        attack_step_size: step; ``None`` is eps/√steps (official).
        kappa: cap κ of the margin loss the attack maximises; 10 (official
            ``MarginLoss(kappa=10)``).
        margin: c of Eq. 8; 8 (official ``--margin`` default; its README uses 20).
        objective: ``"paper"`` (CD-VAE §3.4, Eq. 8–10 as written, plus the clean
            loss) or ``"official"`` (``tools/adv_train_cifar.py:173-197``): how the margin
            set, the target of D(R(x′)) and the terms are composed (module docstring).
        clean_weight: weight of the clean CD-VAE loss mixed in; ``None`` is the
            objective's (1 for ``"paper"``, the paper's "mix"; 0 for ``"official"``, whose
            script trains on x′ only). With 0 and ``"official"`` the clean batch runs
            in inference mode, for the metrics only (its BN statistics stay x′'s, as
            the official script's).
        reconstruction_target: what L_G reconstructs from x′: ``"adversarial"``
            x′ (Eq. 9) or ``"clean"`` x (official code's pull of G(x′) to x; the
            Table 7 experiment uses it).
        attack_only_correct: craft x′ only where D_G(G(x)) is right, keep x
            elsewhere (official ``to_attack``).
        **kwargs: ``CDVAE`` arguments (beta, gamma, normalization, seed, ...). The
            official script trains with a far weaker KL than pre-training (``--kl 0.01``
            on Σ KL / (3·dim), i.e. ``beta=0.01 / 3`` here, against 0.2): the Table 7
            experiment passes that β so G(x′) can keep the detail D_G needs.
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        classifier: keras.Model,
        generated_classifier: keras.Model,
        eps: float = 8 / 255,
        attack_steps: int = 10,
        attack_step_size: float | None = None,
        kappa: float = 10.0,
        margin: float = 8.0,
        clean_weight: float | None = None,
        reconstruction_target: str = "adversarial",
        attack_only_correct: bool = True,
        objective: str = "paper",
        **kwargs,
    ):
        super().__init__(encoder, decoder, classifier, **kwargs)
        self.generated_classifier = generated_classifier
        self.eps = eps
        self.attack_steps = attack_steps
        self.attack_step_size = attack_step_size
        self.kappa = kappa
        self.margin = margin
        self.objective = objective
        if clean_weight is None:
            clean_weight = 0.0 if objective == "official" else 1.0
        self.clean_weight = clean_weight
        self.reconstruction_target = reconstruction_target
        self.attack_only_correct = attack_only_correct
        self._check_adversarial_params()
        mean = keras.metrics.Mean
        self.adversarial_loss_tracker = mean(name="adversarial_loss")
        self.adversarial_reconstruction_tracker = mean(name="adversarial_reconstruction")
        self.adversarial_kl_tracker = mean(name="adversarial_kl")
        self.ce_generated_tracker = mean(name="ce_generated")
        self.ce_residual_tracker = mean(name="ce_residual")
        self.in_margin_tracker = mean(name="in_margin")
        self.generated_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="generated_accuracy")
        self.adversarial_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="adversarial_accuracy")

    def _check_adversarial_params(self) -> None:
        check_number(self.eps, "eps", low=0.0, high=1.0, low_inclusive=False)
        check_positive_int(self.attack_steps, "attack_steps")
        if self.attack_step_size is not None:
            check_number(self.attack_step_size, "attack_step_size", low=0.0, low_inclusive=False)
        check_number(self.kappa, "kappa", low=0.0, low_inclusive=False)
        check_number(self.margin, "margin", low=0.0)
        check_number(self.clean_weight, "clean_weight", low=0.0)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {self.objective!r}")
        if self.reconstruction_target not in RECONSTRUCTION_TARGETS:
            raise ValueError(f"reconstruction_target: expected one of {RECONSTRUCTION_TARGETS}, "
                             f"got {self.reconstruction_target!r}")
        if not isinstance(self.attack_only_correct, bool):
            raise ValueError(f"attack_only_correct: expected True or False, "
                             f"got {self.attack_only_correct!r}")
        d_g = self.generated_classifier
        if not isinstance(d_g, keras.Model):
            raise ValueError(f"generated_classifier: expected a keras.Model, got {d_g!r}")
        if tuple(d_g.input_shape[1:]) != self.input_shape_:
            raise ValueError(f"generated_classifier: expected input shape {self.input_shape_} "
                             f"(G(x)'s), got {tuple(d_g.input_shape[1:])}")
        if tuple(d_g.output_shape[1:]) != (self.num_classes,):
            raise ValueError(f"generated_classifier: expected output shape ({self.num_classes},) "
                             f"(D's number of classes), got {tuple(d_g.output_shape[1:])}")

    @property
    def step_size(self) -> float:
        """The PGD step: ``attack_step_size`` or eps/√steps."""
        if self.attack_step_size is not None:
            return float(self.attack_step_size)
        return self.eps / math.sqrt(self.attack_steps)

    # ---------------------------------------------------------- construction
    @classmethod
    def from_cdvae(cls, cdvae: CDVAE, generated_classifier: keras.Model, **kwargs: Any):
        """Start from a pre-trained ``CDVAE``: copies of its networks, weights and settings.

        ``kwargs`` override the CD-VAE's settings and set the adversarial ones.
        ``generated_classifier`` is used as given (the official code starts D_G
        from a classifier pre-trained on clean images).
        """
        if not isinstance(cdvae, CDVAE):
            raise ValueError(f"cdvae: expected a tfdefense.models.CDVAE, got {type(cdvae).__name__}")
        nets = {name: keras.models.clone_model(getattr(cdvae, name)) for name in _SUBNETS}
        settings = {key: value for key, value in cdvae.get_config().items()
                    if key in ("beta", "gamma", "reconstruction_weight", "classifier_input",
                               "mixup_alpha", "normalization_mean", "normalization_std", "seed")}
        model = cls(**nets, generated_classifier=generated_classifier, **{**settings, **kwargs})
        model.load_cdvae_weights(cdvae)
        return model

    def load_cdvae_weights(self, cdvae: CDVAE) -> None:
        """Copy a CD-VAE's encoder, decoder and D weights; ``ValueError`` if architectures differ."""
        if not isinstance(cdvae, CDVAE):
            raise ValueError(f"cdvae: expected a tfdefense.models.CDVAE, got {type(cdvae).__name__}")
        for name in _SUBNETS:
            ours = [tuple(w.shape) for w in getattr(self, name).weights]
            theirs = [tuple(w.shape) for w in getattr(cdvae, name).weights]
            if ours != theirs:
                raise ValueError(
                    f"cdvae: starting weights of another architecture: its {name} has weight "
                    f"shapes {theirs[:4]}{'...' if len(theirs) > 4 else ''} ({len(theirs)} "
                    f"tensors), this model's {name} expects {ours[:4]}"
                    f"{'...' if len(ours) > 4 else ''} ({len(ours)} tensors)")
        for name in _SUBNETS:
            getattr(self, name).set_weights(getattr(cdvae, name).get_weights())

    # --------------------------------------------------------------- forward
    def defended_logits(self, x, training: bool = False, sample: bool | None = None):
        """D_G(G(x)): the prediction the white-box defense makes."""
        x = tf.cast(x, tf.float32)
        g = self.generate(x, training=training, sample=sample)
        return self.generated_classifier(g, training=training)

    def residual_logits(self, x, training: bool = False):
        """D(R(x)): the CD-VAE classifier's logits (``CDVAE.call``)."""
        return super().call(x, training=training)

    def call(self, x, training: bool = False):
        """Logits of D_G(G(x)), the defended prediction."""
        return self.defended_logits(x, training=training)

    def craft(self, x, y, seed: tf.Tensor | None = None) -> tf.Tensor:
        """Eq. 7: x′ by margin-loss Linf PGD against D_G(G(·)) in inference mode; in-graph.

        With ``attack_only_correct`` the samples D_G(G(x)) gets wrong stay x.
        """
        return self._craft(tf.cast(x, tf.float32), tf.cast(y, tf.int64), seed)[0]

    def _craft(self, x, y, seed=None) -> tuple[tf.Tensor, tf.Tensor]:
        """(x′, D_G(G(x)) logits on the clean batch)."""
        seed = self._tf_seed() if seed is None else seed
        # the networks themselves stay out of AutoGraph (plain Keras calls)
        model_fn = tf.autograph.experimental.do_not_convert(
            lambda images: self.defended_logits(images, training=False))
        x_adv = _attack_graph(
            model_fn, x, y, seed,
            eps=self.eps, step=self.step_size, steps=self.attack_steps, norm="linf",
            loss="margin", kappa=float(self.kappa), rand_init=True)
        clean_logits = self.defended_logits(x, training=False)
        if self.attack_only_correct:
            correct = tf.equal(tf.argmax(clean_logits, -1, output_type=y.dtype), y)
            x_adv = tf.where(correct[:, None, None, None], x_adv, x)
        return tf.stop_gradient(x_adv), clean_logits

    # --------------------------------------------------------------- losses
    def adversarial_losses(self, x, x_adv, y, training: bool) -> dict[str, tf.Tensor]:
        """Eq. 8–10 per example on x′, composed per ``objective``; ``"loss"``'s batch mean is
        the x′ part of the objective (``"paper"``: masked to the margin set)."""
        if self.objective == "official":
            return self._official_losses(x, x_adv, y, training)
        g_n, latent_loss, _ = self.generate_normalized(x_adv, training=training)
        g = self.denormalize(g_n)
        generated_logits = self.generated_classifier(g, training=training)
        residual_logits = self.classifier(self.classifier_inputs(x_adv, g), training=training)
        target = x_adv if self.reconstruction_target == "adversarial" else x
        rec = vae_losses.reconstruction_error(self.normalize(target), g_n)
        l_d = disentangling_loss(generated_logits, residual_logits, y)
        in_margin = margin_to_wrong_class(tf.stop_gradient(generated_logits), y) <= self.margin
        mask = tf.cast(in_margin, rec.dtype)
        per_example = (self.reconstruction_weight * rec + self.beta * latent_loss
                       + self.gamma * l_d["total"])
        return {
            "loss": mask * per_example,
            "unmasked_loss": per_example,
            "reconstruction": rec,
            "kl": latent_loss,
            "ce_generated": l_d["ce_generated"],
            "ce_residual": l_d["ce_residual"],
            "in_margin": mask,
            "logits": generated_logits,
        }

    def _official_losses(self, x, x_adv, y, training: bool) -> dict[str, tf.Tensor]:
        """``tools/adv_train_cifar.py:173-197``: selection pass, then the training-mode terms."""
        selection_logits = tf.stop_gradient(self.defended_logits(x_adv, training=False))
        in_margin, target = official_selection(selection_logits, y, self.margin)
        g_n, latent_loss, _ = self.generate_normalized(x_adv, training=training)
        g = self.denormalize(g_n)
        generated_logits = self.generated_classifier(g, training=training)
        residual_logits = self.classifier(self.classifier_inputs(x_adv, g), training=training)
        rec = vae_losses.reconstruction_error(
            self.normalize(x_adv if self.reconstruction_target == "adversarial" else x), g_n)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits
        ce_g = ce(labels=y, logits=generated_logits)
        ce_r = ce(labels=tf.stop_gradient(target), logits=residual_logits)
        mask = tf.cast(in_margin, rec.dtype)
        count, n = global_count(mask)
        loss = official_objective(rec, latent_loss, ce_g, ce_r, mask,
                                  reconstruction_weight=self.reconstruction_weight, beta=self.beta,
                                  gamma=self.gamma, in_margin_count=count, batch_size=n)
        return {
            "loss": loss,
            "unmasked_loss": loss,
            "reconstruction": rec,
            "kl": latent_loss,
            "ce_generated": ce_g,
            "ce_residual": ce_r,
            "in_margin": mask,
            "residual_target": target,
            "logits": generated_logits,
        }

    def joint_losses(self, x, x_adv, y, training: bool) -> tuple[dict, dict, tf.Tensor]:
        """Clean CD-VAE terms, adversarial terms and the per-example mixed total."""
        if self.objective == "official" and self.clean_weight == 0:
            # the official script has no clean pass: the clean terms are metrics only, from
            # inference mode (no gradient, no BN update)
            adv = self.adversarial_losses(x, x_adv, y, training=training)
            clean = {k: tf.stop_gradient(v)
                     for k, v in self.compute_losses(x, y, training=False).items()}
            return clean, adv, adv["loss"]
        clean = self.compute_losses(x, y, training=training)
        adv = self.adversarial_losses(x, x_adv, y, training=training)
        return clean, adv, self.clean_weight * clean["loss"] + adv["loss"]

    # --------------------------------------------------------------- training
    @property
    def metrics(self):
        return [
            *super().metrics,
            self.adversarial_loss_tracker,
            self.adversarial_reconstruction_tracker,
            self.adversarial_kl_tracker,
            self.ce_generated_tracker,
            self.ce_residual_tracker,
            self.in_margin_tracker,
            self.generated_accuracy_tracker,
            self.adversarial_accuracy_tracker,
        ]

    def update_adversarial_trackers(self, y, clean, adv, total, clean_logits):
        super().update_trackers({**clean, "loss": total})
        mask = adv["in_margin"]
        # each term averaged over the samples its objective averages it over: "paper" all over
        # the margin set (Eq. 8's expectation); "official" CE_g over it, the rest over all
        every = None if self.objective == "official" else mask
        self.adversarial_loss_tracker.update_state(adv["unmasked_loss"], sample_weight=every)
        self.adversarial_reconstruction_tracker.update_state(adv["reconstruction"],
                                                             sample_weight=every)
        self.adversarial_kl_tracker.update_state(adv["kl"], sample_weight=every)
        self.ce_generated_tracker.update_state(adv["ce_generated"], sample_weight=mask)
        self.ce_residual_tracker.update_state(adv["ce_residual"], sample_weight=every)
        self.in_margin_tracker.update_state(mask)
        self.generated_accuracy_tracker.update_state(y, clean_logits)
        self.adversarial_accuracy_tracker.update_state(y, adv["logits"])
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y = self._batch(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        x_adv, clean_logits = self._craft(x, y)  # outside the tape: x′ is a constant input
        with tf.GradientTape() as tape:
            clean, adv, total = self.joint_losses(x, x_adv, y, training=True)
            loss = tf.reduce_mean(total)
            if self.losses:
                loss += tf.add_n(self.losses)
            # Keras sums replica gradients: scale the hand-written mean (ECOSYSTEM_NOTES).
            scaled = loss / tf.cast(replicas, loss.dtype)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.update_adversarial_trackers(y, clean, adv, total, clean_logits)

    def test_step(self, data):
        x, y = self._batch(data)
        x_adv, clean_logits = self._craft(x, y)
        clean, adv, total = self.joint_losses(x, x_adv, y, training=False)
        return self.update_adversarial_trackers(y, clean, adv, total, clean_logits)

    # ---------------------------------------------------------- serialization
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "generated_classifier": keras.saving.serialize_keras_object(
                    self.generated_classifier),
                "eps": self.eps,
                "attack_steps": self.attack_steps,
                "attack_step_size": self.attack_step_size,
                "kappa": self.kappa,
                "margin": self.margin,
                "clean_weight": self.clean_weight,
                "reconstruction_target": self.reconstruction_target,
                "attack_only_correct": self.attack_only_correct,
                "objective": self.objective,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects=None) -> AdversarialCDVAE:
        config = dict(config)
        config["generated_classifier"] = keras.saving.deserialize_keras_object(
            config["generated_classifier"], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
