"""Optimizers, schedules and gradient clipping against torch.optim (tier 3) and by hand."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from minivlm import nn, optim
from minivlm.testing import assert_close

torch = pytest.importorskip("torch")

STEPS = 20
shapes = st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
                  min_size=1, max_size=3)
learning_rates = st.floats(1e-3, 0.5)
fractions = st.floats(0.0, 0.99)


def _run_both(make_ours, make_torch, shapes, seed, dtype="float64", steps=STEPS, rtol=1e-10):
    """Step our optimizer and torch's on the same parameters with the same gradients; compare
    the parameters after every step."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    ours = [mv.Parameter(mv.tensor(v)) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    our_opt, their_opt = make_ours(ours), make_torch(theirs)
    for step in range(steps):
        for p, q in zip(ours, theirs):
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad, q.grad = mv.tensor(g), torch.tensor(g)
        our_opt.step()
        their_opt.step()
        for p, q in zip(ours, theirs):
            assert p.dtype == np.dtype(dtype)
            np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=rtol, atol=rtol,
                                       err_msg=f"step {step}")


@settings(max_examples=25, deadline=None)
@given(shapes=shapes, lr=learning_rates, momentum=fractions, dampening=st.floats(0.0, 0.9),
       weight_decay=st.floats(0.0, 0.1), nesterov=st.booleans(), seed=st.integers(0, 2**16))
def test_sgd_matches_torch(shapes, lr, momentum, dampening, weight_decay, nesterov, seed):
    if nesterov:
        momentum, dampening = max(momentum, 0.1), 0.0
    kwargs = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                  nesterov=nesterov)
    _run_both(lambda ps: optim.SGD(ps, **kwargs), lambda ps: torch.optim.SGD(ps, **kwargs),
              shapes, seed)


adam_hyperparameters = dict(lr=learning_rates, beta1=fractions, beta2=st.floats(0.5, 0.9999),
                            eps=st.sampled_from([1e-8, 1e-6, 1e-3]),
                            weight_decay=st.floats(0.0, 0.2), amsgrad=st.booleans())


@settings(max_examples=25, deadline=None)
@given(shapes=shapes, seed=st.integers(0, 2**16), **adam_hyperparameters)
def test_adamw_matches_torch_float64(shapes, seed, lr, beta1, beta2, eps, weight_decay, amsgrad):
    kwargs = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
    _run_both(lambda ps: optim.AdamW(ps, **kwargs), lambda ps: torch.optim.AdamW(ps, **kwargs),
              shapes, seed)


@settings(max_examples=15, deadline=None)
@given(shapes=shapes, seed=st.integers(0, 2**16), **adam_hyperparameters)
def test_adamw_matches_torch_float32(shapes, seed, lr, beta1, beta2, eps, weight_decay, amsgrad):
    kwargs = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
    _run_both(lambda ps: optim.AdamW(ps, **kwargs), lambda ps: torch.optim.AdamW(ps, **kwargs),
              shapes, seed, dtype="float32", rtol=1e-6)


@settings(max_examples=10, deadline=None)
@given(shapes=shapes, seed=st.integers(0, 2**16), lr=learning_rates, momentum=fractions)
def test_sgd_matches_torch_float32(shapes, seed, lr, momentum):
    kwargs = dict(lr=lr, momentum=momentum, weight_decay=0.01)
    _run_both(lambda ps: optim.SGD(ps, **kwargs), lambda ps: torch.optim.SGD(ps, **kwargs),
              shapes, seed, dtype="float32", rtol=1e-6)


@pytest.mark.parametrize("make", [lambda ps: optim.AdamW(ps, lr=0.05, amsgrad=True),
                                  lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)])
def test_optimizers_run_on_every_backend(backend, make):
    """float32 updates on the backend follow float64 NumPy ones; state saves as NumPy and loads
    back onto the backend."""
    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 4))
    ours = [mv.Parameter(mv.tensor(start, dtype="float32", device=backend))]
    exact = [mv.Parameter(mv.tensor(start))]
    our_opt, exact_opt = make(ours), make(exact)
    for _ in range(10):
        g = rng.standard_normal((3, 4))
        ours[0].grad, exact[0].grad = mv.tensor(g, dtype="float32", device=backend), mv.tensor(g)
        optim.clip_grad_norm_(ours, 1.0)
        optim.clip_grad_norm_(exact, 1.0)
        our_opt.step()
        exact_opt.step()
    assert ours[0].device == backend and ours[0].dtype == np.float32
    assert_close(ours[0], exact[0], rtol=1e-5)
    saved = our_opt.state_dict()
    assert all(type(v) is np.ndarray for s in saved["state"].values() for v in s.values()
               if not np.isscalar(v))
    our_opt.load_state_dict(saved)
    assert all(mv.backend.name_of(v) == backend for s in our_opt.state.values()
               for v in s.values() if mv.backend.is_array(v))


def test_param_groups_use_their_own_lr_and_weight_decay():
    def groups(ps):
        return [{"params": ps[:1]}, {"params": ps[1:], "lr": 0.05, "weight_decay": 0.0}]
    _run_both(lambda ps: optim.AdamW(groups(ps), lr=0.01, weight_decay=0.1),
              lambda ps: torch.optim.AdamW(groups(ps), lr=0.01, weight_decay=0.1),
              [(3, 2), (2,)], seed=0)


def _train(opt, params, grads):
    for g in grads:
        params[0].grad = mv.tensor(g)
        opt.step()


@pytest.mark.parametrize("make", [lambda ps: optim.AdamW(ps, lr=0.1, amsgrad=True),
                                  lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True)])
def test_state_dict_resumes_training_exactly(make):
    rng = np.random.default_rng(0)
    start = rng.standard_normal((2, 3)).astype("float32")
    grads = [rng.standard_normal((2, 3)).astype("float32") for _ in range(10)]

    straight = [mv.Parameter(mv.tensor(start))]
    _train(make(straight), straight, grads)

    first = [mv.Parameter(mv.tensor(start))]
    first_opt = make(first)
    _train(first_opt, first, grads[:5])
    saved, saved_param = first_opt.state_dict(), first[0].numpy().copy()
    _train(first_opt, first, grads[5:7])  # a saved state dict must not follow later steps
    arrays = [v for s in saved["state"].values() for v in s.values() if not np.isscalar(v)]
    assert arrays and all(type(a) is np.ndarray for a in arrays)

    resumed = [mv.Parameter(mv.tensor(saved_param))]
    resumed_opt = make(resumed)
    resumed_opt.load_state_dict(saved)
    _train(resumed_opt, resumed, grads[5:])
    np.testing.assert_array_equal(resumed[0].numpy(), straight[0].numpy())
    assert all(a.dtype == np.float32 for s in resumed_opt.state.values() for a in s.values()
               if hasattr(a, "dtype"))


def test_load_state_dict_rejects_another_layout():
    a = optim.AdamW([mv.Parameter(mv.zeros(2, 3))])
    a.param_groups[0]["params"][0].grad = mv.ones(2, 3)
    a.step()
    b = optim.AdamW([mv.Parameter(mv.zeros(2, 3)), mv.Parameter(mv.zeros(4))])
    with pytest.raises(ValueError, match=r"\[1\].*\[2\]"):
        b.load_state_dict(a.state_dict())
    c = optim.AdamW([mv.Parameter(mv.zeros(3, 2))])
    with pytest.raises(ValueError, match=r"exp_avg.*\(2, 3\).*\(3, 2\)"):
        c.load_state_dict(a.state_dict())
    assert c.state == {}


def test_updates_keep_float32():
    p = mv.Parameter(mv.randn(3, 4))
    opt = optim.AdamW([p], lr=0.1)
    scheduler = optim.cosine_schedule(opt, 2, 10)
    for _ in range(3):
        p.grad = mv.randn(3, 4)
        opt.step()
        scheduler.step()
        optim.clip_grad_norm_([p], 0.5)
    assert p.dtype == np.float32 and opt.state[p]["exp_avg_sq"].dtype == np.float32


def test_zero_grad():
    p = mv.Parameter(mv.ones(2))
    opt = optim.SGD([p], lr=0.1)
    p.grad = mv.ones(2)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), [0, 0])
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # a parameter without gradient is left alone
    np.testing.assert_array_equal(p.numpy(), [1, 1])


def test_bad_arguments_are_named():
    p = mv.Parameter(mv.ones(2))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr=-1"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        optim.AdamW([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        optim.AdamW([])
    with pytest.raises(ValueError, match="weight_deacy"):
        optim.AdamW([{"params": [p], "weight_deacy": 0.0}])
    with pytest.raises(ValueError, match="more than one"):
        optim.AdamW([{"params": [p]}, {"params": [p]}])


# --- schedules -------------------------------------------------------------------------------------

def _lrs(scheduler, steps):
    lrs = [scheduler.get_last_lr()]
    for _ in range(steps):
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    return np.array(lrs)


def _two_groups(make_param):
    return [{"params": [make_param()], "lr": 0.1}, {"params": [make_param()], "lr": 0.02}]


def test_lambda_lr_matches_torch():
    def lr_lambda(step):
        return 0.95 ** step * (1 + step % 3)
    ours = optim.LambdaLR(optim.SGD(_two_groups(lambda: mv.Parameter(mv.ones(1))), lr=1),
                          lr_lambda)
    theirs = torch.optim.lr_scheduler.LambdaLR(
        torch.optim.SGD(_two_groups(lambda: torch.nn.Parameter(torch.ones(1))), lr=1), lr_lambda)
    their_lrs = [theirs.get_last_lr()]
    for _ in range(12):
        theirs.optimizer.step()
        theirs.step()
        their_lrs.append(theirs.get_last_lr())
    np.testing.assert_allclose(_lrs(ours, 12), their_lrs, rtol=1e-15)


@settings(max_examples=20, deadline=None)
@given(warmup=st.integers(0, 10), decay=st.integers(0, 30), min_lr=st.sampled_from([0.0, 1e-3]))
def test_cosine_schedule_matches_transformers(warmup, decay, min_lr):
    transformers = pytest.importorskip("transformers")
    total = max(warmup + decay, 1)
    ours = optim.cosine_schedule(optim.SGD(_two_groups(lambda: mv.Parameter(mv.ones(1))), lr=1),
                                 warmup, total, min_lr=min_lr)
    their_opt = torch.optim.SGD(_two_groups(lambda: torch.nn.Parameter(torch.ones(1))), lr=1)
    theirs = [transformers.get_cosine_with_min_lr_schedule_with_warmup(
        torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=g["lr"]), warmup, total,
        min_lr=min_lr) for g in their_opt.param_groups]
    their_lrs = [[s.lr_lambdas[0](step) * s.base_lrs[0] for s in theirs]
                 for step in range(total + 1)]
    np.testing.assert_allclose(_lrs(ours, total), their_lrs, rtol=1e-12, atol=1e-15)


def test_cosine_schedule_by_hand():
    opt = optim.SGD([mv.Parameter(mv.ones(1))], lr=1.0)
    lrs = _lrs(optim.cosine_schedule(opt, warmup_steps=4, total_steps=14, min_lr=0.1), 20)[:, 0]
    np.testing.assert_allclose(lrs[:5], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(lrs[9], 0.1 + 0.9 * 0.5)  # half way down the cosine
    np.testing.assert_allclose(lrs[14:], 0.1)  # at and after the end: min_lr


def test_scheduler_state_dict_round_trip():
    opt = optim.SGD([mv.Parameter(mv.ones(1))], lr=1.0)
    scheduler = optim.cosine_schedule(opt, 3, 10)
    _lrs(scheduler, 5)
    fresh_opt = optim.SGD([mv.Parameter(mv.ones(1))], lr=1.0)
    fresh = optim.cosine_schedule(fresh_opt, 3, 10)
    fresh.load_state_dict(scheduler.state_dict())
    np.testing.assert_allclose(_lrs(fresh, 3), _lrs(scheduler, 3))


# --- gradient clipping -----------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(shapes=shapes, max_norm=st.floats(0.01, 10.0), norm_type=st.sampled_from([1.0, 2.0, 3.0,
       math.inf]), scale=st.sampled_from([1e-3, 1.0, 1e2]), seed=st.integers(0, 2**16))
def test_clip_grad_norm_matches_torch(shapes, max_norm, norm_type, scale, seed):
    rng = np.random.default_rng(seed)
    grads = [scale * rng.standard_normal(shape) for shape in shapes]
    ours = [mv.Parameter(mv.zeros(*shape, dtype="float64")) for shape in shapes]
    theirs = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)) for shape in shapes]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = mv.tensor(g), torch.tensor(g)
    our_norm = optim.clip_grad_norm_(ours, max_norm, norm_type)
    their_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    np.testing.assert_allclose(our_norm.item(), their_norm.item(), rtol=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_by_hand():
    p = mv.Parameter(mv.zeros(2))
    p.grad = mv.tensor([3.0, 4.0])
    assert optim.clip_grad_norm_(p, 1.0).item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-5)
    with pytest.raises(RuntimeError, match="not finite"):
        p.grad = mv.tensor([math.inf, 1.0])
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_scales_the_gradient_of_a_0d_parameter():
    """NumPy's reductions give scalars, yet the gradient backward leaves in a 0-d parameter (CLIP's
    logit_scale) must be an array that clipping scales in place."""
    scale, weight = mv.Parameter(mv.full((), 3.0)), mv.Parameter(mv.ones(4))
    ((scale * 10).sum() + (weight * 10).sum()).backward()
    optim.clip_grad_norm_([scale, weight], 1.0)
    coefficient = 1 / (math.sqrt(5 * 10 ** 2) + 1e-6)   # five gradients of 10
    np.testing.assert_allclose(scale.grad.numpy(), 10 * coefficient, rtol=1e-6)
    np.testing.assert_allclose(weight.grad.numpy(), [10 * coefficient] * 4, rtol=1e-6)


def test_decay_matrices_only_splits_matrices_from_vectors():
    layer = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    decayed, kept = optim.decay_matrices_only(layer.parameters())
    assert [p.shape for p in decayed["params"]] == [(4, 3)]
    assert sorted(p.shape for p in kept["params"]) == [(4,), (4,), (4,)]
    assert kept["weight_decay"] == 0.0 and "weight_decay" not in decayed
