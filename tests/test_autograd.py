"""The Tensor and its backward: creation dtypes, grad bookkeeping, graph lifetime, operators, and
clear errors on bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import minivlm as mv
import minivlm.functional as F
from strategies import arrays, shapes


# --- creation -------------------------------------------------------------------------------------

@given(hnp.arrays(st.sampled_from(["float64", "float32", "float16", "int32", "int64", "uint8",
                                   "bool"]), shapes(0, 3)))
def test_tensor_from_numpy_keeps_dtype_and_copies(values):
    t = mv.tensor(values)
    assert t.dtype == values.dtype and t.shape == values.shape
    np.testing.assert_array_equal(t.numpy(), values)
    assert not np.shares_memory(t.numpy(), values)  # a copy, not a view


@pytest.mark.parametrize("data, dtype", [
    (1.5, "float32"), ([1.0, 2.0], "float32"), ([[1, 2.5]], "float32"), (3, "int64"),
    ([1, 2], "int64"), (True, "bool"), ([True, False], "bool")])
def test_tensor_from_python_values(data, dtype):
    assert mv.tensor(data).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(mv.tensor(data).numpy(), data)


def test_tensor_with_an_explicit_dtype():
    assert mv.tensor([1, 2], dtype="float64").dtype == np.float64
    assert mv.tensor(np.ones(2), dtype="float32").dtype == np.float32


def test_creation_functions():
    assert mv.zeros(2, 3).shape == mv.zeros((2, 3)).shape == (2, 3)
    assert {t.dtype for t in (mv.zeros(2), mv.ones(2), mv.randn(2), mv.rand(2))} == {np.dtype("float32")}
    assert mv.ones(2, dtype="float64").dtype == np.float64
    np.testing.assert_array_equal(mv.full((2, 2), 7.0).numpy(), [[7, 7], [7, 7]])
    assert mv.arange(4).dtype == np.int64 and mv.arange(0.0, 1.0, 0.5).dtype == np.float32
    np.testing.assert_array_equal(mv.arange(1, 7, 2).numpy(), [1, 3, 5])
    assert mv.zeros_like(mv.ones(2, 2, dtype="float64")).dtype == np.float64
    assert mv.randn(2, 3, requires_grad=True).requires_grad
    assert all(0 <= v < 1 for v in mv.rand(100).numpy())


def test_parameter_is_a_leaf_that_requires_grad():
    p = mv.Parameter(mv.tensor([1.0, 2.0]))
    assert isinstance(p, mv.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:\ntensor(")


# --- grad bookkeeping ----------------------------------------------------------------------------

def test_requires_grad_propagates_from_any_input():
    a, b = mv.tensor([1.0], requires_grad=True), mv.tensor([2.0])
    assert (a * b).requires_grad and (b * a).requires_grad
    assert not (b * b).requires_grad
    assert not (a * b).is_leaf and a.is_leaf


def test_no_grad_records_nothing_and_restores_on_error():
    a = mv.tensor([1.0], requires_grad=True)
    with mv.no_grad():
        b = a * 2
        assert not mv.is_grad_enabled()
    assert not b.requires_grad and b.is_leaf
    with pytest.raises(ZeroDivisionError), mv.no_grad():
        1 / 0
    assert mv.is_grad_enabled() and (a * 2).requires_grad


def test_detach_shares_values_and_cuts_the_graph():
    a = mv.tensor([1.0, 2.0], requires_grad=True)
    b = (a * 3).detach()
    assert not b.requires_grad and b.is_leaf
    np.testing.assert_array_equal(b.numpy(), [3.0, 6.0])
    (a * F.sum(b)).sum().backward()  # b is a constant 9 here
    np.testing.assert_array_equal(a.grad.numpy(), [9.0, 9.0])


def test_second_backward_needs_retain_graph():
    a = mv.tensor([1.0, 2.0], requires_grad=True)
    y = (a * a).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(a.grad.numpy(), [4.0, 8.0])  # 2a, twice
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_gradients_accumulate_across_backward_calls():
    a = mv.tensor([1.0, -1.0], requires_grad=True)
    (a * 2).sum().backward()
    (a * a).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2 + 2, 2 - 2])


def test_each_leaf_owns_its_gradient():
    """a + b hands the same upstream array to both leaves: each .grad must be a copy, or the
    next backward's accumulation into one would change the other (and the caller's array)."""
    a, b = mv.tensor([1.0, 2.0], requires_grad=True), mv.tensor([3.0, 4.0], requires_grad=True)
    upstream = np.ones(2)
    for _ in range(2):
        (a + b).backward(upstream)
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(upstream, [1.0, 1.0])


def test_non_leaf_tensors_keep_no_grad():
    a = mv.tensor([1.0], requires_grad=True)
    b = a * 2
    (b * b).sum().backward()
    assert b.grad is None and a.grad is not None


@given(arrays(shapes(0, 4)))
def test_transpose_property_reverses_dims_and_routes_gradients_back(values):
    x = mv.tensor(values, requires_grad=True)
    np.testing.assert_array_equal(x.T.numpy(), values.T)
    upstream = np.arange(values.size, dtype=np.float64).reshape(values.T.shape)
    x.T.backward(mv.tensor(upstream))
    np.testing.assert_array_equal(x.grad.numpy(), upstream.T)


def test_comparisons_are_boolean_and_carry_no_gradient():
    a = mv.tensor([1.0, 2.0], requires_grad=True)
    for result in (a > 1.5, a >= 1, a < a, a <= 2, a == 1, a != mv.tensor([1.0, 0.0])):
        assert result.dtype == np.bool_ and not result.requires_grad
    np.testing.assert_array_equal((a > 1.5).numpy(), [False, True])


def test_truth_value_of_one_element_and_of_many():
    assert not mv.tensor(0.0) and mv.tensor([2.0]) and not mv.tensor([0.0])
    with pytest.raises(ValueError, match="ambiguous"):
        bool(mv.tensor([1.0, 2.0]))


def test_item_and_numpy():
    t = mv.tensor([[1.5]])
    assert t.item() == 1.5 and isinstance(t.item(), float)
    assert isinstance(t.numpy(), np.ndarray) and t.numpy().dtype == np.float32
    assert t.tolist() == [[1.5]]


@pytest.mark.parametrize("scalar", [2, 2.5, np.float64(2.5)])
def test_operators_with_a_scalar_on_either_side_keep_float32(scalar):
    x = mv.tensor([1.0, 2.0])
    for result in (x + scalar, scalar + x, x - scalar, scalar - x, x * scalar, scalar * x,
                   x / scalar, scalar / x, x ** scalar, scalar ** x, -x):
        assert result.dtype == np.float32


def test_operators_compute_what_they_say():
    x, y = mv.tensor([1.0, 4.0]), mv.tensor([2.0, 2.0])
    cases = {"+": (x + y, [3, 6]), "-": (x - y, [-1, 2]), "*": (x * y, [2, 8]),
             "/": (x / y, [0.5, 2]), "**": (x ** y, [1, 16]), "@": (x @ y, 10),
             "neg": (-x, [-1, -4]), "rsub": (1 - x, [0, -3]), "rdiv": (4 / x, [4, 1]),
             "rpow": (2 ** x, [2, 16])}
    for name, (result, expected) in cases.items():
        np.testing.assert_allclose(result.numpy(), expected, err_msg=name)


def test_repr():
    assert repr(mv.tensor([1.0, 2.0])) == "tensor([1., 2.], dtype=float32)"
    assert repr(mv.tensor([1.0], requires_grad=True)) == \
        "tensor([1.], dtype=float32, requires_grad=True)"
    assert repr(mv.tensor([1, 2])) == "tensor([1, 2])"


def test_methods_mirror_functional():
    x = mv.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(x.sum(dim=-1, keepdim=True).numpy(), [[3.0], [12.0]])
    np.testing.assert_array_equal(x.reshape(3, 2).numpy(), np.arange(6.0).reshape(3, 2))
    np.testing.assert_allclose(x.softmax(-1).numpy().sum(axis=-1), [1.0, 1.0])
    np.testing.assert_array_equal(x.max(dim=1).indices.numpy(), [2, 2])
    with pytest.raises(AttributeError, match="no_such_method"):
        x.no_such_method()


def test_cast_to_another_dtype_passes_the_gradient_back_in_the_original_dtype(monkeypatch):
    reaching, accumulate = [], mv.Tensor._accumulate   # before the leaf casts what it receives
    monkeypatch.setattr(mv.Tensor, "_accumulate",
                        lambda leaf, g: reaching.append(g.dtype) or accumulate(leaf, g))
    x = mv.tensor([1.0, 2.0], requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64 and x.to("float64").dtype == np.float64
    (y * y).sum().backward()
    assert reaching == [np.float32] and x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])


# --- errors ---------------------------------------------------------------------------------------

def test_matmul_with_mismatched_shapes_names_both():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 3\)"):
        mv.ones(2, 3) @ mv.ones(2, 3)
    with pytest.raises(ValueError, match=r"\(4,\) and \(3, 2\)"):
        mv.ones(4) @ mv.ones(3, 2)


def test_add_with_shapes_that_do_not_broadcast_names_both():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\)"):
        mv.ones(2, 3) + mv.ones(4)


def test_linear_with_the_wrong_width_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(5, 4\)"):
        F.linear(mv.ones(2, 3), mv.ones(5, 4))


def test_backward_errors_are_clear():
    x = mv.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar.*\(2,\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        mv.tensor([1.0]).sum().backward()
