"""Tier 1: every op's backward against central finite differences, in float64.

The catalogue in op_cases.py gives each op's inputs; the tests below add what a catalogue entry
cannot say: graphs that reuse a node, backward on a non-scalar, dropout, attention rows with every
key masked, and a planted wrong backward that gradcheck must catch.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm as mv
import minivlm.functional as F
from minivlm.autograd import Function
from minivlm.testing import gradcheck
from strategies import arrays, finite_floats, shapes
from op_cases import CASES, ours_params

nonzero = finite_floats(min_magnitude=0.1)


def leaf(values):
    return mv.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


# embedding's padding_idx withholds the padding row's gradient on purpose (as torch): see
# test_embedding_padding_row_gets_no_gradient
GRADCHECKED = [case for case in CASES if case.name != "embedding"]


@pytest.mark.parametrize("case", GRADCHECKED, ids=str)
@given(data=st.data())
def test_backward_matches_finite_differences(case, data):
    inputs, params = data.draw(case.inputs, label="inputs, params")
    params = ours_params(params, "numpy")
    gradcheck(lambda **tensors: case.ours(**tensors, **params),
              {name: leaf(values) for name, values in inputs.items()})


# --- gradcheck itself ----------------------------------------------------------------------------

class SquareWithWrongBackward(Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return grad * self.x  # wrong on purpose: d(x²)/dx is 2x


@given(st.data())
def test_gradcheck_names_the_input_whose_backward_is_wrong(data):
    a, b = (data.draw(arrays((2, 3), elements=nonzero)) for _ in range(2))
    with pytest.raises(AssertionError, match=r"input 'b' is wrong .* worst: element \(.*analytic"):
        gradcheck(lambda a, b: F.mul(a, SquareWithWrongBackward.apply(b)),
                  {"a": leaf(a), "b": leaf(b)})


def test_gradcheck_catches_a_wrong_backward_along_random_directions():
    x = leaf(np.linspace(0.5, 2.0, 100))  # more elements than max_elements: directions
    with pytest.raises(AssertionError, match=r"input 0 is wrong .* random direction"):
        gradcheck(SquareWithWrongBackward.apply, [x], max_elements=64)


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(F.exp, [mv.tensor([1.0], requires_grad=True)])


# --- graphs ---------------------------------------------------------------------------------------

@given(arrays(shapes(1, 3)))
def test_a_node_used_twice_sums_both_gradients(values):
    def diamond(x):
        y = F.tanh(x)  # one node, two consumers
        return F.exp(y) * y + F.sum(y * y)
    gradcheck(diamond, [leaf(values)])


def test_diamond_gradients_by_hand():
    x = leaf([1.0, -2.0])
    y = x * 3.0
    (y * y + y).sum().backward()  # d/dx (9x² + 3x) = 18x + 3
    np.testing.assert_allclose(x.grad.numpy(), [21.0, -33.0])
    z = leaf([1.5, 2.0])
    (z + z).sum().backward()  # the same tensor on both sides of one op
    np.testing.assert_allclose(z.grad.numpy(), [2.0, 2.0])


@given(arrays(shapes(2, 2)))
def test_views_of_one_node_all_reach_it(values):
    def views(x):
        y = x * 2.0
        return (y.T * F.sum(y[0])).T + F.reshape(y, -1).sum() + F.split(y, 1, dim=0)[-1]
    gradcheck(views, [leaf(values)])


@given(arrays(shapes(1, 3)), st.data())
def test_backward_on_a_non_scalar_takes_the_given_gradient(values, data):
    upstream = data.draw(arrays(values.shape))
    x = leaf(values)
    (x * x).backward(mv.tensor(upstream))
    np.testing.assert_allclose(x.grad.numpy(), 2 * values * upstream, atol=1e-300)  # subnormals


def test_unused_pieces_and_repeated_indices():
    x = leaf(np.arange(6.0).reshape(3, 2))
    F.split(x, 1, dim=0)[1].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0], [1, 1], [0, 0]])
    y = leaf(np.arange(3.0))
    y[mv.tensor([0, 0, 2, 0])].sum().backward()  # repeats accumulate
    np.testing.assert_array_equal(y.grad.numpy(), [3, 0, 1])


@given(st.data())
def test_embedding_padding_row_gets_no_gradient(data):
    weight = data.draw(arrays((4, 3)))
    ids = data.draw(arrays(shapes(1, 2), dtype=np.int64, elements=st.integers(0, 3)))
    padding_idx = data.draw(st.integers(0, 3))
    gradcheck(lambda weight: F.embedding(ids, weight), [leaf(weight)])
    plain, padded = leaf(weight), leaf(weight)
    upstream = mv.tensor(data.draw(arrays((*ids.shape, 3))))
    F.embedding(ids, plain).backward(upstream)
    F.embedding(ids, padded, padding_idx=padding_idx).backward(upstream)
    expected = plain.grad.numpy().copy()
    expected[padding_idx] = 0.0
    np.testing.assert_array_equal(padded.grad.numpy(), expected)


# --- dropout --------------------------------------------------------------------------------------

def _seeded(seed, op, *args, **kwargs):
    """op(*args) right after mv.manual_seed(seed): the same random mask on every call."""
    mv.manual_seed(seed)
    return op(*args, **kwargs)


@given(arrays(shapes(1, 2, max_side=8), elements=nonzero), st.sampled_from([0.1, 0.5, 0.9]),
       st.integers(0, 2**32 - 1))
def test_dropout_zeroes_and_rescales_with_the_mask_it_drew(values, p, seed):
    x = leaf(values)
    y = _seeded(seed, F.dropout, x, p)
    kept = y.numpy() != 0  # values are nonzero, so a zero output was dropped
    np.testing.assert_allclose(y.numpy(), np.where(kept, values / (1 - p), 0.0))
    y.backward(mv.ones(*values.shape, dtype="float64"))
    np.testing.assert_allclose(x.grad.numpy(), kept / (1 - p))
    gradcheck(lambda x: _seeded(seed, F.dropout, x, p), [leaf(values)])


def test_dropout_drops_about_p_and_only_in_training():
    x = mv.ones(200, 200, dtype="float64")
    mv.manual_seed(0)
    dropped = (F.dropout(x, 0.3).numpy() == 0).mean()
    assert abs(dropped - 0.3) < 0.01  # 40000 draws: 4.4 standard deviations
    assert F.dropout(x, 0.3, training=False) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), 0.0)
    with pytest.raises(ValueError, match="1.5"):
        F.dropout(x, 1.5)


# --- attention ------------------------------------------------------------------------------------

@given(st.data())
def test_attention_dropout_backward(data):
    q, k, v = (data.draw(arrays((2, 2, 3))) for _ in range(3))
    seed = data.draw(st.integers(0, 2**32 - 1))
    gradcheck(lambda q, k, v: _seeded(seed, F.scaled_dot_product_attention, q, k, v, dropout_p=0.4),
              [leaf(q), leaf(k), leaf(v)])


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_attention_row_with_every_key_masked_gives_zeros_and_zero_gradients(mask_kind):
    rng = np.random.default_rng(0)
    q, k, v = leaf(rng.standard_normal((3, 4))), leaf(rng.standard_normal((5, 4))), \
        leaf(rng.standard_normal((5, 2)))
    allowed = np.ones((3, 5), dtype=bool)
    allowed[1] = False  # query 1 may attend to nothing
    mask = mv.tensor(allowed) if mask_kind == "bool" else \
        mv.tensor(np.where(allowed, 0.0, -np.inf), requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out.backward(mv.tensor(rng.standard_normal((3, 2))))
    np.testing.assert_array_equal(out.numpy()[1], 0.0)
    np.testing.assert_array_equal(q.grad.numpy()[1], 0.0)
    for t in (out, q.grad, k.grad, v.grad) + ((mask.grad,) if mask_kind == "float" else ()):
        assert np.isfinite(t.numpy()).all()
    if mask_kind == "bool":  # the other rows still differentiate correctly
        gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                  [leaf(q.numpy()), leaf(k.numpy()), leaf(v.numpy())])
