"""Registry of experiments: ``@register("cdvae_table4")`` on a ``run(context) -> Result``.

``tfdefense reproduce`` runs every registered experiment (or those named) with
one shared ``Context`` so models are trained once per run.

Example:
    >>> from tfdefense.experiments.registry import available
    >>> isinstance(available(), list)
    True
"""

from __future__ import annotations

from collections.abc import Callable

_EXPERIMENTS: dict[str, Callable] = {}
_ORDER: dict[str, int] = {}


def register(name: str, order: int = 100) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn(context) -> Result`` as experiment ``name``.

    ``order`` sorts the report (lower first); names must be unique.
    """

    def wrap(fn: Callable) -> Callable:
        if name in _EXPERIMENTS and _EXPERIMENTS[name] is not fn:
            raise ValueError(f"experiment {name!r} is registered twice")
        _EXPERIMENTS[name] = fn
        _ORDER[name] = order
        return fn

    return wrap


def available() -> list[str]:
    """Registered experiment names in report order."""
    return sorted(_EXPERIMENTS, key=lambda n: (_ORDER[n], n))


def get(name: str) -> Callable:
    if name not in _EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(available())}")
    return _EXPERIMENTS[name]
