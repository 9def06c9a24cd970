"""Alignment tuning's objectives (minivlm/losses.py): sequence log-probs, DPO, the reward model's
Bradley–Terry loss, PPO's policy and value losses, the KL penalty, GAE and whitening. The three
tiers (finite differences; torch restating TRL's formulas; reference/alignment.py), float32 on
every backend, and the properties the lecture's story rests on."""
import inspect

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

import minivlm as mv
from minivlm import losses
from minivlm.losses import (dpo_loss, gae_advantages, kl_penalty, ppo_policy_loss,
                            ppo_value_loss, reward_loss, sequence_logprobs, token_logprobs,
                            whiten)
from minivlm.testing import assert_close, gradcheck
from reference import alignment as ra
from strategies import arrays

IGNORE = -100
RTOL, ATOL = 1e-10, 1e-12  # float64 against float64, sums taken in another order


# --- inputs ---------------------------------------------------------------------------------------

@st.composite
def lm_batches(draw):
    """logits (B, T, V) and labels (B, T): token ids, IGNORE at random places (a row may have no
    scored token at all)."""
    B, T, V = draw(st.integers(1, 3)), draw(st.integers(2, 5)), draw(st.integers(2, 4))
    ids = draw(hnp.arrays(np.int64, (B, T), elements=st.integers(0, V - 1)))
    ignored = draw(hnp.arrays(np.bool_, (B, T)))
    return draw(arrays((B, T, V))), np.where(ignored, IGNORE, ids)


@st.composite
def response_masks(draw):
    """(B, T) masks of a prompt (0), a response of at least one token (1), then padding (0)."""
    B, T = draw(st.integers(1, 3)), draw(st.integers(2, 6))
    mask = np.zeros((B, T), dtype=np.int64)
    for row in mask:
        start = draw(st.integers(0, T - 1))
        row[start:draw(st.integers(start + 1, T))] = 1
    return mask


@st.composite
def preferences(draw):
    """The policy's and the reference's log-probs of chosen and rejected responses: 4 × (B,)."""
    B = draw(st.integers(1, 4))
    return [draw(arrays(B)) for _ in range(4)]


@st.composite
def dpo_settings(draw, loss_type):
    beta = draw(st.floats(0.05, 2.0))
    smoothing = draw(st.floats(0.0, 0.45)) if loss_type == "sigmoid" else 0.0
    return dict(beta=beta, loss_type=loss_type, label_smoothing=smoothing)


def hinge_clear_of_its_kink(logps, beta):
    pc, pr, rc, rr = logps
    return np.all(np.abs(1 - beta * ((pc - pr) - (rc - rr))) > 1e-4)


@st.composite
def ppo_rollouts(draw):
    """mask, logprobs, old logprobs (within ±1 of them: many ratios clip), advantages and values,
    old values and returns (within ±0.5 of the values: many clip), clip range: ε clear of the
    clip bounds and of ties of the two value errors, where the losses have kinks."""
    mask = draw(response_masks())
    logp, advantages, values, returns = (draw(arrays(mask.shape)) for _ in range(4))
    old_logp = logp - draw(arrays(mask.shape, elements=st.floats(-1.0, 1.0)))
    old_values = values - draw(arrays(mask.shape, elements=st.floats(-0.5, 0.5)))
    clip = draw(st.floats(0.1, 0.3))
    assume(np.all(np.abs(np.abs(np.exp(logp - old_logp) - 1) - clip) > 1e-4))
    moved = np.abs(values - old_values)
    assume(np.all(np.abs(moved - clip) > 1e-4))
    clipped = old_values + np.clip(values - old_values, -clip, clip)
    assume(np.all((moved < clip) | (np.abs((values - returns) ** 2 - (clipped - returns) ** 2)
                                    > 1e-6)))
    return dict(mask=mask, logp=logp, old_logp=old_logp, advantages=advantages, values=values,
                old_values=old_values, returns=returns, clip=clip)


def leaf(values):
    return mv.tensor(values, requires_grad=True)


# --- tier 1: gradients against finite differences -------------------------------------------------

LOGPROBS = {"per token": token_logprobs, "sum": sequence_logprobs,
            "mean": lambda logits, labels: sequence_logprobs(logits, labels, average=True)}


@pytest.mark.parametrize("which", list(LOGPROBS))
@given(batch=lm_batches())
def test_logprobs_gradient(batch, which):
    logits, labels = batch
    gradcheck(lambda x: LOGPROBS[which](x, labels), [leaf(logits)])


@pytest.mark.parametrize("loss_type", losses.DPO_LOSSES)
@given(data=st.data())
def test_dpo_loss_gradient(loss_type, data):
    logps, kw = data.draw(preferences()), data.draw(dpo_settings(loss_type))
    assume(loss_type != "hinge" or hinge_clear_of_its_kink(logps, kw["beta"]))
    pc, pr, rc, rr = logps
    gradcheck(lambda c, r: dpo_loss(c, r, rc, rr, **kw)[0], [leaf(pc), leaf(pr)])


@given(logps=preferences(), scalar_margin=st.booleans())
def test_reward_loss_gradient(logps, scalar_margin):
    chosen, rejected, margin, _ = logps
    margin = 0.5 if scalar_margin else margin
    gradcheck(lambda c, r: reward_loss(c, r, margin), [leaf(chosen), leaf(rejected)])


@given(r=ppo_rollouts())
def test_ppo_losses_gradients(r):
    gradcheck(lambda p: ppo_policy_loss(p, r["old_logp"], r["advantages"], r["mask"],
                                        r["clip"])[0], [leaf(r["logp"])])
    gradcheck(lambda v: ppo_value_loss(v, r["old_values"], r["returns"], r["mask"], r["clip"]),
              [leaf(r["values"])])


@pytest.mark.parametrize("estimator", losses.KL_ESTIMATORS)
@given(logps=preferences())
def test_kl_penalty_gradient(logps, estimator):
    logp, ref_logp, _, _ = logps
    gradcheck(lambda p: kl_penalty(p, ref_logp, estimator), [leaf(logp)])


# --- tier 3: torch, restating TRL's formulas --------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def assert_matches_torch(torch, ours, theirs, differentiable, constants=()):
    """ours(*Tensors, *constants) equals theirs(*torch tensors, *constants as torch tensors),
    forward and the gradients of `differentiable`'s inputs, in float64."""
    mine = [leaf(x) for x in differentiable]
    their = [torch.tensor(x, requires_grad=True) for x in differentiable]
    out = ours(*mine, *constants)
    expected = theirs(*their, *[torch.as_tensor(c) for c in constants])
    upstream = np.random.default_rng(0).standard_normal(tuple(expected.shape))
    out.backward(mv.tensor(upstream))
    expected.backward(torch.as_tensor(upstream))
    assert out.dtype == np.float64
    assert_close(out, expected.detach().numpy(), rtol=RTOL, atol=ATOL)
    for t, u in zip(mine, their):
        assert_close(t.grad, u.grad.numpy(), rtol=RTOL, atol=ATOL)


def torch_masked_mean(values, mask):
    return (values * mask).sum() / mask.sum()


@pytest.mark.parametrize("which", list(LOGPROBS))
@given(batch=lm_batches())
def test_logprobs_match_torch(torch, batch, which):
    """TRL's get_batch_logps, the empty rows' count taken as 1."""
    def theirs(logits, labels):
        labels, logits = labels[:, 1:].clone(), logits[:, :-1]
        scored = labels != IGNORE
        labels[~scored] = 0
        per_token = torch.gather(logits.log_softmax(-1), 2, labels[..., None])[..., 0] * scored
        if which == "per token":
            return per_token
        total = per_token.sum(-1)
        return total / scored.sum(-1).clamp(min=1) if which == "mean" else total

    logits, labels = batch
    assert_matches_torch(torch, LOGPROBS[which], theirs, [logits], [labels])


@pytest.mark.parametrize("loss_type", losses.DPO_LOSSES)
@given(data=st.data())
def test_dpo_loss_matches_torch(torch, loss_type, data):
    def theirs(pc, pr, rc, rr):
        logsigmoid, h = torch.nn.functional.logsigmoid, (pc - pr) - (rc - rr)
        if loss_type == "sigmoid":
            return -logsigmoid(beta * h) * (1 - eps) - logsigmoid(-beta * h) * eps
        if loss_type == "ipo":
            return (h - 1 / (2 * beta)) ** 2
        return torch.relu(1 - beta * h)

    logps, kw = data.draw(preferences()), data.draw(dpo_settings(loss_type))
    beta, eps = kw["beta"], kw["label_smoothing"]
    assume(loss_type != "hinge" or hinge_clear_of_its_kink(logps, beta))
    pc, pr, rc, rr = logps
    assert_matches_torch(torch, lambda c, r, *ref: dpo_loss(c, r, *ref, **kw)[0], theirs, [pc, pr],
                         [rc, rr])
    _, chosen_rewards, rejected_rewards = dpo_loss(mv.tensor(pc), mv.tensor(pr), rc, rr, **kw)
    assert_close(chosen_rewards, (beta * (torch.tensor(pc) - torch.tensor(rc))).numpy(),
                 rtol=RTOL, atol=ATOL)
    assert_close(rejected_rewards, (beta * (torch.tensor(pr) - torch.tensor(rr))).numpy(),
                 rtol=RTOL, atol=ATOL)


@given(logps=preferences())
def test_reward_loss_matches_torch(torch, logps):
    """TRL's RewardTrainer: -logsigmoid(r_c - r_r - margin).mean()."""
    chosen, rejected, margin, _ = logps
    logsigmoid = torch.nn.functional.logsigmoid
    assert_matches_torch(torch, reward_loss, lambda c, r, m: -logsigmoid(c - r - m).mean(),
                         [chosen, rejected], [margin])


@given(r=ppo_rollouts())
def test_ppo_losses_match_torch(torch, r):
    """TRL's PPOTrainer.loss: the clipped surrogate, pg_clipfrac and the clipped value loss."""
    clip = r["clip"]

    def their_policy(logprobs, old_logprobs, advantages, mask):
        ratio = torch.exp(logprobs - old_logprobs)
        pg_losses = -advantages * ratio
        pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
        their_policy.clipfrac = torch_masked_mean(torch.gt(pg_losses2, pg_losses).double(), mask)
        return torch_masked_mean(torch.max(pg_losses, pg_losses2), mask)

    def their_value(vpreds, values, returns, mask):
        vpredclipped = torch.clamp(vpreds, values - clip, values + clip)
        vf_losses = torch.max((vpreds - returns) ** 2, (vpredclipped - returns) ** 2)
        return 0.5 * torch_masked_mean(vf_losses, mask)

    def our_policy(*args):
        loss, our_policy.clip_fraction = ppo_policy_loss(*args, clip)
        return loss

    assert_matches_torch(torch, our_policy, their_policy, [r["logp"]],
                         [r["old_logp"], r["advantages"], r["mask"]])
    assert our_policy.clip_fraction == pytest.approx(float(their_policy.clipfrac), abs=1e-12)
    assert_matches_torch(torch, lambda *args: ppo_value_loss(*args, clip), their_value, [r["values"]],
                         [r["old_values"], r["returns"], r["mask"]])


@pytest.mark.parametrize("estimator", losses.KL_ESTIMATORS)
@given(logps=preferences())
def test_kl_penalty_matches_torch(torch, logps, estimator):
    def theirs(logprobs, ref_logprobs):
        logr = ref_logprobs - logprobs
        return -logr if estimator == "k1" else (logr.exp() - 1) - logr

    logp, ref_logp, _, _ = logps
    assert_matches_torch(torch, lambda p, q: kl_penalty(p, q, estimator), theirs, [logp], [ref_logp])


@given(r=ppo_rollouts(), shift_mean=st.booleans(), gamma=st.floats(0.5, 1.0),
       lam=st.floats(0.5, 1.0))
def test_gae_and_whiten_match_torch(torch, r, shift_mean, gamma, lam):
    """TRL's compute_advantages (its recursion over all positions, r and V masked) and
    masked_whiten (Bessel-corrected variance)."""
    mask = torch.as_tensor(r["mask"])
    rewards, values = torch.as_tensor(r["advantages"]) * mask, torch.as_tensor(r["values"]) * mask
    lastgaelam, reversed_advantages = 0.0, []
    for t in reversed(range(mask.shape[1])):
        nextvalues = values[:, t + 1] if t < mask.shape[1] - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_advantages.append(lastgaelam)
    expected = torch.stack(reversed_advantages[::-1]).T

    advantages, returns = gae_advantages(r["advantages"], r["values"], r["mask"], gamma, lam)
    assert_close(advantages, (expected * mask).numpy(), rtol=RTOL, atol=ATOL)
    assert_close(returns, ((expected + values) * mask).numpy(), rtol=RTOL, atol=ATOL)

    assume(r["mask"].sum() >= 2)
    x = torch.as_tensor(r["logp"])
    mean = torch_masked_mean(x, mask)
    var = torch_masked_mean((x - mean) ** 2, mask) * mask.sum() / (mask.sum() - 1)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8) + (0 if shift_mean else mean)
    assert_close(whiten(r["logp"], r["mask"], shift_mean), whitened.numpy(), rtol=1e-9)


# --- the reference --------------------------------------------------------------------------------

@pytest.mark.parametrize("average", [False, True])
@given(batch=lm_batches())
def test_sequence_logprobs_equal_the_reference(batch, average):
    logits, labels = batch
    assert_close(sequence_logprobs(mv.tensor(logits), labels, average=average),
                 ra.sequence_logprobs(logits, labels, average=average), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("loss_type", losses.DPO_LOSSES)
@given(data=st.data())
def test_dpo_and_reward_losses_equal_the_reference(loss_type, data):
    logps, kw = data.draw(preferences()), data.draw(dpo_settings(loss_type))
    pc, pr, rc, rr = logps
    for ours, theirs in zip(dpo_loss(mv.tensor(pc), mv.tensor(pr), rc, rr, **kw),
                            ra.dpo_loss(pc, pr, rc, rr, **kw)):
        assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    assert_close(reward_loss(mv.tensor(pc), mv.tensor(pr), rc), ra.reward_loss(pc, pr, rc),
                 rtol=RTOL)


@given(r=ppo_rollouts())
def test_ppo_losses_equal_the_reference(r):
    loss, clip_fraction = ppo_policy_loss(mv.tensor(r["logp"]), r["old_logp"], r["advantages"],
                                          r["mask"], r["clip"])
    expected_loss, expected_fraction = ra.ppo_policy_loss(r["logp"], r["old_logp"],
                                                          r["advantages"], r["mask"], r["clip"])
    assert_close(loss, expected_loss, rtol=RTOL, atol=ATOL)
    assert clip_fraction == pytest.approx(expected_fraction, abs=1e-12)
    assert_close(ppo_value_loss(mv.tensor(r["values"]), r["old_values"], r["returns"], r["mask"],
                                r["clip"]),
                 ra.ppo_value_loss(r["values"], r["old_values"], r["returns"], r["mask"],
                                   r["clip"]), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("estimator", losses.KL_ESTIMATORS)
@given(logps=preferences(), mask=response_masks())
def test_kl_penalty_and_whiten_equal_the_reference(logps, estimator, mask):
    """On arrays, as the rollout uses them: arrays out."""
    logp, ref_logp, _, _ = logps
    penalty = kl_penalty(logp, ref_logp, estimator)
    assert isinstance(penalty, np.ndarray)
    assert_close(penalty, ra.kl_penalty(logp, ref_logp, estimator), rtol=RTOL, atol=ATOL)
    assume(mask.sum() >= 2)
    x = np.random.default_rng(mask.size).standard_normal(mask.shape)
    assert_close(whiten(x, mask), ra.whiten(x, mask), rtol=RTOL)
    assert_close(whiten(mv.tensor(x), mask, shift_mean=False),
                 ra.whiten(x, mask, shift_mean=False), rtol=RTOL)


@given(r=ppo_rollouts(), gamma=st.floats(0.5, 1.0), lam=st.floats(0.0, 1.0))
def test_gae_is_the_direct_sum_of_discounted_td_errors(r, gamma, lam):
    """The recursion A_t = δ_t + γλ A_{t+1} against the reference's A_t = Σ_l (γλ)^l δ_{t+l}
    over each response alone."""
    rewards, values, mask = r["advantages"], r["values"], r["mask"]
    advantages, returns = gae_advantages(mv.tensor(rewards), values, mask, gamma, lam)
    expected_advantages, expected_returns = ra.gae_advantages(rewards, values, mask, gamma, lam)
    assert_close(advantages, expected_advantages, rtol=RTOL, atol=ATOL)
    assert_close(returns, expected_returns, rtol=RTOL, atol=ATOL)


# --- float32 on every backend ---------------------------------------------------------------------

def test_float32_stays_float32_on_backend(backend):
    """float32 policy outputs with float64 reference and rollout arrays: float32 results and
    gradients, on the backend, close to the float64 reference."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 4))
    labels = np.array([[IGNORE, 1, 2, 3, IGNORE], [IGNORE, IGNORE, 0, 1, 1]])
    mask = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    old, advantages, values, returns = (rng.standard_normal((2, 5)) for _ in range(4))
    x = mv.tensor(logits, dtype="float32", device=backend, requires_grad=True)
    logps = sequence_logprobs(x, labels)
    ref = ra.sequence_logprobs(logits, labels) + np.array([0.3, -0.2])   # float64
    value_head = mv.tensor(values[0:1].repeat(2, 0), dtype="float32", device=backend,
                           requires_grad=True)
    results = {
        "sequence_logprobs": (logps, ra.sequence_logprobs(logits, labels)),
        "dpo_loss": (dpo_loss(logps[0:1], logps[1:2], ref[0:1], ref[1:2])[0],
                     ra.dpo_loss(ref[0:1] - 0.3, ref[1:2] + 0.2, ref[0:1], ref[1:2])[0]),
        "reward_loss": (reward_loss(logps[0:1], logps[1:2], np.array([0.1])),
                        ra.reward_loss(ref[0] - 0.3, ref[1] + 0.2, 0.1)),
        "kl_penalty": (kl_penalty(logps, ref, "k3"), ra.kl_penalty(ref - [0.3, -0.2], ref, "k3")),
        "ppo_policy_loss": (ppo_policy_loss(value_head, old, advantages, mask)[0],
                            ra.ppo_policy_loss(values[0:1].repeat(2, 0), old, advantages,
                                               mask)[0]),
        "ppo_value_loss": (ppo_value_loss(value_head, old, returns, mask),
                           ra.ppo_value_loss(values[0:1].repeat(2, 0), old, returns, mask)),
    }
    for name, (ours, expected) in results.items():
        assert (ours.dtype, ours.device) == (np.float32, backend), name
        assert_close(ours, expected, rtol=1e-4, atol=1e-6)
    sum(ours.sum() for ours, _ in results.values()).backward()
    for grad in (x.grad, value_head.grad):
        assert (grad.dtype, grad.device) == (np.float32, backend)
    advantages32, returns32 = gae_advantages(value_head.detach(), old.astype(np.float32), mask)
    assert advantages32.dtype == returns32.dtype == np.float32
    assert whiten(value_head, mask).dtype == np.float32


# --- DPO's, the KL's and the log-sigmoid's properties ---------------------------------------------

@given(logps=arrays(3), beta=st.floats(0.05, 2.0), smoothing=st.floats(0.0, 0.45))
def test_dpo_loss_at_the_reference_policy(logps, beta, smoothing):
    """Where the policy is the reference, h = 0: sigmoid gives log 2 (any smoothing), IPO
    (1/(2β))², hinge 1, and both rewards 0."""
    chosen, rejected = mv.tensor(logps), mv.tensor(logps[::-1].copy())
    expected = {"sigmoid": np.log(2.0), "ipo": 1 / (4 * beta ** 2), "hinge": 1.0}
    for loss_type, value in expected.items():
        eps = smoothing if loss_type == "sigmoid" else 0.0
        out, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, logps, logps[::-1], beta, loss_type, eps)
        assert_close(out, np.full(3, value), rtol=1e-12)
        assert_close(chosen_rewards, np.zeros(3), atol=1e-15)
        assert_close(rejected_rewards, np.zeros(3), atol=1e-15)


@pytest.mark.parametrize("loss_type", losses.DPO_LOSSES)
def test_a_dpo_step_raises_the_chosen_and_lowers_the_rejected(loss_type):
    """From the reference policy itself (h = 0, where log σ and relu are at their most
    delicate): one gradient step on the logits of a chosen and a rejected sequence."""
    rng = np.random.default_rng(1)
    logits = leaf(rng.standard_normal((2, 6, 5)))
    labels = np.array([[IGNORE, IGNORE, 3, 0, 4, 1], [IGNORE, IGNORE, 2, 2, 0, IGNORE]])
    before = sequence_logprobs(logits, labels)
    reference = before.detach().numpy()
    loss, chosen_rewards, rejected_rewards = dpo_loss(before[0:1], before[1:2], reference[0:1],
                                                      reference[1:2], loss_type=loss_type)
    loss.sum().backward()
    after = sequence_logprobs(mv.tensor(logits.numpy() - 1.0 * logits.grad.numpy()), labels)
    assert after.numpy()[0] > reference[0] + 1e-3
    assert after.numpy()[1] < reference[1] - 1e-3
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


def test_dpo_rewards_carry_no_gradient():
    """Adding the rewards to the loss changes no gradient: they are detached."""
    grads = []
    for with_rewards in (False, True):
        chosen, rejected = leaf(np.array([0.5, -1.0])), leaf(np.array([0.2, 0.1]))
        out, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, np.zeros(2),
                                                         np.zeros(2))
        assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
        total = out.sum() + (chosen_rewards.sum() + rejected_rewards.sum() if with_rewards else 0)
        total.backward()
        grads.append([chosen.grad.numpy(), rejected.grad.numpy()])
    np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_dpo_sigmoid_is_stable_for_large_margins(smoothing):
    """|βh| up to 1e4: finite losses, equal to the reference's (log-sum-exp), and the exact
    gradient d/dπ_c = -β((1 - ε) σ(-βh) - ε σ(βh))."""
    beta = 0.5
    h = np.array([-2e4, -1e3, -40.0, 0.0, 40.0, 1e3, 2e4])
    chosen, zeros = leaf(h.copy()), np.zeros(len(h))
    out = dpo_loss(chosen, mv.tensor(zeros), zeros, zeros, beta, label_smoothing=smoothing)[0]
    out.sum().backward()
    sigmoid = lambda x: np.exp(-np.logaddexp(0.0, -x))   # noqa: E731 (accurate for any x)
    expected_grad = -beta * ((1 - smoothing) * sigmoid(-beta * h) - smoothing * sigmoid(beta * h))
    assert_close(out, ra.dpo_loss(h, zeros, zeros, zeros, beta, "sigmoid", smoothing)[0],
                 rtol=1e-12)
    assert_close(chosen.grad, expected_grad, rtol=1e-12, atol=1e-300, elementwise=True)


@given(logps=preferences())
def test_k3_is_never_negative(logps):
    logp, ref_logp, _, _ = logps
    for values in (kl_penalty(logp, ref_logp, "k3"), kl_penalty(mv.tensor(logp), ref_logp,
                                                                 "k3").numpy()):
        assert np.all(values >= -4 * np.finfo(np.float64).eps)   # rounding of e^x - 1 - x near 0


@pytest.mark.parametrize("estimator", losses.KL_ESTIMATORS)
def test_the_kl_estimators_average_to_the_kl_over_samples_from_the_policy(estimator):
    """Tokens drawn from a policy p over 4 outcomes: the mean estimate is KL(p ‖ ref) = 0.28,
    within 0.02 (about 4 standard errors of the 20 000-sample mean; a wrong sign is off by 0.5)."""
    p, ref = np.array([0.5, 0.3, 0.15, 0.05]), np.array([0.2, 0.2, 0.3, 0.3])
    kl = float(np.sum(p * np.log(p / ref)))
    tokens = np.random.default_rng(0).choice(4, size=20_000, p=p)
    estimates = kl_penalty(np.log(p[tokens]), np.log(ref[tokens]), estimator)
    assert abs(estimates.mean() - kl) < 0.02, (estimates.mean(), kl)


def test_log_sigmoid_gradient_at_zero_is_one_half():
    x = leaf(np.array([0.0]))
    losses.log_sigmoid(x).sum().backward()
    assert x.grad.numpy()[0] == 0.5


def test_a_row_without_scored_tokens_gives_zero():
    logits = leaf(np.random.default_rng(2).standard_normal((2, 3, 4)))
    labels = np.array([[IGNORE, 1, 2], [5, IGNORE, IGNORE]])   # labels[:, 0] is never scored
    for average in (False, True):
        logits.grad = None
        out = sequence_logprobs(logits, labels, average=average)
        out.sum().backward()
        assert out.numpy()[1] == 0.0
        assert np.all(logits.grad.numpy()[1] == 0.0) and np.all(np.isfinite(logits.grad.numpy()))


def test_defaults_are_trls():
    """TRL's: DPOConfig beta 0.1, loss_type sigmoid, label_smoothing 0; PPOConfig cliprange and
    cliprange_value 0.2, gamma 1, lam 0.95; the label padding -100; the KL estimator k1."""
    defaults = {name: {k: p.default for k, p in inspect.signature(f).parameters.items()
                       if p.default is not inspect.Parameter.empty}
                for name, f in [("dpo", dpo_loss), ("policy", ppo_policy_loss),
                                ("value", ppo_value_loss), ("gae", gae_advantages),
                                ("logprobs", sequence_logprobs), ("kl", kl_penalty)]}
    assert defaults == {"dpo": dict(beta=0.1, loss_type="sigmoid", label_smoothing=0.0),
                        "policy": dict(clip_range=0.2), "value": dict(clip_range=0.2),
                        "gae": dict(gamma=1.0, lam=0.95),
                        "logprobs": dict(ignore_index=-100, average=False),
                        "kl": dict(estimator="k1")}


# --- errors ---------------------------------------------------------------------------------------

def test_bad_settings_are_named():
    x = mv.tensor(np.zeros(2))
    for kw, message in [(dict(loss_type="kto"), "loss_type must be one of .*got 'kto'"),
                        (dict(beta=0.0), "beta must be > 0, got 0.0"),
                        (dict(beta=-1), "beta must be > 0, got -1"),
                        (dict(label_smoothing=0.5), r"label_smoothing must lie in \[0, 0.5\), "
                                                    r"got 0.5"),
                        (dict(loss_type="ipo", label_smoothing=0.1),
                         "label_smoothing=0.1 is for loss_type 'sigmoid' only, got .*'ipo'")]:
        with pytest.raises(ValueError, match=message):
            dpo_loss(x, x, np.zeros(2), np.zeros(2), **kw)
    with pytest.raises(ValueError, match="estimator must be one of .*got 'k2'"):
        kl_penalty(x, np.zeros(2), "k2")


def test_shape_mismatches_name_both_shapes():
    two, three = mv.tensor(np.zeros(2)), mv.tensor(np.zeros(3))
    mask = np.ones((2, 3))
    cases = [
        (lambda: sequence_logprobs(mv.tensor(np.zeros((2, 3, 4))), np.zeros((2, 4), int)),
         r"sequence_logprobs: .*logits \(2, 3, 4\) and labels \(2, 4\)"),
        (lambda: token_logprobs(mv.tensor(np.zeros((2, 3))), np.zeros((2, 3), int)),
         r"token_logprobs: .*logits \(2, 3\) and labels \(2, 3\)"),
        (lambda: dpo_loss(two, two, np.zeros(3), np.zeros(2)),
         r"policy_chosen_logps \(2,\).*reference_chosen_logps \(3,\)"),
        (lambda: reward_loss(two, three), r"chosen_rewards \(2,\), rejected_rewards \(3,\)"),
        (lambda: reward_loss(two, two, np.zeros(3)), r"chosen_rewards \(2,\), margin \(3,\)"),
        (lambda: ppo_policy_loss(mv.tensor(np.zeros((2, 3))), np.zeros((2, 3)),
                                 np.zeros((2, 2)), mask), r"advantages \(2, 2\)"),
        (lambda: ppo_value_loss(mv.tensor(np.zeros((2, 3))), np.zeros((2, 3)), np.zeros((2, 3)),
                                np.ones((3, 2))), r"values \(2, 3\).*mask \(3, 2\)"),
        (lambda: kl_penalty(two, np.zeros(3)), r"logprobs \(2,\), ref_logprobs \(3,\)"),
        (lambda: gae_advantages(np.zeros((2, 3)), np.zeros((2, 4)), mask),
         r"rewards \(2, 3\), values \(2, 4\)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match="at least 2 elements, got 1"):
        whiten(np.zeros(3), np.array([0, 1, 0]))
