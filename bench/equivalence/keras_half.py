"""Keras half of ``bench/equivalence_official.py``: our models on the PyTorch half's weights.

Builds ``CDVAE.for_dataset("cifar10", ...)``, ``AdversarialCDVAE`` and ``nets.wide_resnet``,
copies the official weights in (``mapping.py``), replays the same batch with the same random
draws, and returns one row per compared term. Nothing under ``tfdefense/`` is changed; the
bench-only pieces are:

* ``Injected``: a subclass hook that takes the posterior noise (z = μ + σ·ε with the PyTorch
  half's ε instead of TFP's draw), mixup's (λ, permutation) and, for ``AdversarialCDVAE``, a given
  x′ instead of the crafted one. ``eval_noises`` makes the next inference-mode passes sample too,
  as the official ``adv_vae.py`` does in ``eval()`` (ours takes the posterior mean there): the
  selection pass of ``objective="official"`` then sees the official draw. Everything else is the
  library's own ``compute_losses``, ``adversarial_losses``, ``joint_losses`` and ``train_step``.
* ``ChannelAffine``: a parameter-free input layer in front of D and D_G. The official D reads
  R(x) on the normalised scale (``normalize(x) − G(x)``) and D_G reads G(x) on it; ours read
  them in pixels (R·std, G·std + mean). With it the same weights give the same function; without
  it no weight copy can (zero padding of the first conv sees a shifted input).
* Dropout rate 0 on both sides (train-mode passes otherwise draw different masks).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfdefense import nets, perturbation  # noqa: E402
from tfdefense.models import CDVAE, AdversarialCDVAE, vae_losses  # noqa: E402
from tfdefense.models.adversarial import most_likely_wrong_class  # noqa: E402
from tfdefense.models.cdvae import CIFAR_NORMALIZATION, cdvae_optimizer  # noqa: E402
from tfdefense.optimizers import TorchSGD  # noqa: E402

from . import mapping  # noqa: E402

MEAN = np.array(CIFAR_NORMALIZATION[0], np.float32)
STD = np.array(CIFAR_NORMALIZATION[1], np.float32)


def nhwc(a):
    a = np.asarray(a)
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


# ------------------------------------------------------------------------------ bench parts
class ChannelAffine(keras.layers.Layer):
    """x·scale + offset per channel (no weights)."""

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.scale = np.asarray(scale, np.float32)
        self.offset = np.asarray(offset, np.float32)

    def call(self, x):
        return x * self.scale + self.offset


def wrapped_wrn(depth: int, width: int, scale, offset, name: str):
    """(model with the input adapter, the plain ``nets.wide_resnet`` inside it)."""
    inner = nets.wide_resnet((32, 32, 3), 10, depth=depth, width=width, name=f"{name}_wrn")
    for layer in inner.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, inner(ChannelAffine(scale, offset)(inputs)), name=name), inner


class Injected:
    """Replaces the random draws of a CDVAE with given ones (see the module docstring)."""

    def inject(self, noises=(), mixup=None, x_adv=None, eval_noises=()):
        self._noise = [tf.constant(n) for n in noises]
        self._eval_noise = [tf.constant(n) for n in eval_noises]
        self._mix = mixup
        self._x_adv = x_adv

    def latent(self, x, training=False, sample=None):
        q = self.posterior(x, training=training)
        if sample is None and not training and getattr(self, "_eval_noise", None):
            return q.mean() + q.stddev() * self._eval_noise.pop(0), vae_losses.kl_to_standard_normal(q)
        sample = training if sample is None else sample
        if not sample:
            return q.mean(), vae_losses.kl_to_standard_normal(q)
        if not self._noise:
            raise RuntimeError("latent: no injected noise left")
        return q.mean() + q.stddev() * self._noise.pop(0), vae_losses.kl_to_standard_normal(q)

    def _mixup(self, x, y):
        if getattr(self, "_mix", None) is None:
            return super()._mixup(x, y)
        lam, perm = self._mix
        perm = tf.constant(perm, tf.int32)
        return lam * x + (1.0 - lam) * tf.gather(x, perm), y, tf.gather(y, perm), tf.constant(lam)


class BenchCDVAE(Injected, CDVAE):
    pass


class BenchAdversarialCDVAE(Injected, AdversarialCDVAE):
    def _craft(self, x, y, seed=None):
        if getattr(self, "_x_adv", None) is None:
            return super()._craft(x, y, seed)
        return tf.constant(self._x_adv), self.defended_logits(x, training=False, sample=False)


# ------------------------------------------------------------------------------ comparisons
class Rows(list):
    def add(self, term, ours, ref, tol, note="", explained=None, scale=None):
        ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
        if ours.shape != ref.shape:
            raise ValueError(f"{term}: shapes {ours.shape} vs {ref.shape}")
        mad = float(np.max(np.abs(ours - ref))) if ours.size else 0.0
        denom = float(np.max(np.abs(ref))) if scale is None else float(scale)
        rel = mad / max(denom, 1e-30)
        self._append(term, mad, rel, tol, rel <= tol, note, explained)

    def count(self, term, ours, ref, note="", explained=None):
        """Integer / boolean arrays: the number of entries that differ (tolerance 0)."""
        ours, ref = np.asarray(ours), np.asarray(ref)
        bad = int(np.sum(ours != ref))
        self._append(term, float(bad), bad / max(ours.size, 1), 0.0, bad == 0, note, explained)

    def fact(self, term, ours, official, note, explained):
        mad = abs(float(ours) - float(official))
        self._append(term, mad, mad / max(abs(float(official)), 1e-30), 0.0, mad == 0, note, explained)

    def params(self, term, pairs, ours_of, ref_of, tol, note="", explained=None, base_of=None, d=32,
               skip=()):
        """Many tensors at once (gradients, weights after a step): ``rel`` is the worst tensor's
        relative L2 difference ‖ours − ref‖ / ‖ref‖ (with ``base_of``: of the update, ref − before).

        L2 per tensor, not the largest element, because the functions compared have kinks: a
        ReLU input within round-off of 0 can fall on different sides in the two frameworks,
        which moves the gradient of everything behind that one unit a little and of the weights
        around it a lot (a 1e-7 change of G(x′) did it to a D_G tensor: 7% of its largest entry,
        0.9% in L2); a wrongly mapped or wired tensor is off by ~100%. The largest element
        difference and the share of elements off by > 1e-4 of the tensor's scale are in the note.
        Tensors whose reference is round-off (< 1e-6 of the largest, e.g. the gradient of a conv
        bias that feeds a train-mode batch norm, which is 0) and ``skip`` are left out, counted.
        """
        items = []
        for key, var, layout in pairs:
            ref = ref_of(key)
            if ref is None or key in skip:
                continue
            ref = mapping.to_keras(layout, ref, d=d)
            base = mapping.to_keras(layout, base_of(key), d=d) if base_of else None
            items.append((key, np.asarray(ours_of(var), np.float64), ref, base))
        self.tensors(term, items, tol, note, explained, skipped=len(skip))

    def tensors(self, term, items, tol, note="", explained=None, skipped=0):
        """``params`` on (name, ours, ref, before-or-None) arrays already in one layout."""
        rated = []
        for key, ours, ref, base in items:
            scale_src = np.asarray(ref, np.float64) - (0.0 if base is None else base)
            rated.append((key, np.abs(ours - ref), scale_src))
        top = max(float(np.max(np.abs(s))) for _, _, s in rated)
        zero = [k for k, _, s in rated if np.max(np.abs(s)) < 1e-6 * top]
        kept = [(k, diff, s) for k, diff, s in rated if k not in zero]
        bad = sum(int(np.sum(diff > 1e-4 * np.max(np.abs(s)))) for _, diff, s in kept)
        total = sum(diff.size for _, diff, _ in kept)
        l2 = [(float(np.linalg.norm(diff) / np.linalg.norm(s)), k) for k, diff, s in kept]
        mx = [(float(np.max(diff) / np.max(np.abs(s))), k) for k, diff, s in kept]
        worst_l2, worst_mx = max(l2), max(mx)
        mad = max(float(np.max(diff)) for _, diff, _ in kept)
        self._append(term, mad, worst_l2[0], tol, worst_l2[0] <= tol,
                     f"{note}{'; ' if note else ''}rel = worst tensor's relative L2 ({worst_l2[1]}), "
                     f"median {float(np.median([v for v, _ in l2])):.1e}; "
                     f"largest element off by {worst_mx[0]:.1e} of its tensor's scale ({worst_mx[1]}); "
                     f"{bad / total:.1e} of {total} elements off by > 1e-4 of it; {len(kept)} tensors"
                     + (f", {len(zero)} with a round-off reference left out" if zero else "")
                     + (f", {skipped} skipped" if skipped else ""), explained)

    def _append(self, term, mad, rel, tol, ok, note, explained):
        row = {"term": term, "max_abs_diff": mad, "rel": rel, "tolerance": tol, "ok": bool(ok),
               "note": note}
        if explained and not ok:
            row["explained"] = explained
        self.append(row)


# ------------------------------------------------------------------------------ the run
def assign(pairs, lookup, d):
    for key, var, layout in pairs:
        var.assign(mapping.to_keras(layout, lookup(key), d=d))


def corrected_moving_variance(var_now, var_before, momentum, n):
    """Keras updates the moving variance with the biased batch variance, PyTorch with the
    unbiased one (× n/(n−1)); this is Keras's value with PyTorch's convention."""
    return var_now + (var_now - momentum * var_before) / (n - 1)


def run(npz_path: str, explain: dict) -> Rows:
    t = np.load(npz_path)
    meta = json.loads(str(t["meta"]))
    d, z, depth, width = meta["width"], meta["latent"], meta["wrn_depth"], meta["wrn_width"]
    keras.utils.set_random_seed(meta["seed"])
    x = nhwc(t["x"]).astype(np.float32)
    y = t["y"].astype(np.int64)
    rows = Rows()
    # forward values and losses: float32 round-off through ~30 layers. Gradients and steps are
    # judged by relative L2 per tensor with room for ReLU kinks (see Rows.params); the update
    # rule alone (same gradients in) and the BN statistics have no kink and stay tight.
    tol_fwd, tol_loss, tol_grad, tol_step, tol_rule = 1e-4, 1e-5, 1e-1, 1e-1, 1e-3

    def state(prefix):
        return lambda key: t[prefix + key] if prefix + key in t.files else None

    # ============================ part A: CD-VAE pre-training (tools/disentangle_cifar.py)
    d_a, d_a_inner = wrapped_wrn(depth, width, 1.0 / STD, 0.0, "classifier")
    model = BenchCDVAE.for_dataset("cifar10", latent_dim=z, width=d, classifier=d_a,
                                   gamma=0.2, beta=0.2 / 3, reconstruction_weight=10.0, mixup_alpha=2.0)
    pairs_a = (mapping.vae_pairs(model.encoder, model.decoder)
               + mapping.wrn_pairs(d_a_inner, depth, "classifier."))
    mapping.check_complete(pairs_a, [k[len("A/init/"):] for k in t.files if k.startswith("A/init/")],
                           model.encoder.weights + model.decoder.weights + model.classifier.weights)
    init_a = state("A/init/")
    assign(pairs_a, init_a, d)
    momenta = bn_momenta(model.encoder, model.decoder, d_a_inner)
    mode = meta.get("mode", "official")
    ref_mode = f"PyTorch reference mode {mode!r}"

    mu, log_var = model.encoder(model.normalize(x), training=False)
    g_n, _, _ = model.generate_normalized(x, training=False)
    _, r = model.decompose(x)
    logits = model(x, training=False)
    ref = "A/eval/"
    rows.add("A.eval.mu", mu, t[ref + "mu"], tol_fwd, f"encoder μ, posterior mean; {ref_mode}")
    rows.add("A.eval.logvar", log_var, t[ref + "logvar"], tol_fwd, "encoder log σ²")
    rows.add("A.eval.G", g_n, nhwc(t[ref + "xi"]), tol_fwd,
             "G(x) on the normalised scale (ours generate() returns it ·std + mean)")
    rows.add("A.eval.R", r, nhwc(t[ref + "r"]) * STD, tol_fwd,
             "R(x): ours x − G(x) in pixels = std · (official normalize(x) − G(x))")
    rows.add("A.eval.D_logits", logits, t[ref + "logits"], tol_fwd,
             "D(R(x)) logits, model(x): the WRN's stride-2 convs padded (1, 1) as padding=1")

    # one training step: epoch 1 of the curriculum (re 10), ce 0.2, kl 0.2
    mix = (float(t["lam"]), t["perm"].astype(np.int32))
    model.inject([t["eA"]], mixup=mix)
    with tf.GradientTape() as tape:
        terms = model.compute_losses(tf.constant(x), tf.constant(y), training=True)
        loss = tf.reduce_mean(terms["loss"])
    grads = dict(zip([id(v) for v in model.trainable_variables],
                     tape.gradient(loss, model.trainable_variables)))
    ref = "A/train/"
    rows.add("A.train.D_logits", terms["logits"], t[ref + "logits"], tol_fwd,
             "train mode, mixed batch (λ, permutation given), z = μ + σ·ε (ε given)")
    rows.add("A.train.reconstruction", np.mean(terms["reconstruction"]), t[ref + "l1"], tol_loss,
             "official F.mse_loss(xi, x) = mean over batch of ours per-example pixel mean")
    rows.add("A.train.kl", np.mean(terms["kl"]) / 3.0, t[ref + "l3"], tol_loss,
             "official Σ KL / (bs·3·latent); ours per-example mean over latents, so ours/3 "
             "(β 0.2 there = 0.2/3 here)")
    rows.add("A.train.ce_mixup", np.mean(terms["ce"]), t[ref + "l2"], tol_loss,
             "λ·CE(y) + (1−λ)·CE(y[perm])")
    rows.add("A.train.joint_loss", loss, t[ref + "loss"], tol_loss,
             "10·rec + 0.2·CE + 0.2·KL_official  vs  ours reconstruction_weight 10, γ 0.2, β 0.2/3")
    rows.params("A.train.gradients", [p for p in pairs_a if p[1].trainable],
                lambda v: grads[id(v)], state("A/grad/"), tol_grad,
                "d loss / d every trainable weight")

    trainable = [p for p in pairs_a if p[1].trainable]
    # Adam's first step is lr·g/(|g| + eps/√(1−β2)) ≈ lr·sign(g): a gradient entry that round-off
    # or a ReLU kink (A.train.gradients) moves across 0 flips its step (2·lr), and a conv bias that
    # feeds a train-mode BN has gradient 0, round-off on both sides, stepped by ±~1e-5 at random.
    # So the step is checked as a chain of exact links: (1) our gradients ≈ the official ones
    # (A.train.gradients), (2) keras AdamW on the official gradients == utils/set.py AdamW,
    # (3) our train_step == keras AdamW on our own gradients; end to end it is reported.
    g_max = {k: float(np.max(np.abs(t["A/grad/" + k]))) for k, _, _ in trainable}
    zero = {k for k, m in g_max.items() if m < 1e-6 * max(g_max.values())}

    def adamw_on(gradients):
        variables = [keras.Variable(mapping.to_keras(lay, init_a(k), d=d)) for k, _, lay in trainable]
        cdvae_optimizer().apply(gradients, variables)
        return [w.numpy() for w in variables]

    on_official = adamw_on([tf.constant(mapping.to_keras(lay, t["A/grad/" + k], d=d))
                            for k, _, lay in trainable])
    on_ours = adamw_on([grads[id(v)] for _, v, _ in trainable])
    before_a = {k: mapping.to_keras(lay, init_a(k), d=d) for k, _, lay in trainable}
    after_a = {k: mapping.to_keras(lay, t["A/after/" + k], d=d) for k, _, lay in trainable}
    rows.tensors("A.step.adamw.update_rule",
                 [(k, w, after_a[k], before_a[k]) for (k, _, _), w in zip(trainable, on_official)
                  if k not in zero],
                 tol_rule, "cdvae_optimizer() (keras AdamW 1e-3, wd 1e-6, eps 1e-8) applied to the "
                 "official gradients vs "
                 "utils/set.py "
                 "AdamW (its decay lr·wd·√(1−β2^t)/(1−β1^t)·p vs Keras lr·wd·p: ~1e-9·|p|); relative to the "
                 "update", skipped=len(zero))

    assign(pairs_a, init_a, d)
    model.inject([t["eA"]], mixup=mix)
    model.compile()  # the default optimizer, cdvae_optimizer()
    model.train_step((tf.constant(x), tf.constant(y)))
    rows.tensors("A.step.adamw.train_step",
                 [(k, v.numpy(), w, before_a[k]) for (k, v, _), w in zip(trainable, on_ours)],
                 tol_rule, "CDVAE.train_step (compile() with no optimizer: AdamW 1e-3, wd 1e-6, eps 1e-8) "
                 "vs the same AdamW applied to the gradients of compute_losses taken beside it: the step "
                 "is that rule on that loss")
    items = [(k, v.numpy(), after_a[k], before_a[k]) for k, v, _ in trainable if k not in zero]
    rows.tensors("A.step.adamw.end_to_end", items, tol_step,
                 "ours after train_step vs utils/set.py AdamW after the official step", explain["adam_sign"]
                 if _chain_holds(rows, ("A.train.gradients", "A.step.adamw.update_rule",
                                        "A.step.adamw.train_step")) else None, skipped=len(zero))
    if zero:
        ours_step = max(float(np.max(np.abs(v.numpy() - before_a[k]))) for k, v, _ in trainable if k in zero)
        ref_step = max(float(np.max(np.abs(after_a[k] - before_a[k]))) for k in zero)
        rows._append("A.step.adamw.zero_gradient_biases", abs(ours_step - ref_step),
                     ours_step / ref_step, 3.0, ours_step <= 3 * ref_step,
                     f"largest step of a bias whose true gradient is 0 (a conv before a train-mode BN): "
                     f"ours {ours_step:.2e}, official {ref_step:.2e} (lr 1e-3); rel = ours / official", None)
    _moving_stats(rows, "A.step.bn_moving_stats", pairs_a, t, "A/after/", init_a, "A/bn_n/",
                  momenta, d, tol_rule, None)

    # ============================ part B: adversarial training (tools/adv_train_cifar.py)
    enc = nets.cdvae_encoder((32, 32, 3), d=d, latent_dim=z)
    dec = nets.cdvae_decoder((32, 32, 3), d=d, latent_dim=z)
    d_r, d_r_inner = wrapped_wrn(depth, width, 1.0 / STD, 0.0, "classifier")
    d_g, d_g_inner = wrapped_wrn(depth, width, 1.0 / STD, -MEAN / STD, "generated_classifier")
    adv = BenchAdversarialCDVAE(
        enc, dec, d_r, d_g, eps=8 / 255, attack_steps=int(meta["attack_steps"]), kappa=10.0,
        margin=8.0, clean_weight=1.0, reconstruction_target="clean", gamma=0.1, beta=0.01 / 3,
        reconstruction_weight=1.0, normalization_mean=tuple(MEAN), normalization_std=tuple(STD))
    momenta.update(bn_momenta(enc, dec, d_r_inner, d_g_inner))
    groups = {"vae": mapping.vae_pairs(enc, dec), "r": mapping.wrn_pairs(d_r_inner, depth),
              "g": mapping.wrn_pairs(d_g_inner, depth)}
    init_b = {"vae": state("A/init/"), "r": state("A/init/classifier."), "g": state("G/init/")}

    def load_b(calibrated=False):
        for name, pairs in groups.items():
            calib = state(f"B3/calib/{name}/")
            lookup = (lambda k, c=calib, i=init_b[name]: c(k) if c(k) is not None else i(k)) \
                if calibrated else init_b[name]
            assign(pairs, lookup, d)

    load_b()
    adv.inject()
    logits_g = adv.defended_logits(x, training=False)
    rows.add("B.eval.DG_logits", logits_g, t["B/eval/logits_g"], tol_fwd,
             "D_G(G(x)) logits, posterior mean (official adv_vae samples even in eval: run here with μ)")

    def model_fn(images):
        return adv.defended_logits(images, training=False)

    margin = perturbation.margin(model_fn(x), tf.constant(y), kappa=10.0)
    rows.add("B.margin_loss.value", margin, t["B/margin/value"], tol_fwd,
             "perturbation.margin(κ 10) vs advex MarginLoss(kappa=10), on D_G(G(x))")
    grad = perturbation.objective_gradient(model_fn, tf.constant(x), tf.constant(y), "margin", 10.0, False)
    rows.add("B.margin_loss.input_gradient", grad, nhwc(t["B/margin/grad"]), tol_grad,
             "d Σ margin / d x (what the sign steps follow)")

    # the attack: our craft() (the compiled iterative_attack, only-correct selection) from the
    # official random start, the draw injected by replacing perturbation.random_start for the call
    delta0 = nhwc(t["delta0"]).astype(np.float32)
    original = perturbation.random_start
    perturbation.random_start = lambda xs, eps, norm, seed: perturbation.project(xs + delta0, xs, eps, norm)
    steps = adv.attack_steps
    y_att = tf.constant(t["B/attack/y"].astype(np.int64))
    try:
        adv.attack_steps, adv.attack_step_size = 1, 8 / 255 / np.sqrt(steps)
        x_adv_1 = adv.craft(tf.constant(x), y_att).numpy()
        adv.attack_steps, adv.attack_step_size = steps, None
        x_adv_ours = adv.craft(tf.constant(x), y_att).numpy()
    finally:
        perturbation.random_start = original
        adv.attack_steps, adv.attack_step_size = steps, None
    attacked = f"{int(t['B/attack/to_attack'].sum())}/{len(x)} samples attacked (D_G(G(x)) right)"
    ref_1, step_1 = nhwc(t["B/attack/x_adv_step1"]), 8 / 255 / np.sqrt(steps)
    diff_1 = np.abs(x_adv_1 - ref_1)
    flips = diff_1 > 1e-6
    # a sign step moves each pixel by ±step: an input-gradient entry within round-off of 0
    # (B.margin_loss.input_gradient) can take the other sign, 2·step apart (the WRN-28-10 of
    # --official-size has such entries); a wrong step size, sign or selection moves ~every pixel
    rows._append("B.attack.x_adv_first_step", float(diff_1.max()), float(flips.mean()), 1e-3,
                 flips.mean() <= 1e-3 and diff_1.max() <= 2 * step_1 + 1e-6,
                 f"our craft() (compiled iterative_attack, margin κ 10, inference mode, only-correct) vs "
                 f"AttackV2 from the same start, one sign step of eps/√{steps}; {attacked}; rel = share "
                 f"of pixels that differ ({int(flips.sum())} of {flips.size}), each by at most 2·step "
                 f"(a flipped sign; largest {diff_1.max() / step_1:.2f}·step)", None)
    ref_adv = nhwc(t["B/attack/x_adv_clamped_start"])
    off = np.abs(x_adv_ours - ref_adv) > 1e-6
    m_ours = perturbation.margin(model_fn(x_adv_ours), y_att, kappa=10.0).numpy()
    m_ref = perturbation.margin(model_fn(ref_adv), y_att, kappa=10.0).numpy()
    rows._append("B.attack.x_adv", float(np.max(np.abs(x_adv_ours - ref_adv))), float(off.mean()), 0.05,
                 off.mean() <= 0.05,
                 f"after {steps} steps; rel = share of pixels that differ (sign steps follow the sign of "
                 f"each gradient entry: one entry within round-off of 0 flips and the paths part); "
                 f"margin reached, ours {np.round(m_ours, 4).tolist()} vs official "
                 f"{np.round(m_ref, 4).tolist()}", None)
    rows.add("B.attack.official_unclamped_start", nhwc(t["B/attack/x_adv_official_start"]), ref_adv,
             1e-5, "PyTorch only: AttackV2's first forward at x + δ0 unclamped vs clamped into [0, 1] "
             "(ours, perturbation.random_start)", explain["start"], scale=8 / 255)

    x_adv = nhwc(t["B/x_adv"]).astype(np.float32)
    # ---- B2: the Table 7 configuration (clean_weight 1, γ = cr = cg 0.1, β 0.01/3, target clean)
    load_b()
    adv.clean_weight = 1.0
    adv.inject([t["eB_clean"], t["eB_train"]], x_adv=x_adv)
    clean, adv_terms, total = adv.joint_losses(tf.constant(x), tf.constant(x_adv), tf.constant(y),
                                               training=True)
    ref = "B2/"
    rows.add("B2.ce_generated_each", adv_terms["ce_generated"], t[ref + "ce_g_each"], tol_fwd,
             "per-example CE(D_G(G(x′)), y), train mode")
    rows.add("B2.ce_residual_each_same_target", adv_terms["ce_residual"],
             t[ref + "ce_r_each_ours_target"], tol_fwd,
             "per-example CE(D(R(x′)), t), t = argmax_{y'≠y} of the train-mode D_G logits on both sides")
    rows.add("B2.reconstruction_each", adv_terms["reconstruction"], t[ref + "rec_each"], tol_fwd,
             "‖G(x′) − normalize(x)‖² / P per example (reconstruction_target='clean')")
    rows.add("B2.kl", np.mean(adv_terms["kl"]) / 3.0, t[ref + "l3"], tol_loss, "x′ KL, ours / 3")
    ours_mask = adv_terms["in_margin"].numpy() > 0
    rows.count("B2.in_margin_mask", ours_mask, t[ref + "incorrect"],
               f"ours {ours_mask.astype(int).tolist()} vs official "
               f"{t[ref + 'incorrect'].astype(int).tolist()}",
               explain["mask"])
    ours_target = most_likely_wrong_class(adv_terms["logits"], tf.constant(y)).numpy()
    rows.count("B2.residual_target", ours_target, t[ref + "target"],
               f"ours {ours_target.tolist()} vs official {t[ref + 'target'].tolist()} (labels {y.tolist()})",
               explain["target"])
    l_ours = float(np.mean(total))
    rows.add("B2.joint_loss", l_ours, t[ref + "loss"], tol_loss,
             f"ours {l_ours:.4f} (clean part {float(np.mean(clean['loss'])):.4f}, masked x′ part "
             f"{float(np.mean(adv_terms['loss'])):.4f}) vs official {float(t[ref + 'loss']):.4f} "
             f"(rec {float(t[ref + 'l1']):.4f}, 0.1·CE_r {0.1 * float(t[ref + 'l2r']):.4f}, "
             f"0.1·CE_g[in margin] {0.1 * float(t[ref + 'l2g']):.4f}, "
             f"0.01·KL {0.01 * float(t[ref + 'l3']):.5f})",
             explain["objective"])

    def official_losses(labels, margin, eval_noise, calibrated=False):
        """joint_losses with objective="official" (clean_weight 0); the selection pass samples z
        with ``eval_noise`` as adv_vae.py does in eval mode."""
        load_b(calibrated=calibrated)
        adv.objective, adv.clean_weight, adv.margin = "official", 0.0, margin
        adv.inject([t["eB_train"]], x_adv=x_adv, eval_noises=[eval_noise])
        return adv.joint_losses(tf.constant(x), tf.constant(x_adv), tf.constant(labels), training=True)

    def official_rows(prefix, ref, labels, adv_terms, total):
        mask = adv_terms["in_margin"].numpy()
        rows.count(f"{prefix}.in_margin_mask", mask > 0, t[ref + "incorrect"],
                   f"strict < c on the eval-mode D_G(G(x′)) pass (running BN stats, z sampled with the "
                   f"official draw): ours {mask.astype(int).tolist()} vs official "
                   f"{t[ref + 'incorrect'].astype(int).tolist()}")
        rows.count(f"{prefix}.residual_target", adv_terms["residual_target"].numpy(), t[ref + "target"],
                   f"argmax over all classes of that pass: ours "
                   f"{adv_terms['residual_target'].numpy().tolist()} vs official "
                   f"{t[ref + 'target'].tolist()} (labels {np.asarray(labels).tolist()})")
        rows.add(f"{prefix}.reconstruction", np.mean(adv_terms["reconstruction"]), t[ref + "l1"], tol_loss,
                 "F.mse_loss(gx, normalize(inputs)) over every sample")
        rows.add(f"{prefix}.kl", np.mean(adv_terms["kl"]) / 3.0, t[ref + "l3"], tol_loss,
                 "every sample, ours / 3")
        rows.add(f"{prefix}.ce_residual", np.mean(adv_terms["ce_residual"]), t[ref + "l2r"], tol_loss,
                 "CE(logits_r, adv_logits_g.argmax(1)) over every sample")
        ce_g = float(np.sum(mask * adv_terms["ce_generated"].numpy()) / max(mask.sum(), 1.0))
        rows.add(f"{prefix}.ce_generated", ce_g, t[ref + "l2g"], tol_loss,
                 f"CE(logits_g[incorrect], labels[incorrect]): mean over the {int(mask.sum())} "
                 f"in-margin samples")
        l_ours = float(np.mean(total))
        rows.add(f"{prefix}.joint_loss", l_ours, t[ref + "loss"], tol_loss,
                 f"objective='official': ours {l_ours:.6f} vs official {float(t[ref + 'loss']):.6f} "
                 f"(re·mse + cr·CE_r + cg·CE_g[in margin] + kl·KL, no clean term)")

    # ---- B2o: B2's batch with objective="official": the official loss itself
    clean, adv_terms, total = official_losses(y, 8.0, t["eB_eval"])
    official_rows("B2o", "B2/", y, adv_terms, total)
    # ---- B2m: a partial margin set (labels right on half the batch, c between the eval-mode
    # margins; official_torch.py B2m), where the selection rule and the target rule both act
    y_m, c_m = t["B2m/y"].astype(np.int64), float(t["B2m/margin"])
    clean, adv_terms, total = official_losses(y_m, c_m, t["eB_eval"])
    official_rows("B2m", "B2m/", y_m, adv_terms, total)
    load_b()
    adv.objective, adv.clean_weight, adv.margin = "paper", 1.0, c_m
    adv.inject([t["eB_clean"], t["eB_train"]], x_adv=x_adv)
    _, paper_terms, _ = adv.joint_losses(tf.constant(x), tf.constant(x_adv), tf.constant(y_m),
                                         training=True)
    adv.margin = 8.0
    paper_mask = paper_terms["in_margin"].numpy() > 0
    rows.count("B2m.paper.in_margin_mask", paper_mask, t["B2m/incorrect"],
               f"objective='paper' on the same case: ours {paper_mask.astype(int).tolist()} vs official "
               f"{t['B2m/incorrect'].astype(int).tolist()}", explain["mask"])

    # ---- B3: matched step (clean_weight 0; BN stats = x′'s batch stats; labels least likely)
    y3 = t["B3/y"].astype(np.int64)
    load_b(calibrated=True)
    adv.clean_weight = 0.0
    adv.inject([t["eB_clean"], t["eB_train"]], x_adv=x_adv)
    with tf.GradientTape() as tape:
        clean, adv_terms, total = adv.joint_losses(tf.constant(x), tf.constant(x_adv), tf.constant(y3),
                                                   training=True)
        loss = tf.reduce_mean(total)
    grads = dict(zip([id(v) for v in adv.trainable_variables],
                     tape.gradient(loss, adv.trainable_variables)))
    ref = "B3/"
    rows.add("B3.DG_logits_train", adv_terms["logits"], t[ref + "logits_g"], tol_fwd, "train mode")
    rows.count("B3.in_margin_mask", adv_terms["in_margin"].numpy() > 0, t[ref + "incorrect"],
               "labels = least likely class: every sample inside the margin on both sides")
    ours_target = most_likely_wrong_class(adv_terms["logits"], tf.constant(y3)).numpy()
    rows.count("B3.residual_target", ours_target, t[ref + "target"],
               "argmax == argmax_{y'≠y} here, eval == train mode")
    rows.add("B3.reconstruction", np.mean(adv_terms["reconstruction"]), t[ref + "l1"], tol_loss,
             "F.mse_loss(gx, normalize(inputs))")
    rows.add("B3.kl", np.mean(adv_terms["kl"]) / 3.0, t[ref + "l3"], tol_loss, "ours / 3")
    rows.add("B3.ce_generated", np.mean(adv_terms["ce_generated"]), t[ref + "l2g"], tol_loss,
             "CE(logits_g[incorrect], labels[incorrect]), every sample incorrect")
    rows.add("B3.ce_residual", np.mean(adv_terms["ce_residual"]), t[ref + "l2r"], tol_loss,
             "CE(logits_r, adv_logits_g.argmax(1))")
    rows.add("B3.joint_loss", loss, t[ref + "loss"], tol_loss,
             "re 1, cr = cg = γ 0.1, kl 0.01 = 3β; ours clean_weight 0")
    all_pairs = [(f"{g}/{k}", v, lay) for g, pairs in groups.items() for k, v, lay in pairs]
    rows.params("B3.gradients", [p for p in all_pairs if p[1].trainable], lambda v: grads[id(v)],
                state("B3/grad/"), tol_grad, "before clipping; vae, D (model_r), D_G (model_g)")

    # the same D_G backward on the official G(x′) itself (no round-off of G in between): what is
    # left of B3.gradients' D_G part once the two inputs agree bit for bit
    with tf.GradientTape() as tape:
        lg = d_g_inner(tf.constant(nhwc(t[ref + "gx"])), training=True)
        loss_g = 0.1 * tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y3, logits=lg))
    grads_g = dict(zip([id(v) for v in d_g_inner.trainable_variables],
                       tape.gradient(loss_g, d_g_inner.trainable_variables)))
    relus = [layer for layer in d_g_inner.layers if isinstance(layer, keras.layers.ReLU)]
    pre = keras.Model(d_g_inner.input, [layer.input for layer in relus])(
        tf.constant(nhwc(t[ref + "gx"])), training=True)
    kinks = sum(int(np.sum(np.abs(a.numpy()) < 1e-6)) for a in pre)
    rows.params("B3.gradients.DG_on_official_G", [(f"g/{k}", v, lay) for k, v, lay in groups["g"]
                                                   if v.trainable],
                lambda v: grads_g[id(v)], state("B3/grad/"), tol_grad,
                f"nets.wide_resnet D_G fed PyTorch's G(x′) itself, 0.1·CE(D_G, y) gradients: the kink "
                f"floor ({kinks} of D_G's ReLU inputs lie within 1e-6 of 0 on this batch)")

    load_b(calibrated=True)
    adv.inject([t["eB_clean"], t["eB_train"]], x_adv=x_adv)
    clip = float(meta.get("clip", 1.0))
    entries = np.concatenate([np.abs(t[k]).ravel() for k in t.files if k.startswith("B3/grad/")])
    clipped = f"{int(np.sum(entries > clip))} of {entries.size}"
    sgd = dict(learning_rate=0.1, momentum=0.9, l2=2e-4, clipvalue=clip)

    def before(key):
        g, k = key.split("/", 1)
        calib = state(f"B3/calib/{g}/")(k)
        return calib if calib is not None else init_b[g](k)

    train_b = [p for p in all_pairs if p[1].trainable]
    before_b = {k: mapping.to_keras(lay, before(k), d=d) for k, _, lay in train_b}
    after_b = {k: mapping.to_keras(lay, t["B3/after/" + k], d=d) for k, _, lay in train_b}

    def sgd_on(gradients):
        variables = [keras.Variable(before_b[k]) for k, _, _ in train_b]
        TorchSGD(**sgd).apply(gradients, variables)
        return [w.numpy() for w in variables]

    on_official = sgd_on([tf.constant(mapping.to_keras(lay, t["B3/grad/" + k], d=d))
                          for k, _, lay in train_b])
    on_ours = sgd_on([grads[id(v)] for _, v, _ in train_b])
    what = (f"TorchSGD(0.1, momentum 0.9, l2 2e-4, clipvalue {clip:g}) vs optim.SGD(0.1, momentum 0.9, "
            f"weight_decay 2e-4) after clip_grad_value_({clip:g}) ({clipped} gradient entries "
            "clipped; official clip 1.0, which no entry of this batch reaches); lr 0.1 (the warm-up's "
            "first step would be 4e-5)")
    rows.tensors("B3.step.torch_sgd.update_rule",
                 [(k, w, after_b[k], before_b[k]) for (k, _, _), w in zip(train_b, on_official)], tol_rule,
                 f"{what}, on the official gradients; relative to the update")

    load_b(calibrated=True)
    adv.inject([t["eB_clean"], t["eB_train"]], x_adv=x_adv)
    adv.compile(optimizer=TorchSGD(**sgd))
    adv.train_step((tf.constant(x), tf.constant(y3)))
    rows.tensors("B3.step.torch_sgd.train_step",
                 [(k, v.numpy(), w, before_b[k]) for (k, v, _), w in zip(train_b, on_ours)], tol_rule,
                 "AdversarialCDVAE.train_step (x′ given) vs the same TorchSGD applied to the gradients of "
                 "joint_losses taken beside it")
    rows.tensors("B3.step.torch_sgd.end_to_end",
                 [(k, v.numpy(), after_b[k], before_b[k]) for k, v, _ in train_b], tol_step,
                 f"ours after train_step vs the official step; {what}")
    for g, ex in (("g", None), ("vae", explain["clean_pass_bn"]), ("r", explain["clean_pass_bn"])):
        sub = [(f"{g}/{k}", v, lay) for k, v, lay in groups[g]]
        _moving_stats(rows, f"B3.step.bn_moving_stats.{g}", sub, t, "B3/after/", before, "B3/bn_n/",
                      momenta, d, tol_rule, ex)

    # ---- B3o: the matched step with objective="official": the same gradients and step, and
    # no train-mode clean pass, so the BN moving statistics of G and D agree too
    with tf.GradientTape() as tape:
        clean, adv_terms, total = official_losses(y3, 8.0, t["eB_train"], calibrated=True)
        loss = tf.reduce_mean(total)
    grads = dict(zip([id(v) for v in adv.trainable_variables],
                     tape.gradient(loss, adv.trainable_variables)))
    rows.add("B3o.joint_loss", loss, t["B3/loss"], tol_loss, "objective='official' on the matched case")
    rows.params("B3o.gradients", [p for p in all_pairs if p[1].trainable], lambda v: grads[id(v)],
                state("B3/grad/"), tol_grad, "objective='official'; before clipping")
    load_b(calibrated=True)
    adv.inject([t["eB_train"]], x_adv=x_adv, eval_noises=[t["eB_train"]])
    adv.compile(optimizer=TorchSGD(**sgd))
    adv.train_step((tf.constant(x), tf.constant(y3)))
    rows.tensors("B3o.step.torch_sgd.end_to_end",
                 [(k, v.numpy(), after_b[k], before_b[k]) for k, v, _ in train_b], tol_step,
                 f"objective='official': ours after train_step vs the official step; {what}")
    for g in ("g", "vae", "r"):
        sub = [(f"{g}/{k}", v, lay) for k, v, lay in groups[g]]
        _moving_stats(rows, f"B3o.step.bn_moving_stats.{g}", sub, t, "B3/after/", before, "B3/bn_n/",
                      momenta, d, tol_rule, None)
    adv.objective, adv.clean_weight = "paper", 0.0

    # ============================ configuration facts
    nets_all = (model.encoder, model.decoder, d_a_inner, enc, dec, d_r_inner, d_g_inner)
    bns = [layer for net in nets_all for layer in net.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    rows.add("config.bn_epsilon", [b.epsilon for b in bns], [1e-5] * len(bns), 0.0,
             f"every BatchNormalization of nets.cdvae_encoder/decoder and nets.wide_resnet ({len(bns)} "
             "layers, parts A and B) vs nn.BatchNorm2d's default eps (networks/vae.py, adv_vae.py)")
    rows.add("config.bn_momentum", [1 - b.momentum for b in bns],
             [0.9 if b.name == "bn_final" else 0.1 for b in bns], 1e-9,
             "PyTorch's terms (1 − Keras momentum), per layer: official 0.1 (nn.BatchNorm2d default), "
             "0.9 for Wide_ResNet.bn1 (networks/adv_vae.py:93, vae.py:74) = our bn_final")
    strided = [(net, layer) for net in (d_a_inner, d_r_inner, d_g_inner) for layer in net.layers
               if isinstance(layer, keras.layers.Conv2D) and tuple(layer.strides) == (2, 2)]
    rows.count("config.wrn_stride2_padding", [_padding_of(net, layer) for net, layer in strided],
               [str(((layer.kernel_size[0] // 2,) * 2,) * 2) for _, layer in strided],
               f"the {len(strided)} stride-2 convs of the WRNs, ((top, bottom), (left, right)) zero "
               "padding: 3x3 vs wide_basic.conv2's padding=1 (networks/adv_vae.py:61), 1x1 shortcut "
               "vs its padding 0")
    rows.fact("config.cdvae_optimizer_epsilon", cdvae_optimizer().epsilon, 1e-8,
              "CDVAE.compile() with no optimizer (models/cdvae.py cdvae_optimizer) vs utils/set.py:171 "
              "AdamW(eps=1e-8)", None)
    return rows


def bn_momenta(*nets_) -> dict[int, float]:
    """id(moving mean / variance variable) → its BatchNormalization's (Keras) momentum."""
    out = {}
    for net in nets_:
        for layer in net.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                out[id(layer.moving_mean)] = out[id(layer.moving_variance)] = float(layer.momentum)
    return out


def _padding_of(net, conv) -> str:
    """A conv's zero padding as ((top, bottom), (left, right)): its own "same" (TensorFlow pads
    the total k − s on an even input, the extra pixel after) or an explicit ZeroPadding2D + "valid"."""
    if conv.padding == "same":
        total = conv.kernel_size[0] - conv.strides[0]
        return str(((total // 2, total - total // 2),) * 2)
    pads = [layer for layer in net.layers if isinstance(layer, keras.layers.ZeroPadding2D)
            and conv in [node.operation for node in layer._outbound_nodes]]
    return str(tuple(tuple(p) for p in pads[0].padding)) if pads else "((0, 0), (0, 0))"


def _chain_holds(rows, terms) -> bool:
    done = {r["term"]: r["ok"] for r in rows}
    return all(done.get(term) for term in terms)


def _moving_stats(rows, term, pairs, t, after_prefix, before, n_prefix, momenta, d, tol, explained):
    """Moving mean and (n/(n−1)-corrected) moving variance after the step vs PyTorch's; each
    layer's Keras momentum from ``momenta`` (``bn_momenta``)."""
    worst, mad_all, used = (None, 0.0), 0.0, set()
    for key, var, _ in pairs:
        if not (key.endswith("running_mean") or key.endswith("running_var")):
            continue
        ours = var.numpy().astype(np.float64)
        used.add(round(1 - momenta[id(var)], 6))
        if key.endswith("running_var"):
            module = key[: -len(".running_var")]
            n = float(t[n_prefix + module])
            ours = corrected_moving_variance(ours, before(key).astype(np.float64), momenta[id(var)], n)
        ref = t[after_prefix + key].astype(np.float64)
        # relative to the change, floored at 1e-3 of the statistic (B3's calibrated statistics
        # hardly change: the batch is the one they were set from)
        change = max(np.max(np.abs(ref - before(key))), 1e-3 * np.max(np.abs(ref)))
        mad = float(np.max(np.abs(ours - ref)))
        rel = mad / max(change, 1e-12)
        mad_all = max(mad_all, mad)
        if worst[0] is None or rel > worst[1]:
            worst = (key, rel)
    rows._append(term, mad_all, worst[1], tol, worst[1] <= tol,
                 f"momentum (PyTorch's terms) {sorted(used)} on both sides; "
                 f"variance × n/(n−1) (PyTorch's unbiased update); relative to the change; worst {worst[0]}",
                 explained)
