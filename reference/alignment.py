"""Alignment tuning, as on the slide "Alignment Tuning": RLHF's three steps (1. supervised
fine-tuning on demonstrations, 2. a reward model from ranked comparisons, 3. PPO against that
reward model) and DPO, which reaches step 3's goal from the comparisons alone.

π is the policy being tuned, π_ref the frozen SFT model, log π(y) a response's summed token
log-probs, r_φ the reward model, β the strength of the pull towards π_ref. Loops where they make
the idea plainer.
"""
import numpy as np


def log_sigmoid(x):
    """log σ(x) = -log(1 + e^(-x)), without overflow for large |x|."""
    return -np.logaddexp(0.0, -x)


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sequence_logprobs(logits, labels, ignore_index=-100, average=False):
    """log π(y | x) = Σ_t log p(y_t | y_<t, x) over the response's tokens: logits (B, T, V),
    labels (B, T), ignore_index on the tokens not scored (the prompt, the padding). The model's
    output at position t - 1 predicts the token at t. average: the mean over the scored tokens
    (0 for a row with none)."""
    B, T, _ = logits.shape
    logp = log_softmax(logits)
    total, count = np.zeros(B), np.zeros(B)
    for b in range(B):
        for t in range(1, T):
            if labels[b, t] != ignore_index:
                total[b] += logp[b, t - 1, labels[b, t]]
                count[b] += 1
    return total / np.maximum(count, 1) if average else total


def reward_loss(r_chosen, r_rejected, margin=0.0):
    """Step 2, the reward model. Bradley–Terry: P(y_c ≻ y_r) = σ(r_c - r_r), so the loss on the
    labellers' comparisons is -log σ(r_c - r_r) (here less a margin), averaged over the pairs."""
    return -log_sigmoid(r_chosen - r_rejected - margin).mean()


def dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1, loss_type="sigmoid",
             label_smoothing=0.0):
    """DPO: -log σ(β log π(y_w)/π_ref(y_w) - β log π(y_l)/π_ref(y_l)), y_w the chosen (winning)
    response, y_l the rejected (losing) one; per pair (B,), with the implicit rewards
    β log π(y)/π_ref(y) of both. Variants on h = log π(y_w)/π_ref(y_w) - log π(y_l)/π_ref(y_l):
    conservative DPO (label smoothing ε: the label is wrong with chance ε)
    -(1 - ε) log σ(βh) - ε log σ(-βh); IPO (h - 1/(2β))²; hinge max(0, 1 - βh)."""
    chosen_reward = beta * (pi_chosen - ref_chosen)
    rejected_reward = beta * (pi_rejected - ref_rejected)
    h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
    if loss_type == "sigmoid":
        eps = label_smoothing
        losses = -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        losses = np.maximum(0.0, 1 - beta * h)
    return losses, chosen_reward, rejected_reward


def masked_mean(x, mask):
    """The mean of x over the response tokens (mask 1), all rows together."""
    return (x * mask).sum() / mask.sum()


def whiten(x, mask, shift_mean=True):
    """x shifted to mean 0 and scaled to variance 1 over the response tokens (the variance with
    Bessel's correction, 1e-8 added against a zero variance); shift_mean=False keeps the mean."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * mask.sum() / (mask.sum() - 1)
    whitened = (x - mean) / np.sqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def kl_penalty(logp, ref_logp, estimator="k1"):
    """Step 3's KL penalty, per token of a response sampled from π. The PPO objective is
    E[r_φ(x, y)] - β KL(π ‖ π_ref): each token's reward is r = r_φ - β KL, r_φ given at the last
    token. KL(π ‖ π_ref) = E_π[log π - log π_ref], estimated from the sampled tokens by
    k1 = log π - log π_ref, or by k3 = (ρ - 1) - log ρ with ρ = π_ref/π (never negative)."""
    if estimator == "k1":
        return logp - ref_logp
    rho = np.exp(ref_logp - logp)
    return (rho - 1) - np.log(rho)


def gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalized advantage estimation on each row's response (the positions where mask is 1):
    δ_t = r_t + γ V_{t+1} - V_t (V = 0 after the response's last token) and
    A_t = Σ_l (γλ)^l δ_{t+l}, the sum itself, over the response's later tokens. The returns
    A_t + V_t are what the value head learns. Both 0 off the response."""
    advantages, returns = np.zeros(rewards.shape), np.zeros(rewards.shape)
    for b in range(len(rewards)):
        response = [t for t in range(rewards.shape[1]) if mask[b, t]]
        delta = {}
        for i, t in enumerate(response):
            next_value = values[b, response[i + 1]] if i + 1 < len(response) else 0.0
            delta[t] = rewards[b, t] + gamma * next_value - values[b, t]
        for i, t in enumerate(response):
            advantages[b, t] = sum((gamma * lam) ** l * delta[s]
                                   for l, s in enumerate(response[i:]))
            returns[b, t] = advantages[b, t] + values[b, t]
    return advantages, returns


def ppo_policy_loss(logp, old_logp, advantages, mask, clip_range=0.2):
    """Step 3, PPO's clipped objective: with ρ_t = π(y_t)/π_old(y_t), maximise
    E[min(ρ_t A_t, clip(ρ_t, 1 - ε, 1 + ε) A_t)]; the loss is its negative over the response
    tokens. Also the share of tokens where the clipped term decided."""
    ratio = np.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = np.clip(ratio, 1 - clip_range, 1 + clip_range) * advantages
    loss = -masked_mean(np.minimum(unclipped, clipped), mask)
    return loss, masked_mean(clipped < unclipped, mask)


def ppo_value_loss(values, old_values, returns, mask, clip_range=0.2):
    """The value head's squared error to the returns, halved, its change from the rollout's
    values clipped to ±ε as the policy's ratio is: the larger of the two errors counts."""
    clipped = old_values + np.clip(values - old_values, -clip_range, clip_range)
    errors = np.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(errors, mask)
