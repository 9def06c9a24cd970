"""Sequence-level training objectives, over the models' outputs.

    logits_per_image, _ = model(pixels, ids)
    loss = clip_loss(logits_per_image)                         # one process's whole batch
    loss = gathered_clip_loss(*model.embed(pixels, ids), model.logit_scale)   # any number of ranks

and alignment tuning's (RLHF: a reward model, then PPO against it; DPO):

    logps = sequence_logprobs(model(ids), labels)             # log π(y | x) of each response
    losses, chosen_rewards, rejected_rewards = dpo_loss(*policy_logps, *reference_logps)
    loss = reward_loss(reward_model(chosen), reward_model(rejected))
    advantages, returns = gae_advantages(rewards, old_values, mask)
    loss, clip_fraction = ppo_policy_loss(logprobs, old_logprobs, whiten(advantages, mask), mask)
"""
from . import distributed
from . import functional as F
from .autograd import Tensor, no_grad
from .backend import xp_of


def clip_loss(logits_per_image, logits_per_text=None, first=0):
    """CLIP's symmetric contrastive loss (the slide's): each image against the texts and each text
    against the images, image k matching text k; the mean of the two cross-entropies -> scalar.

    logits_per_image (n, m): n images against m texts, image i matching text first + i;
    logits_per_text (n, m): the n texts of those images against the m images (default
    logits_per_image.T, for a whole batch: n == m, first 0)."""
    n, m = logits_per_image.shape
    if logits_per_text is None:
        if n != m:
            raise ValueError(f"clip_loss: expected square logits (one text per image), got "
                             f"shape {(n, m)}")
        logits_per_text = logits_per_image.T
    if tuple(logits_per_text.shape) != (n, m) or not 0 <= first <= m - n:
        raise ValueError(f"clip_loss: logits_per_text must have the shape of logits_per_image "
                         f"{(n, m)}, got {tuple(logits_per_text.shape)}, and rows first={first} "
                         f"... first + {n} must lie in [0, {m})")
    labels = xp_of(logits_per_image.array).arange(first, first + n)
    loss_i = F.cross_entropy(logits_per_text, labels)    # the slide's axis=0
    loss_t = F.cross_entropy(logits_per_image, labels)   # the slide's axis=1
    return (loss_i + loss_t) / 2


def gathered_clip_loss(image_embeddings, text_embeddings, logit_scale):
    """CLIP's loss over the global batch of all ranks (open_clip's "local loss"): this rank's
    L2-normalised embeddings (n, d) against those of every rank, gathered (N·n, d) with the
    gradient flowing back through the gather. Averaged over the ranks (as gradients are), it is
    the loss of one process holding the whole batch, and so are its gradients; on one process it
    equals clip_loss(model(pixels, ids)[0]).

    logit_scale: the model's log inverse temperature (a 0-d Tensor)."""
    all_images = distributed.all_gather(image_embeddings)
    all_texts = distributed.all_gather(text_embeddings)
    scale = logit_scale.exp()
    logits_per_image = scale * (image_embeddings @ all_texts.T)        # (n, N·n)
    logits_per_text = (scale * (all_images @ text_embeddings.T)).T     # (n, N·n)
    return clip_loss(logits_per_image, logits_per_text,
                     first=distributed.rank() * len(image_embeddings))


# --- alignment tuning: RLHF (a reward model, PPO) and DPO ----------------------------------------

DPO_LOSSES = ("sigmoid", "ipo", "hinge")
KL_ESTIMATORS = ("k1", "k3")


def _values(x):
    """The array of a Tensor, or x itself."""
    return x.array if isinstance(x, Tensor) else x


def _constant(x, like):
    """x (an array, a Tensor or a number) as a Tensor without gradient, in like's dtype and on its
    device: a frozen model's outputs, or a rollout's."""
    return Tensor(xp_of(like.array).asarray(_values(x), dtype=like.dtype))


def _check_same_shape(op, **named):
    shapes = {name: tuple(x.shape) for name, x in named.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{op}: expected inputs of one shape, got "
                         + ", ".join(f"{name} {shape}" for name, shape in shapes.items()))


def _maximum(a, b):
    """The elementwise larger of two Tensors (a where they tie)."""
    return F.where(b > a, b, a)


def log_sigmoid(x):
    """log σ(x) = min(x, 0) - log(1 + exp(-|x|)), finite with a finite gradient for any x (exp
    never sees a positive argument). -|x| is written 2·min(x, 0) - x, so that the gradient is
    σ(-x) at x = 0 too (relu and abs would each take their derivative there as 0)."""
    low = F.clamp(x, max=0.0)
    return low - F.log(1 + F.exp(2 * low - x))


def _scored_targets(op, logits, labels, ignore_index):
    """The shifted labels (B, T - 1), on logits' device, and where they are scored."""
    labels = _values(labels)
    if logits.ndim != 3 or tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"{op}: logits (B, T, V) need labels (B, T), got logits "
                         f"{tuple(logits.shape)} and labels {tuple(labels.shape)}")
    targets = xp_of(logits.array).asarray(labels[:, 1:])
    return targets, targets != ignore_index


def token_logprobs(logits, labels, ignore_index=-100):
    """log p(labels[:, t] | tokens before t) of each token: logits (B, T, V) of a causal LM,
    labels (B, T) token ids (an array or Tensor) -> (B, T - 1), whose position t - 1 holds token
    t's, as logits[:, t - 1] predict it (the shift is done here, as in transformers' causal LM
    loss); 0 where the label is ignore_index (the prompt, the padding)."""
    targets, scored = _scored_targets("token_logprobs", logits, labels, ignore_index)
    logp = F.log_softmax(logits[:, :-1], dim=-1)                                 # (B, T-1, V)
    picked = F.gather(logp, 2, xp_of(scored).where(scored, targets, 0)[..., None])[..., 0]
    return picked * scored.astype(logits.dtype)


def sequence_logprobs(logits, labels, ignore_index=-100, average=False):
    """log π(y | x) of each sequence: logits (B, T, V), labels (B, T) as token_logprobs' -> (B,),
    the sum of the scored tokens' log-probs (labels[:, 0] is never scored); average=True: their
    mean. A row without a scored token gives 0, averaged too (not NaN)."""
    _, scored = _scored_targets("sequence_logprobs", logits, labels, ignore_index)
    total = token_logprobs(logits, labels, ignore_index).sum(dim=1)
    if not average:
        return total
    return total / xp_of(scored).maximum(scored.sum(axis=1), 1).astype(logits.dtype)


def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
             reference_rejected_logps, beta=0.1, loss_type="sigmoid", label_smoothing=0.0):
    """Direct Preference Optimization (Rafailov et al., 2023), as TRL's DPOTrainer. The log-probs
    (B,) of the chosen and the rejected responses (sequence_logprobs) under the policy (Tensors)
    and the frozen reference model (arrays or Tensors; no gradient) -> (losses (B,),
    chosen_rewards (B,), rejected_rewards (B,)). With
    h = (log π(y_c) - log π(y_r)) - (log π_ref(y_c) - log π_ref(y_r)):

        sigmoid   -(1 - ε) log σ(βh) - ε log σ(-βh)   ε = label_smoothing, conservative DPO: the
                                                      preference is taken as wrong with chance ε
        ipo       (h - 1/(2β))²                        (Azar et al., 2023)
        hinge     relu(1 - βh)                         (SLiC, Zhao et al., 2023)

    The rewards are DPO's implicit ones, β(log π(y) - log π_ref(y)), without gradient."""
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"dpo_loss: loss_type must be one of {DPO_LOSSES}, got {loss_type!r}")
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta!r}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must lie in [0, 0.5), got "
                         f"{label_smoothing!r}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"dpo_loss: label_smoothing={label_smoothing!r} is for loss_type "
                         f"'sigmoid' only, got loss_type {loss_type!r}")
    _check_same_shape("dpo_loss", policy_chosen_logps=policy_chosen_logps,
                      policy_rejected_logps=policy_rejected_logps,
                      reference_chosen_logps=reference_chosen_logps,
                      reference_rejected_logps=reference_rejected_logps)
    reference_chosen = _constant(reference_chosen_logps, policy_chosen_logps)
    reference_rejected = _constant(reference_rejected_logps, policy_chosen_logps)
    h = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen - reference_rejected)
    if loss_type == "sigmoid":
        losses = (-(1 - label_smoothing) * log_sigmoid(beta * h)
                  - label_smoothing * log_sigmoid(-beta * h))
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        losses = F.relu(1 - beta * h)
    chosen_rewards = beta * (policy_chosen_logps.detach() - reference_chosen)
    rejected_rewards = beta * (policy_rejected_logps.detach() - reference_rejected)
    return losses, chosen_rewards, rejected_rewards


def reward_loss(chosen_rewards, rejected_rewards, margin=None):
    """The reward model's loss on ranked pairs (InstructGPT's step 2; TRL's RewardTrainer): under
    Bradley–Terry, P(y_c preferred to y_r) = σ(r_c - r_r), and the loss is the mean of
    -log σ(r_c - r_r - margin) -> scalar. A ranking of K responses gives its K(K-1)/2 pairs.
    chosen_rewards, rejected_rewards: Tensors (B,) (or (B, 1), a reward head's output);
    margin: None, a number or an array of the rewards' shape (how much better y_c is)."""
    _check_same_shape("reward_loss", chosen_rewards=chosen_rewards,
                      rejected_rewards=rejected_rewards)
    difference = chosen_rewards - rejected_rewards
    if margin is not None:
        margin = _constant(margin, chosen_rewards)
        if margin.ndim:
            _check_same_shape("reward_loss", chosen_rewards=chosen_rewards, margin=margin)
        difference = difference - margin
    return -log_sigmoid(difference).mean()


def masked_mean(values, mask):
    """The mean of values (a Tensor or an array) over the elements where mask (0/1, of values'
    shape) is 1, the whole batch at once, as TRL's masked_mean: Σ values·mask / Σ mask."""
    _check_same_shape("masked_mean", values=values, mask=mask)
    weights = xp_of(_values(values)).asarray(_values(mask), dtype=values.dtype)
    count = weights.sum()
    if not count > 0:
        raise ValueError("masked_mean: the mask selects no element")
    return (values * weights).sum() / count


def whiten(values, mask, shift_mean=True):
    """values (a Tensor or an array) normalised over the masked elements, as TRL's
    masked_whiten: (x - mean) / sqrt(var + 1e-8), var with Bessel's correction; shift_mean=False
    adds the mean back (a rescaling only). PPO whitens a batch's advantages."""
    count = float(_values(mask).sum())
    if count < 2:
        raise ValueError(f"whiten: the mask must select at least 2 elements, got {count:g}")
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask) * (count / (count - 1))
    whitened = (values - mean) * (var + 1e-8) ** -0.5
    return whitened if shift_mean else whitened + mean


def kl_penalty(logprobs, ref_logprobs, estimator="k1"):
    """Per-token estimates (B, T) of KL(π ‖ π_ref) from the log-probs (B, T) of tokens sampled
    from π (Schulman, "Approximating KL divergence", 2020); with r = π_ref / π:

        k1 = log π - log π_ref = -log r      unbiased; negative for some tokens
        k3 = (r - 1) - log r                 unbiased too, never negative, less variance

    RLHF's per-token reward is r_φ - β·KL (InstructGPT's step 3): the penalty keeps the policy
    near the SFT model. logprobs: a Tensor (then a Tensor, with gradient w.r.t. logprobs) or an
    array (then an array); ref_logprobs, the frozen reference's: an array or Tensor, no gradient."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_penalty: estimator must be one of {KL_ESTIMATORS}, got "
                         f"{estimator!r}")
    if not isinstance(logprobs, Tensor):
        with no_grad():
            return kl_penalty(Tensor(logprobs), ref_logprobs, estimator).array
    _check_same_shape("kl_penalty", logprobs=logprobs, ref_logprobs=ref_logprobs)
    log_r = _constant(ref_logprobs, logprobs) - logprobs
    return -log_r if estimator == "k1" else (F.exp(log_r) - 1) - log_r


def gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalized advantage estimation (Schulman et al., 2016) over each row's response, as
    TRL's PPOTrainer: rewards, values, mask (B, T) (arrays or Tensors; mask 1 on the response,
    one run of tokens per row) -> (advantages, returns), arrays (B, T), no gradient:

        δ_t = r_t + γ V_{t+1} - V_t,   A_t = δ_t + γλ A_{t+1}   (= Σ_l (γλ)^l δ_{t+l})

    with r and V taken as 0 off the response (V after its last token is 0); the returns
    A_t + V_t are the value head's targets. Both are 0 off the response."""
    _check_same_shape("gae_advantages", rewards=rewards, values=values, mask=mask)
    rewards, values = _values(rewards), _values(values)
    mask = xp_of(rewards).asarray(_values(mask), dtype=rewards.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = xp_of(rewards).zeros_like(rewards)
    next_value = next_advantage = 0.0
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = advantages[:, t] = delta + gamma * lam * next_advantage
        next_value = values[:, t]
    return advantages * mask, (advantages + values) * mask


def ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range=0.2):
    """PPO's clipped surrogate (Schulman et al., 2017) per response token, as TRL's PPOTrainer:
    logprobs (B, T), a Tensor: the policy's log-probs of the sampled tokens now; old_logprobs,
    advantages (B, T), arrays or Tensors (no gradient): the rollout's; mask (B, T) 0/1 on the
    response -> (loss, clip_fraction). With ratio = π / π_old = exp(logprobs - old_logprobs),

        loss = masked mean of max(-A·ratio, -A·clip(ratio, 1 - ε, 1 + ε))

    (the objective, maximised, is its negative: a step gains nothing by moving the ratio beyond
    1 ± ε); clip_fraction: the share of response tokens where the clipped term was the larger
    (TRL's pg_clipfrac), a float."""
    _check_same_shape("ppo_policy_loss", logprobs=logprobs, old_logprobs=old_logprobs,
                      advantages=advantages, mask=mask)
    ratio = F.exp(logprobs - _constant(old_logprobs, logprobs))
    advantages = _constant(advantages, logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * F.clamp(ratio, 1 - clip_range, 1 + clip_range)
    clipped_larger = (clipped > unclipped).array.astype(logprobs.dtype)
    loss = masked_mean(_maximum(unclipped, clipped), mask)
    return loss, float(masked_mean(clipped_larger, mask))


def ppo_value_loss(values, old_values, returns, mask, clip_range=0.2):
    """The value head's loss, as TRL's PPOTrainer: values (B, T), a Tensor: the predictions now;
    old_values, returns (B, T), arrays or Tensors (no gradient): the rollout's; mask (B, T) 0/1
    on the response -> scalar 0.5 · masked mean of max((V - R)², (V_clipped - R)²), where
    V_clipped = V_old + clip(V - V_old, -ε, ε): a prediction gains nothing by moving further
    than ε from the rollout's."""
    _check_same_shape("ppo_value_loss", values=values, old_values=old_values, returns=returns,
                      mask=mask)
    old_values, returns = _constant(old_values, values), _constant(returns, values)
    clipped = old_values + F.clamp(values - old_values, -clip_range, clip_range)
    return 0.5 * masked_mean(_maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
