"""The one place that knows NumPy from CuPy.

Every op asks `xp_of(*arrays)` for the array module of the arrays it was handed, so NumPy and
CuPy tensors can live side by side in one process. `MINIVLM_BACKEND=numpy|cupy` (default numpy)
only decides where *new* tensors are created. The handful of functions whose spelling differs
between the two libraries (scatter-add, erf, sliding windows, random numbers) live here too.
"""
import os

import numpy

BACKENDS = ("numpy", "cupy")
ALIASES = {"cpu": "numpy", "cuda": "cupy", "gpu": "cupy"}
_INSTALL_HINT = ('install CuPy for your CUDA version, e.g. pip install "minivlm[cuda]" '
                 "(which pulls cupy-cuda12x), or unset MINIVLM_BACKEND to use NumPy")
_cupy = None


def _load_cupy():
    """Import CuPy and check that a GPU answers; a clear error otherwise (never a fallback)."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()
            cupy.zeros(1)
        except Exception as e:  # ImportError, CUDARuntimeError, missing libraries ...
            raise RuntimeError(f"MINIVLM_BACKEND=cupy asks for the GPU backend, but CuPy cannot "
                               f"run here ({type(e).__name__}: {e}); {_INSTALL_HINT}") from e
        _cupy = cupy
    return _cupy


def canonical_name(name):
    """'numpy' | 'cupy' for a backend name or alias ('cpu', 'cuda'); ValueError otherwise."""
    name = ALIASES.get(str(name).lower(), str(name).lower())
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: valid backends are {', '.join(BACKENDS)}")
    return name


def is_backend_name(name):
    """True for 'numpy', 'cupy' and their aliases ('cpu', 'cuda', 'gpu'), in any case."""
    return isinstance(name, str) and name.lower() in (*BACKENDS, *ALIASES)


def is_dtype(name):
    """True for a dtype or a dtype's name (bfloat16 included, which dtype() then refuses)."""
    try:
        numpy.dtype(name)
        return True
    except TypeError:
        return str(name) == "bfloat16"


def dtype(name):
    """A NumPy dtype for a dtype or its name ('float32', numpy.float16, ...); a clear error for
    what NumPy and CuPy cannot hold (bfloat16: minivlm reads BF16 checkpoints into float32)."""
    if str(name) == "bfloat16":
        raise TypeError("bfloat16 tensors are not supported (NumPy and CuPy have no bfloat16); "
                        "minivlm reads BF16 checkpoints into float32")
    try:
        return numpy.dtype(name)
    except TypeError:
        raise TypeError(f"{name!r} is not a dtype") from None


def finfo(dtype):
    """The limits of a float dtype (eps, max, min, tiny), as torch.finfo."""
    return numpy.finfo(dtype)


def iinfo(dtype):
    return numpy.iinfo(dtype)


def default_name():
    """The backend named by MINIVLM_BACKEND (default 'numpy')."""
    value = os.environ.get("MINIVLM_BACKEND", "numpy")
    try:
        return canonical_name(value)
    except ValueError:
        raise ValueError(f"MINIVLM_BACKEND={value!r} is not a backend: valid values are "
                         f"{', '.join(BACKENDS)}") from None


def module(name):
    """The array module for a backend name."""
    return numpy if canonical_name(name) == "numpy" else _load_cupy()


def default_xp():
    """The array module new tensors are created with."""
    return module(default_name())


def is_cupy_array(a):
    return type(a).__module__.startswith("cupy")


def is_array(a):
    """True for NumPy arrays and scalars and CuPy arrays."""
    return isinstance(a, (numpy.ndarray, numpy.generic)) or is_cupy_array(a)


def as_array(a):
    """`a`, a NumPy scalar (what NumPy returns from 0-d arithmetic and reductions) as the 0-d
    array it stands for; arrays as they are."""
    return numpy.asarray(a) if isinstance(a, numpy.generic) else a


def xp_of(*arrays):
    """numpy or cupy, from the type of the arrays given (non-arrays are ignored)."""
    for a in arrays:
        if is_cupy_array(a):
            return _load_cupy()
    return numpy


def name_of(a):
    return "cupy" if is_cupy_array(a) else "numpy"


def to_numpy(a):
    """A host NumPy array."""
    return a.get() if is_cupy_array(a) else numpy.asarray(a)


def to_backend(a, name):
    """The array `a` on backend `name` (no copy when it is already there)."""
    name = canonical_name(name)
    if name == name_of(a):
        return a if is_cupy_array(a) else numpy.asarray(a)
    return _load_cupy().asarray(a) if name == "cupy" else a.get()


def cupy_available():
    """True when CuPy imports and a GPU answers."""
    try:
        _load_cupy()
        return True
    except RuntimeError:
        return False


# --- the spots where NumPy and CuPy are spelled differently ------------------------------------

def scatter_add(target, index, values):
    """target[index] += values, accumulating repeated indices (in place)."""
    if is_cupy_array(target):
        import cupyx
        cupyx.scatter_add(target, index, values)
    else:
        numpy.add.at(target, index, values)
    return target


def erf(a):
    if is_cupy_array(a):
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(a)
    import scipy.special
    return scipy.special.erf(a)


def sliding_window_view(a, window_shape, axis):
    """A read-only strided view of all windows (see numpy.lib.stride_tricks)."""
    if is_cupy_array(a):
        from cupy.lib.stride_tricks import sliding_window_view as view
    else:
        from numpy.lib.stride_tricks import sliding_window_view as view
    return view(a, window_shape, axis=axis)


_seed = None
_generators = {}


def manual_seed(seed):
    """Reseed the random generators of every backend (initialisation, dropout, randn)."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def rng(xp):
    """The random Generator of array module `xp` (seeded by manual_seed, fresh entropy otherwise)."""
    name = "cupy" if xp is not numpy else "numpy"
    if name not in _generators:
        _generators[name] = xp.random.default_rng(_seed)
    return _generators[name]
