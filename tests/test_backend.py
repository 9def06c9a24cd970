"""Choosing a backend: MINIVLM_BACKEND and its errors, moving tensors between backends, NumPy and
CuPy side by side, seeded random numbers, and the list of backends the tests run on."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm as mv
import minivlm.functional as F
from minivlm import backend as mv_backend
from minivlm.testing import assert_close, available_backends

ROOT = pathlib.Path(__file__).resolve().parent.parent
needs_gpu = pytest.mark.skipif(not mv_backend.cupy_available(),
                               reason="CuPy cannot run here (no CuPy or no GPU)")


def _run_python(code, **env):
    """Run `code` in a fresh interpreter that imports minivlm from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(mv_backend.cupy_available(), reason="CuPy runs here, so there is no error")
def test_cupy_backend_without_cupy_is_a_clear_error():
    result = _run_python("import minivlm as mv; mv.tensor([1.0])", MINIVLM_BACKEND="cupy")
    assert result.returncode != 0
    assert "MINIVLM_BACKEND" in result.stderr and 'pip install "minivlm[cuda]"' in result.stderr


def test_unknown_backend_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("MINIVLM_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"MINIVLM_BACKEND='tpu'.*numpy, cupy"):
        mv.zeros(1)


@pytest.mark.parametrize("value", ["numpy", "NumPy", "cpu"])
def test_numpy_backend_by_name_or_alias(monkeypatch, value):
    monkeypatch.setenv("MINIVLM_BACKEND", value)
    assert mv_backend.default_name() == "numpy"
    assert mv.zeros(1).device == "numpy"


def test_to_numpy_and_numpy_give_host_arrays():
    x = mv.tensor([1.0, 2.0], requires_grad=True)
    y = x.to("numpy")
    assert y.device == "numpy" and y is x             # already there: x itself, as torch
    assert isinstance(x.numpy(), np.ndarray) and isinstance(x.cpu().numpy(), np.ndarray)
    (y * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    with pytest.raises(ValueError, match="'tpu'.*numpy, cupy"):  # neither a backend nor a dtype
        x.to("tpu")


@needs_gpu
def test_numpy_and_cupy_tensors_side_by_side():
    values = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    on_host = mv.tensor(values, requires_grad=True)
    on_gpu = mv.tensor(values, device="cupy", requires_grad=True)
    assert (on_host.device, on_gpu.device) == ("numpy", "cupy")
    assert mv_backend.is_cupy_array(on_gpu.array) and isinstance(on_gpu.numpy(), np.ndarray)
    for t in (on_host, on_gpu):
        F.softmax(t @ t.T, dim=-1).sum().backward()
    assert on_gpu.grad.device == "cupy"
    assert_close(on_gpu.grad, on_host.grad, rtol=1e-5)
    moved = on_host.to("cupy")  # a gradient flows back across the move, onto the host
    (moved * moved).sum().backward()
    assert on_host.grad.device == "numpy"
    assert moved.to("numpy").device == "numpy"


@given(st.integers(0, 2**32 - 1))
def test_manual_seed_makes_random_numbers_reproducible(backend, seed):
    def draw():
        mv.manual_seed(seed)
        x = mv.ones(50, device=backend)
        return (mv.randn(3, 4, device=backend).numpy(), mv.rand(5, device=backend).numpy(),
                mv.randint(0, 10, (6,), device=backend).numpy(), F.dropout(x, 0.5).numpy())
    first, second = draw(), draw()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    mv.manual_seed(seed + 1)
    assert not np.array_equal(mv.randn(3, 4, device=backend).numpy(), first[0])


# --- the backends the tests run on ----------------------------------------------------------------

def test_available_backends_follow_the_environment(monkeypatch):
    monkeypatch.delenv("MINIVLM_TEST_BACKENDS", raising=False)
    assert available_backends() == ["numpy"] + (["cupy"] if mv_backend.cupy_available() else [])
    monkeypatch.setenv("MINIVLM_TEST_BACKENDS", "numpy")
    assert available_backends() == ["numpy"]
    monkeypatch.setenv("MINIVLM_TEST_BACKENDS", "numpy,tpu")
    with pytest.raises(ValueError, match="tpu"):
        available_backends()


@pytest.mark.skipif(mv_backend.cupy_available(), reason="CuPy runs here")
def test_asking_to_test_on_cupy_without_cupy_is_an_error_not_a_skip(monkeypatch):
    monkeypatch.setenv("MINIVLM_TEST_BACKENDS", "numpy,cupy")
    with pytest.raises(RuntimeError, match="MINIVLM_TEST_BACKENDS='numpy,cupy' asks for cupy"):
        available_backends()
