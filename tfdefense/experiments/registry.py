"""Registry of experiments: ``@register("cdvae_table4", datasets=(...))`` on ``run(context) -> Result``.

``tfdefense reproduce`` runs every registered experiment (or those named) with
one shared ``Context`` so models are trained once per run. Each experiment
declares the datasets it reproduces, by the papers' names (``Context.ROLES``);
calling it runs it on the first of them the preset maps onto data, with only
the declared ones readable (``Context.experiment``). When the preset runs none
of them, the experiment is not called and its result says why and how to run it.

Example:
    >>> import tempfile
    >>> from tfdefense.experiments import Context, Result
    >>> from tfdefense.experiments.registry import register
    >>> @register("demo_faces", order=999, datasets=("celeb_a",))
    ... def demo(ctx):
    ...     return Result("demo_faces", "Demo", ctx.preset, ctx.dataset)
    >>> demo(Context("quick", tempfile.mkdtemp())).measurements["status"]
    'not run'
    >>> demo(Context("quick", tempfile.mkdtemp(), {"dataset.celeb_a": "mnist_5k"})).dataset
    'mnist_5k'
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

_EXPERIMENTS: dict[str, Callable] = {}
_ORDER: dict[str, int] = {}
_DATASETS: dict[str, tuple[str, ...]] = {}
_AFTER: dict[str, tuple[str, ...]] = {}
_COST: dict[str, float] = {}

#: what a user does to run an experiment's dataset, per role
HOW_TO_RUN = {
    "cifar10": "`--preset paper` (tfds cifar10, downloaded on first use)",
    "restricted_imagenet": "`--preset paper_imagenet` with the ImageNet archives in tfds' "
                           "manual_dir (tfdefense.data_imagenet)",
    "mnist": "`--preset quick` (embedded mnist_5k) or `--preset paper` (tfds mnist)",
    "fashion_mnist": "`--preset paper` (tfds fashion_mnist, downloaded on first use)",
    "celeb_a": "`--preset paper` (tfds celeb_a, ~1.4 GB download)",
}


def register(name: str, order: int = 100, datasets: Sequence[str] = ("cifar10",),
             after: Sequence[str] = (), cost: float = 0.0) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn(context) -> Result`` as experiment ``name``.

    ``order`` sorts the report (lower first); names must be unique. ``datasets``:
    the roles (``Context.ROLES``) the experiment reproduces; it may read no others.
    ``after``: experiments whose cached files this one reads outside ``Context``'s
    locked cache (e.g. their attack sets); ``reproduce --jobs N`` starts it only once
    those have finished (``tfdefense.report_jobs``). A one-process run ignores it.
    ``cost``: its rough seconds under the quick preset on a 2-core host (the kept
    ``docs/quick_report/profile.jsonl``), read only by ``reproduce --jobs N`` to start the
    longest work first; it changes no number.
    """
    from tfdefense.experiments.context import ROLES

    datasets = tuple(datasets)
    if not datasets or any(d not in ROLES for d in datasets):
        raise ValueError(f"register {name!r}: datasets must be some of {', '.join(ROLES)}, "
                         f"got {datasets}")

    def wrap(fn: Callable) -> Callable:
        if name in _EXPERIMENTS and _EXPERIMENTS[name].__wrapped__ is not fn:
            raise ValueError(f"experiment {name!r} is registered twice")

        @functools.wraps(fn)
        def run(ctx):
            named = ctx.named_roles(datasets)
            if not named:
                return not_run(name, ctx, datasets)
            with ctx.experiment(name, datasets), ctx.on_dataset(named[0]):
                return fn(ctx)

        _EXPERIMENTS[name] = run
        _ORDER[name] = order
        _DATASETS[name] = datasets
        _AFTER[name] = tuple(after)
        _COST[name] = float(cost)
        return run

    return wrap


def not_run(name: str, ctx, datasets: Sequence[str]):
    """The Result of an experiment whose datasets the preset does not run: says so, and how."""
    from tfdefense.experiments.result import Result

    how = "; ".join(f"{d}: {HOW_TO_RUN[d]}" for d in datasets)
    return Result(name, f"{name}: not run under preset `{ctx.preset}`", ctx.preset, "–",
                  notes=[f"Not run: it reproduces {', '.join(datasets)}, and preset "
                         f"`{ctx.preset}` names no data for {'it' if len(datasets) == 1 else 'them'}"
                         f" (data not on this machine). To run it: {how}; or point a role at "
                         "local data with `--set dataset.ROLE=NAME`."],
                  measurements={"status": "not run", "needs": list(datasets)})


def datasets_of(name: str) -> tuple[str, ...]:
    """The dataset roles experiment ``name`` declared."""
    get(name)
    return _DATASETS[name]


def after_of(name: str) -> tuple[str, ...]:
    """The experiments ``name`` must wait for in a run of several processes (``register``'s
    ``after``)."""
    get(name)
    return _AFTER[name]


def cost_of(name: str) -> float:
    """``register``'s ``cost`` of ``name`` (rough quick-preset seconds; 0 when not given)."""
    get(name)
    return _COST[name]


def available() -> list[str]:
    """Registered experiment names in report order."""
    return sorted(_EXPERIMENTS, key=lambda n: (_ORDER[n], n))


def get(name: str) -> Callable:
    if name not in _EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(available())}")
    return _EXPERIMENTS[name]
