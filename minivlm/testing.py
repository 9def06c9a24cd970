"""Helpers for testing code built on minivlm: a finite-difference gradient check, a
relative-error comparison, and the list of backends to test on.

Host-side code (it uses NumPy); the library itself never imports it. The hypothesis strategies
of minivlm's own tests live in tests/strategies.py.
"""
import math
import os

import numpy as np

from . import backend
from .autograd import Tensor, no_grad


# --- gradient check -------------------------------------------------------------------------------

def gradcheck(fn, inputs, eps=1e-6, rtol=1e-5, atol=1e-6, n_directions=3, max_elements=64, seed=0):
    """Check the backward pass of `fn` against central finite differences, in float64.

    `inputs` is a sequence of Tensors (passed to fn positionally) or a dict name -> Tensor (passed
    by keyword); every input with requires_grad is checked. A non-scalar output is reduced to
    f = Σ w·out with fixed random weights w, so `backward(w)` is exercised on it too. An input of
    at most `max_elements` elements is checked element by element; a larger one along
    `n_directions` random directions d (Chainer style), comparing ⟨∇f, d⟩ with
    (f(x + εd) − f(x − εd)) / 2ε. An error above atol + rtol·|numeric| raises AssertionError
    naming the input and its worst element (or direction) with both values. The inputs' .grad
    are left holding the analytic gradients.
    """
    by_keyword = isinstance(inputs, dict)
    named = dict(inputs) if by_keyword else dict(enumerate(inputs))

    def call():
        return fn(**named) if by_keyword else fn(*named.values())

    checked = {key: t for key, t in named.items() if t.requires_grad}
    for key, t in checked.items():
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck: {_label(key)} is {t.dtype}; finite differences need "
                            f"float64")
    out = call()
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype}; finite differences need float64")
    weight = np.random.default_rng(seed).standard_normal(out.shape)

    def objective():
        with no_grad():
            return float(np.sum(backend.to_numpy(call().array) * weight))

    for t in checked.values():
        t.grad = None
    out.backward(weight)
    rng = np.random.default_rng(seed + 1)
    for key, t in checked.items():
        analytic = np.zeros(t.shape) if t.grad is None else backend.to_numpy(t.grad.array)
        if analytic.shape != t.shape:
            raise AssertionError(f"gradcheck: the gradient of {_label(key)} has shape "
                                 f"{analytic.shape} but the input has shape {t.shape}")
        if t.numel() <= max_elements:
            probes = [(f"element {tuple(map(int, np.unravel_index(i, t.shape)))}",
                       _one_hot(t.shape, i))
                      for i in range(t.numel())]
        else:
            probes = [(f"random direction {i + 1} of {n_directions}", rng.standard_normal(t.shape))
                      for i in range(n_directions)]
        _compare_along(t, objective, analytic, probes, eps, rtol, atol, _label(key))


def _label(key):
    return f"input {key!r}" if isinstance(key, str) else f"input {key}"


def _one_hot(shape, flat_index):
    d = np.zeros(math.prod(shape))
    d[flat_index] = 1.0
    return d.reshape(shape)


def _compare_along(t, objective, analytic, probes, eps, rtol, atol, label):
    """Compare ⟨analytic, d⟩ with the central difference of `objective` along each probe d."""
    original = t.array
    worst, failures = None, 0
    try:
        for where, d in probes:
            step = backend.to_backend(eps * d, t.device)
            t.array = original + step
            f_plus = objective()
            t.array = original - step
            f_minus = objective()
            numeric = (f_plus - f_minus) / (2 * eps)
            exact = float(np.sum(analytic * d))
            excess = abs(exact - numeric) - (atol + rtol * abs(numeric))
            excess = math.inf if math.isnan(excess) else excess
            failures += excess > 0
            if worst is None or excess > worst[0]:
                worst = excess, where, exact, numeric
    finally:
        t.array = original
    if failures:
        _, where, exact, numeric = worst
        raise AssertionError(
            f"gradcheck: the gradient of {label} is wrong at {failures} of {len(probes)} probes; "
            f"worst: {where}: analytic {exact:.8g}, numeric {numeric:.8g} "
            f"(|difference| {abs(exact - numeric):.3g} > atol {atol:g} + rtol {rtol:g}·|numeric|)")


# --- comparing results ----------------------------------------------------------------------------

def assert_close(actual, expected, rtol=1e-4, atol=0.0, elementwise=False):
    """Assert ‖actual − expected‖ ≤ atol + rtol·‖expected‖ (2-norms over all elements), or with
    elementwise=True |actual − expected| ≤ atol + rtol·|expected| at every element (the rule of
    numpy.allclose).

    The norm lets a few wrong elements of a big tensor pass (one error of 0.05 among 10⁶
    elements of size 1 is within rtol 1e-4 of the norm); the elementwise rule catches them, but
    needs an `atol` for elements that rounding leaves near zero. Accepts Tensors, NumPy or CuPy
    arrays and Python numbers; compares in float64 on the host. Non-finite values must match
    exactly (same positions, same infinities); `atol` guards an expected value that is (nearly)
    all zeros.
    """
    a, b = _host_float64(actual), _host_float64(expected)
    if a.shape != b.shape:
        raise AssertionError(f"assert_close: shapes differ: actual {a.shape}, expected {b.shape}")
    finite = np.isfinite(b)
    same_non_finite = np.array_equal(a[~finite], b[~finite], equal_nan=True)
    if not same_non_finite or not np.isfinite(a[finite]).all():
        raise AssertionError(f"assert_close: non-finite values differ (shape {a.shape}):\n"
                             f"actual   {a}\nexpected {b}")
    if elementwise:
        _assert_close_elementwise(a[finite], b[finite], rtol, atol, np.argwhere(finite))
        return
    difference, size = np.linalg.norm(a[finite] - b[finite]), np.linalg.norm(b[finite])
    if not difference <= atol + rtol * size:
        relative = difference / size if size else math.inf
        raise AssertionError(f"assert_close: relative error {relative:.3g} > rtol {rtol:g} "
                             f"(‖a−b‖ {difference:.3g}, ‖b‖ {size:.3g}, atol {atol:g}, "
                             f"shape {a.shape})")


def _assert_close_elementwise(a, b, rtol, atol, positions):
    """|a − b| ≤ atol + rtol·|b| for flat a, b whose elements sit at `positions` (n, ndim)."""
    excess = np.abs(a - b) - (atol + rtol * np.abs(b))
    wrong = np.flatnonzero(excess > 0)
    if wrong.size:
        worst = wrong[np.argmax(excess[wrong])]
        raise AssertionError(
            f"assert_close: {wrong.size} of {a.size} elements differ by more than atol {atol:g} "
            f"+ rtol {rtol:g}·|expected|; worst at {tuple(map(int, positions[worst]))}: actual "
            f"{a[worst]:.8g}, expected {b[worst]:.8g}")


def _host_float64(x):
    data = x.array if isinstance(x, Tensor) else x
    return np.asarray(backend.to_numpy(data) if backend.is_array(data) else data, dtype=np.float64)


# --- backends -------------------------------------------------------------------------------------

def available_backends():
    """The backends to run the tests on: MINIVLM_TEST_BACKENDS="numpy,cupy" when set (asking for
    one that cannot run here is an error, never a silent skip), else numpy and, where a GPU
    answers, cupy."""
    requested = os.environ.get("MINIVLM_TEST_BACKENDS", "").strip()
    if not requested:
        return ["numpy"] + (["cupy"] if backend.cupy_available() else [])
    names = [backend.canonical_name(name.strip()) for name in requested.split(",") if name.strip()]
    for name in names:
        try:
            backend.module(name)
        except RuntimeError as e:
            raise RuntimeError(f"MINIVLM_TEST_BACKENDS={requested!r} asks for {name}, which "
                               f"cannot run here: {e}") from e
    return names
