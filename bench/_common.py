"""Helpers shared by the benchmarks: JSON lines, peak RSS, steady-state timing."""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(**fields) -> None:
    """Print one JSON line (one figure) and flush."""
    print(json.dumps(fields, sort_keys=True), flush=True)
    sys.stdout.flush()


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def vm_hwm_mb() -> float:
    """Peak resident set size of this process from VmHWM (/proc/self/status), MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmHWM not in /proc/self/status")


def synthetic_images(n: int, shape: tuple[int, ...] = (32, 32, 3), classes: int = 10,
                     seed: int = 0):
    """(images (n, *shape) float32 uniform in [0, 1), labels (n,) int64) of a fixed seed.

    NumPy only, so a benchmark and its PyTorch reference train on the same bytes.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, classes, n).astype(np.int64)
    return x, y
