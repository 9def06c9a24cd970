"""The two measurements every benchmark here shares: a call's wall time and the GEMM rate."""
import time

import numpy as np


def timed(fn):
    """Seconds one call of fn() takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gemm_rate(n=2048, repeats=3):
    """NumPy's float32 matrix-multiply rate on n×n matrices (FLOP/s, best of `repeats`)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best
