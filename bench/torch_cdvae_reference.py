"""PyTorch CPU reference of the CD-VAE CIFAR training step, for bench/train_throughput.py only.

The same computation as ``CDVAE.fit`` with the official CIFAR VAE and a
pre-activation WRN: encoder conv4x4 s2 (3→16), conv4x4 s2 (16→32), two
residual blocks, dense μ / log σ² (2048), dense back, decoder mirrored with
transposed convs, tanh, per-channel BatchNorm; loss MSE + β·KL + γ·CE; AdamW
(lr 1e-3, weight decay 1e-6). Written for this benchmark; never imported by
the library.

``--precision float32`` trains in float32; ``--precision bfloat16`` runs the
forward pass and the loss under ``torch.autocast("cpu", dtype=torch.bfloat16)``
(backward and AdamW on the float32 master weights, as autocast does). The data
is ``_common.synthetic_images`` (NumPy, fixed seed: the Keras bench's bytes);
``--threads`` intra-op threads (2).

Prints one JSON line: steady-state images/s over ``--steps`` steps after
``--warmup`` untimed ones, this process's peak RSS (VmHWM of /proc/self/status,
MiB) and the 1-minute load average when the timed steps started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch
from _common import synthetic_images, vm_hwm_mb
from torch import nn
from torch.nn import functional as F


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.LeakyReLU(), nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c),
                                  nn.LeakyReLU(), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return x + self.body(x)


class VAE(nn.Module):
    def __init__(self, d: int = 32, z: int = 2048):
        super().__init__()
        self.d = d
        self.enc = nn.Sequential(
            nn.Conv2d(3, d // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(d // 2), nn.ReLU(),
            nn.Conv2d(d // 2, d, 4, 2, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(),
            Residual(d), nn.BatchNorm2d(d), Residual(d))
        self.mu = nn.Linear(d * 64, z)
        self.log_var = nn.Linear(d * 64, z)
        self.project = nn.Linear(z, d * 64)
        self.dec = nn.Sequential(
            Residual(d), nn.BatchNorm2d(d), Residual(d), nn.BatchNorm2d(d),
            nn.ConvTranspose2d(d, d // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(d // 2), nn.LeakyReLU(),
            nn.ConvTranspose2d(d // 2, 3, 4, 2, 1, bias=False))
        self.out_bn = nn.BatchNorm2d(3)

    def forward(self, x):
        h = self.enc(x).flatten(1)
        mu, log_var = self.mu(h), self.log_var(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        g = self.out_bn(torch.tanh(self.dec(self.project(z).view(-1, self.d, 8, 8))))
        return g, mu, log_var


class WideBasic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, stride, 1)
        self.short = nn.Conv2d(cin, cout, 1, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        y = self.drop(self.conv1(F.relu(self.bn1(x))))
        return self.conv2(F.relu(self.bn2(y))) + self.short(x)


class WRN(nn.Module):
    def __init__(self, depth: int, width: int, classes: int = 10, dropout: float = 0.3):
        super().__init__()
        n = (depth - 4) // 6
        blocks, cin = [nn.Conv2d(3, 16, 3, padding=1)], 16
        for s, planes in enumerate((16 * width, 32 * width, 64 * width)):
            for b in range(n):
                blocks.append(WideBasic(cin, planes, 2 if (s and not b) else 1, dropout))
                cin = planes
        self.body = nn.Sequential(*blocks, nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


def autocast(precision: str):
    """The forward pass's precision context: bf16 autocast or nothing (float32)."""
    if precision == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--wrn-depth", type=int, default=16)
    p.add_argument("--wrn-width", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae, clf = VAE(), WRN(args.wrn_depth, args.wrn_width)
    params = list(vae.parameters()) + list(clf.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-6)
    x_np, y_np = synthetic_images(args.batch, seed=args.seed)  # the Keras bench's bytes
    x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y = torch.from_numpy(y_np)
    beta, gamma = 0.2, 2.0
    start = load = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start, load = time.perf_counter(), os.getloadavg()[0]
        opt.zero_grad(set_to_none=True)
        with autocast(args.precision):
            g, mu, log_var = vae(x)
            logits = clf(x - g)
            rec = F.mse_loss(g, x)
            kl = (-0.5 * (1 + log_var - mu.pow(2) - log_var.exp())).mean()
            loss = rec + beta * kl + gamma * F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        last_loss = float(loss.detach())
    seconds = time.perf_counter() - start
    ips = round(args.steps * args.batch / seconds, 2)
    print(json.dumps({"figure": "torch_cdvae_cifar", "framework": "torch",
                      "precision": args.precision, "images_per_s": ips,
                      "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
                      "peak_rss_mb": round(vm_hwm_mb()), "load_avg_1m": round(load, 2),
                      "last_loss": round(last_loss, 4), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
