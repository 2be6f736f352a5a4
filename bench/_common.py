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
