"""Hypothesis strategies for minivlm's tests: bounded floats, array shapes, arrays, arrays without
ties, and pairs of broadcastable shapes."""
import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def finite_floats(min_value=-3.0, max_value=3.0, min_magnitude=0.0):
    """Finite floats in [min_value, max_value], at least `min_magnitude` away from zero (to keep
    clear of kinks such as |x| and relu at 0)."""
    floats = st.floats(min_value, max_value, allow_nan=False, allow_infinity=False)
    if min_magnitude <= 0 or min_value >= min_magnitude or max_value <= -min_magnitude:
        return floats
    positive = st.floats(min_magnitude, max_value) if max_value >= min_magnitude else st.nothing()
    negative = st.floats(min_value, -min_magnitude) if min_value <= -min_magnitude else st.nothing()
    return positive | negative


def shapes(min_dims=1, max_dims=3, max_side=4, min_side=1):
    """Array shapes with min_dims..max_dims dims of min_side..max_side each."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def arrays(shape, dtype="float64", elements=None):
    """Host NumPy arrays of `shape` with bounded elements (finite_floats() by default)."""
    return hnp.arrays(np.dtype(dtype), shape, elements=elements if elements is not None
                      else finite_floats())


@st.composite
def distinct_arrays(draw, shape, spacing=0.1, dtype="float64"):
    """Arrays whose values all differ by more than spacing/2: a shuffled evenly spaced ramp
    (centred on 0) plus a small jitter. For max/min without ties, and for well-conditioned
    variances (layer norm, var) in float32."""
    n = math.prod(shape)
    order = np.array(draw(st.permutations(range(n))), dtype=np.float64)
    jitter = draw(arrays(n, elements=st.floats(-spacing / 4, spacing / 4)))
    return ((order - (n - 1) / 2) * spacing + jitter).reshape(shape).astype(dtype)


def broadcastable_shapes(min_dims=0, max_dims=3, max_side=4):
    """Pairs of shapes (a, b) that broadcast against each other, e.g. ((3, 1, 4), (2, 1))."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=min_dims, max_dims=max_dims,
                                             max_side=max_side).map(lambda r: r.input_shapes)
