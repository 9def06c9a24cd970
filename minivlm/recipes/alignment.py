"""`minivlm train-vlm --stage reward|ppo|dpo`: alignment tuning, the lecture's third training stage
("Alignment Tuning"), each from the stage-2 (SFT) model in OUT/instruct:

    minivlm train-vlm --stage reward          # RLHF step 2: a reward model from ranked answers
    minivlm train-vlm --stage ppo             # RLHF step 3: PPO against it (needs OUT/reward)
    minivlm train-vlm --stage dpo             # or DPO, from the preference pairs directly

    reward/   LlavaForScoring: the SFT model's trunk with a scalar head on the last token,
              trained on every pair of each ranked list (Bradley–Terry)
    ppo/      the policy after PPO; ppo/value/ its value model (started from the reward model)
    dpo/      the policy after DPO (--loss-type sigmoid, ipo or hinge; --beta)

The preference data are data/preferences.py's ranked answers (concise and correct > padded >
wrong attribute > an object that is not there) to instructions about new scenes, half of them
"Is there a Y?" (the hallucination this stage is to fix). The reference model is a frozen copy
of the SFT model. alignment.json, alignment.md and alignment.png: the reward model's accuracy
and margin on held-out comparisons, and SFT, PPO and DPO side by side (the stage-2 evaluation,
the preferred-behaviour rate, padded answers, hallucinated objects, the KL from the SFT model).
"""
import dataclasses
import json
import time

import numpy as np

from .. import backend, plots
from .. import functional as F
from ..autograd import manual_seed, no_grad, tensor
from ..data.instructions import IGNORE_INDEX, TASKS, instruct
from ..data.preferences import preference_pairs, ranked_responses
from ..data.scenes import make_scenes
from ..eval.vlm import left_padded
from ..losses import (dpo_loss, gae_advantages, kl_penalty, masked_mean,
                      ppo_policy_loss, ppo_value_loss, reward_loss, sequence_logprobs,
                      token_logprobs, whiten)
from ..models.llava import LlavaForScoring
from ..nn import ModuleList, evaluating
from ..optim import cosine_schedule
from ..pretrained import load_pretrained
from ..tokenizers import BPETokenizer
from .common import (EVAL_STREAM, RESULTS_FILE, TRAIN_STREAM, UsageError, adamw, fit,
                     read_results, saved_step, seeded_rng, write_results)
from .vlm import (BEHAVIOUR, COMMAND, HELD_OUT_TASKS, TOKENIZER_FILE, collate,
                  evaluate, freeze_for, instruction_example, instruction_prompt, open_stage)

STAGES = ("reward", "ppo", "dpo")
EVAL_KEY = 100   # its evaluation's scenes, apart from stage 2's (keyed by task index)
SFT = "instruct"
RESULTS = "alignment.json"


@dataclasses.dataclass
class AlignmentSettings:
    """What decides an alignment stage besides the VLMSettings (saved in its run)."""
    reward_steps: int = 300
    reward_batch_size: int = 16      # prompts, each with its 3 or 4 ranked answers
    reward_lr: float = 3e-4
    dpo_steps: int = 200
    dpo_batch_size: int = 16
    dpo_lr: float = 3e-5
    beta: float = 0.1                # DPO's β
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0     # cDPO's ε
    ppo_steps: int = 200             # optimizer steps: ppo_epochs per rollout batch
    ppo_batch_size: int = 32         # prompts per rollout
    ppo_epochs: int = 2
    ppo_lr: float = 1e-4
    kl_coef: float = 0.05            # the β of r = r_φ - β·KL per token
    clip_range: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    max_new_tokens: int = 48
    eval_comparisons: int = 200      # held-out prompts for the reward model's accuracy

    def check(self):
        """A UsageError for settings dpo_loss refuses, before anything trains."""
        if not 0 <= self.label_smoothing < 0.5:
            raise UsageError(f"--label-smoothing must lie in [0, 0.5), got "
                             f"{self.label_smoothing}")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise UsageError(f"--label-smoothing {self.label_smoothing} is for --loss-type "
                             f"sigmoid only, not {self.loss_type}")
        return self


# --- the preference data -----------------------------------------------------------------------

def preference_prompts(settings, stream, key, n, pairs):
    """Images (n, 3, S, S) and n (instruction, [(kind, response)] best first) about new scenes of
    `pairs`: half the instructions "Is there a Y?", the rest of any task type."""
    rng = seeded_rng(settings.seed, stream, *key)
    scenes = make_scenes(n, settings.image_size, seed=int(rng.integers(2 ** 63)), pairs=pairs)
    prompts = []
    for objects in scenes.objects:
        task, instruction, answer = instruct(objects, rng, "exists" if rng.random() < 0.5
                                             else None)
        prompts.append((instruction, ranked_responses(objects, task, answer, rng)))
    return scenes.images, prompts


def ranked_batch(tokenizer, images, prompts, image_seq_length, best_only=False):
    """Every ranked answer of every prompt as one batch: its images (one per answer), ids, labels
    and attention mask (collate), and the (chosen rows, rejected rows, their kinds) of every
    preference pair (best_only: of the best answer against each other one)."""
    rows, examples, chosen, rejected, kinds = [], [], [], [], []
    for image, (instruction, ranked) in enumerate(prompts):
        first = len(examples)
        examples += [instruction_example(tokenizer, instruction, response, image_seq_length)
                     for _, response in ranked]
        rows += [image] * len(ranked)
        order = list(range(len(ranked)))
        pairs = [(0, worse) for worse in order[1:]] if best_only else preference_pairs(order)
        for better, worse in pairs:
            chosen.append(first + better)
            rejected.append(first + worse)
            kinds.append(f"{ranked[better][0]} > {ranked[worse][0]}")
    return (images[rows], collate(examples, tokenizer.pad_id), np.array(chosen),
            np.array(rejected), kinds)


# --- step 2: the reward model ------------------------------------------------------------------

def train_reward(model, tokenizer, settings, align, run):
    """Bradley–Terry on every pair of each step's ranked lists; the vision tower frozen."""
    model.requires_grad_(True)
    model.model.vision_tower.requires_grad_(False)
    seen, _ = settings.pairs()

    def loss_of_step(step):
        images, prompts = preference_prompts(settings, TRAIN_STREAM, (STAGES.index("reward"), step),
                                             align.reward_batch_size, seen)
        margins, loss, _ = reward_margins(model, tokenizer, images, prompts)
        return loss, {"accuracy": float((margins > 0).mean()), "margin": float(margins.mean())}

    return train(model, run, align.reward_steps, align.reward_lr, loss_of_step, settings.seed,
                 align.reward_batch_size)


def reward_margins(model, tokenizer, images, prompts):
    """(r_chosen - r_rejected of every pair, an array; the reward loss; the pairs' kinds)."""
    images, (ids, _, mask), chosen, rejected, kinds = ranked_batch(
        tokenizer, images, prompts, model.config.image_seq_length)
    scores = model.score_last(tensor(ids), images, tensor(mask))
    loss = reward_loss(scores[chosen], scores[rejected])
    return backend.to_numpy((scores[chosen] - scores[rejected]).array), loss, kinds


def evaluate_reward(model, tokenizer, settings, align):
    """Pairwise accuracy and mean margin on comparisons the model never saw (new scenes of seen
    pairs, and of held-out pairs), and the accuracy per kind of pair."""
    results = {}
    with evaluating(model), no_grad():
        for name, pairs in zip(("seen_pairs", "held_out_pairs"), settings.pairs()):
            images, prompts = preference_prompts(settings, EVAL_STREAM, (EVAL_KEY, len(results)),
                                                 align.eval_comparisons, pairs)
            margins, kinds = [], []
            for start in range(0, len(prompts), 16):
                part_margins, _, part_kinds = reward_margins(
                    model, tokenizer, images[start:start + 16], prompts[start:start + 16])
                margins.append(part_margins)
                kinds += part_kinds
            margins = np.concatenate(margins)
            results[name] = {"accuracy": float((margins > 0).mean()),
                             "margin": float(margins.mean()),
                             "by_kind": {kind: float((margins[np.array(kinds) == kind] > 0).mean())
                                         for kind in sorted(set(kinds))}}
    return results


# --- DPO ---------------------------------------------------------------------------------------

def train_dpo(policy, reference, tokenizer, settings, align, run):
    """DPO on each step's ranked lists, the best answer chosen against each other one (with every
    pair, a padded answer chosen over worse ones would be pushed up, and being long its log-prob
    moves most: DPO's length exploitation); the reference's log-probs computed without gradient
    at each step; the projector and the decoder train, as in stage 2."""
    freeze_for(SFT, policy)
    seen, _ = settings.pairs()

    def loss_of_step(step):
        images, prompts = preference_prompts(settings, TRAIN_STREAM, (STAGES.index("dpo"), step),
                                             align.dpo_batch_size, seen)
        images, (ids, labels, mask), chosen, rejected, _ = ranked_batch(
            tokenizer, images, prompts, policy.config.image_seq_length, best_only=True)
        logps = sequence_logprobs(policy(tensor(ids), pixel_values=images,
                                         attention_mask=tensor(mask)), labels)
        reference_logps = frozen_logprobs(reference, ids, images, mask, labels).sum(axis=1)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            logps[chosen], logps[rejected], reference_logps[chosen], reference_logps[rejected],
            align.beta, align.loss_type, align.label_smoothing)
        chosen_rewards, rejected_rewards = (backend.to_numpy(r.array) for r in
                                            (chosen_rewards, rejected_rewards))
        return losses.mean(), {"rewards/chosen": float(chosen_rewards.mean()),
                               "rewards/rejected": float(rejected_rewards.mean()),
                               "rewards/accuracy": float((chosen_rewards > rejected_rewards)
                                                         .mean()),
                               "rewards/margin": float((chosen_rewards - rejected_rewards)
                                                       .mean())}

    return train(policy, run, align.dpo_steps, align.dpo_lr, loss_of_step, settings.seed,
                 align.dpo_batch_size)


def frozen_logprobs(model, ids, images, mask, labels):
    """log p of each labelled token under `model`, without gradient: (B, T - 1) array, 0 where
    the label is IGNORE_INDEX."""
    with evaluating(model), no_grad():
        logits = model(tensor(ids), pixel_values=images, attention_mask=tensor(mask))
        return backend.to_numpy(token_logprobs(logits, labels).array)


# --- step 3: PPO -------------------------------------------------------------------------------

def sample_answers(policy, tokenizer, images, instructions, max_new_tokens):
    """Sampled answers (temperature 1, the KV cache) -> ids (B, T): the left-padded prompts, then
    the answers; mask (B, T): 1 on prompt and answer (up to its EOS); labels (B, T): the answer's
    ids and IGNORE_INDEX elsewhere."""
    n = policy.config.image_seq_length
    prompt_ids, prompt_mask = left_padded([instruction_prompt(tokenizer, i, n)
                                           for i in instructions], tokenizer.pad_id)
    ids = backend.to_numpy(policy.generate(
        prompt_ids, pixel_values=images, attention_mask=prompt_mask, do_sample=True,
        max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id, suppress_tokens=[policy.config.image_token_id]))
    new = ids[:, prompt_ids.shape[1]:]
    is_eos = new == tokenizer.eos_id
    answer = (np.cumsum(is_eos, axis=1) - is_eos) == 0        # up to and with the first EOS
    mask = np.concatenate([prompt_mask, answer], axis=1)
    labels = np.where(np.concatenate([np.zeros_like(prompt_mask, bool), answer], axis=1), ids,
                      IGNORE_INDEX)
    return ids, mask.astype(np.int64), labels


def rollout(policy, value_model, reference, reward_model, tokenizer, settings, align, index):
    """One PPO batch: sampled answers to new instructions, their log-probs under the policy and
    the reference, the values, the reward model's scores; per-token rewards -β·KL plus the score
    on the last answer token; GAE advantages (whitened) and returns. All arrays (B, T - 1),
    aligned with the tokens they score (token t+1 of the sequence)."""
    images, prompts = preference_prompts(settings, TRAIN_STREAM, (STAGES.index("ppo"), index),
                                         align.ppo_batch_size, settings.pairs()[0])
    ids, mask, labels = sample_answers(policy, tokenizer, images, [i for i, _ in prompts],
                                       align.max_new_tokens)
    response = (labels[:, 1:] != IGNORE_INDEX).astype(np.float32)
    with evaluating(policy), evaluating(value_model), evaluating(reward_model), no_grad():
        logits = policy(tensor(ids), pixel_values=images, attention_mask=tensor(mask))
        logprobs = backend.to_numpy(token_logprobs(logits, labels).array)
        entropy = masked_mean(token_entropy(logits), response)
        values = backend.to_numpy(value_model(tensor(ids), images, tensor(mask)).array)[:, :-1]
        scores = backend.to_numpy(reward_model.score_last(tensor(ids), images,
                                                          tensor(mask)).array)
    kl = kl_penalty(logprobs, frozen_logprobs(reference, ids, images, mask, labels)) * response
    rewards = -align.kl_coef * kl
    last = response.shape[1] - 1 - response[:, ::-1].argmax(axis=1)
    rewards[np.arange(len(rewards)), last] += scores
    advantages, returns = gae_advantages(rewards, values * response, response, align.gamma,
                                         align.lam)
    return {"ids": ids, "mask": mask, "labels": labels, "images": images, "response": response,
            "logprobs": logprobs, "values": values, "returns": returns,
            "advantages": whiten(advantages, response),
            "metrics": {"reward": float(scores.mean()), "kl": float(kl.sum(axis=1).mean()),
                        "entropy": float(entropy)}}


def token_entropy(logits):
    """The entropy of each next-token distribution: logits (B, T, V) -> (B, T - 1) array, aligned
    as token_logprobs."""
    logp = backend.to_numpy(F.log_softmax(logits[:, :-1], dim=-1).array)
    return -(np.exp(logp) * logp).sum(-1)


def train_ppo(policy, value_model, reference, reward_model, tokenizer, settings, align, run):
    """PPO: every ppo_epochs optimizer steps a new rollout, then the clipped policy loss and the
    clipped value loss (weighted vf_coef) on it; the projector and decoder of the policy and the
    value model train. A resumed run starts with a new rollout."""
    freeze_for(SFT, policy)
    value_model.requires_grad_(True)
    value_model.model.vision_tower.requires_grad_(False)
    reward_model.requires_grad_(False)
    batch = {}

    def loss_of_step(step):
        if step % align.ppo_epochs == 0 or not batch:
            batch.update(rollout(policy, value_model, reference, reward_model, tokenizer,
                                 settings, align, step // align.ppo_epochs))
        ids, mask, images = tensor(batch["ids"]), tensor(batch["mask"]), batch["images"]
        logprobs = token_logprobs(policy(ids, pixel_values=images, attention_mask=mask),
                                  batch["labels"])
        policy_loss, clip_fraction = ppo_policy_loss(logprobs, batch["logprobs"],
                                                     batch["advantages"], batch["response"],
                                                     align.clip_range)
        values = value_model(ids, images, mask)[:, :-1]
        value_loss = ppo_value_loss(values, batch["values"], batch["returns"], batch["response"],
                                    align.clip_range)
        return policy_loss + align.vf_coef * value_loss, {
            **batch["metrics"], "clip_fraction": clip_fraction,
            "policy_loss": policy_loss.item(), "value_loss": value_loss.item()}

    run.companions = {"value": value_model}
    return train(ModuleList([policy, value_model]), run, align.ppo_steps, align.ppo_lr,
                 loss_of_step, settings.seed, align.ppo_batch_size, saved=policy)


def train(model, run, steps, lr, loss_of_step, seed, batch_size, saved=None):
    """fit() with AdamW (no weight decay) and a cosine schedule from lr to lr/10 after a 10 %
    warm-up, continuing from run.step; `saved` (default `model`): what each checkpoint writes."""
    optimizer = adamw(model, lr, weight_decay=0.0)
    run.restore(optimizer)
    schedule = cosine_schedule(optimizer, warmup_steps=steps // 10, total_steps=steps,
                               min_lr=lr / 10)
    schedule.load_state_dict({"last_epoch": run.step, "base_lrs": schedule.base_lrs})
    return fit(model, optimizer, schedule, loss_of_step, run, steps, seed, save_every=100,
               unit="prompt", scale=batch_size, saved=saved)


# --- evaluation --------------------------------------------------------------------------------

def kl_from_sft(policy, sft, tokenizer, settings, align, n=200):
    """KL(π ‖ π_SFT) per answer, estimated on the policy's own samples (k1 summed over each
    answer's tokens, averaged over n answers to new instructions)."""
    images, prompts = preference_prompts(settings, EVAL_STREAM, (EVAL_KEY + 1,), n,
                                         settings.pairs()[0])
    manual_seed(settings.seed)
    ids, mask, labels = sample_answers(policy, tokenizer, images, [i for i, _ in prompts],
                                       align.max_new_tokens)
    policy_logps = frozen_logprobs(policy, ids, images, mask, labels)
    sft_logps = frozen_logprobs(sft, ids, images, mask, labels)
    return float((policy_logps - sft_logps).sum(axis=1).mean())


def report(results):
    """The reward model's held-out accuracy, then SFT, PPO and DPO side by side, as Markdown."""
    lines = []
    if "reward" in results:
        lines.append("| reward model | accuracy | margin |\n|---|---|---|")
        for name, r in results["reward"].items():
            lines.append(f"| {name.replace('_', ' ')} | {100 * r['accuracy']:.1f} % | "
                         f"{r['margin']:.2f} |")
        lines.append("")
    policies = [s for s in (SFT, "ppo", "dpo") if s in results]
    lines.append("| | " + " | ".join(LABELS[s] for s in policies) + " |")
    lines.append("|---|" + "---|" * len(policies))
    for label, value in ROWS:
        lines.append(f"| {label} | " + " | ".join(value(results[s]) for s in policies) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    return table


LABELS = {SFT: "SFT (stage 2)", "ppo": "PPO", "dpo": "DPO"}
ROWS = ([(label, lambda r, m=metric: f"{100 * r['behaviour'][m]:.1f} %")
         for metric, label in BEHAVIOUR.items()]
        + [("KL from the SFT model (nats per answer)", lambda r: f"{r['kl_from_sft']:.2f}")]
        + [(f"{task} (seen pairs)", lambda r, t=task: f"{100 * r['exact_match'][t]:.1f} %")
           for task in TASKS]
        + [(f"{task} (held-out pairs)",
            lambda r, t=task: f"{100 * r['exact_match_held_out'][t]:.1f} %")
           for task in HELD_OUT_TASKS]
        + [("POPE F1", lambda r: f"{r['pope']['f1']:.3f}"),
           ("POPE yes-ratio", lambda r: f"{r['pope']['yes_ratio']:.3f}")])


def plot(results, path):
    """The behaviour rates and the stage-2 tasks, one bar per policy (its KL in the legend)."""
    policies = [s for s in (SFT, "ppo", "dpo") if s in results]
    behaviour = [("preferred", "preferred"), ("absent_object_hallucination",
                                              "hallucinated\n(absent objects)"),
                 ("padded", "padded")]
    values = {f"{LABELS[s]}, KL {results[s]['kl_from_sft']:.2f}":
              [results[s]["behaviour"][k] for k, _ in behaviour]
              + [results[s]["exact_match"][t] for t in TASKS] for s in policies}
    plots.plot_bars(values, [name for _, name in behaviour] + list(TASKS), path,
                    "alignment tuning: SFT, PPO and DPO", ylabel="share of answers (%)")


# --- minivlm train-vlm --stage reward|ppo|dpo (recipes/train_vlm.py) ---------------------------

def sft_results(out):
    """Stage 2's evaluation as train-vlm wrote it in results.json, or None (none there, or one
    from before the behaviour rates)."""
    results = read_results(out).get(SFT, {}) if (out / RESULTS_FILE).is_file() else {}
    return results if "behaviour" in results else None


def run_stage(stage, out, settings, align):
    """Train `stage` (VLMSettings, AlignmentSettings) from out/instruct, continuing a run of it
    in out/stage; evaluate it and update alignment.json, alignment.md and alignment.png."""
    if saved_step(out / SFT, f"{COMMAND} {SFT}") is None:
        raise UsageError(f"--stage {stage} starts from the stage-2 model in {out / SFT}; run "
                         f"train-vlm without --stage first")
    if stage == "ppo" and saved_step(out / "reward", f"{COMMAND} reward") is None:
        raise UsageError(f"--stage ppo needs the reward model in {out / 'reward'}; run "
                         f"train-vlm --stage reward first")
    started = time.monotonic()
    tokenizer = BPETokenizer.load(out / SFT / TOKENIZER_FILE)
    results_path = out / RESULTS
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    seconds = results.pop("seconds", {})
    sft = load_pretrained(out / SFT)
    sft.requires_grad_(False)
    if SFT not in results:
        results[SFT] = {**(sft_results(out) or evaluate(sft, tokenizer, settings)),
                        "kl_from_sft": 0.0}

    run, saved = open_stage(stage, out, {**dataclasses.asdict(settings),
                                       **dataclasses.asdict(align)})
    tokenizer.save(out / stage / TOKENIZER_FILE)
    if stage == "reward":
        model = saved or LlavaForScoring.from_vlm(sft)
        train_reward(model, tokenizer, settings, align, run)
        results["reward"] = evaluate_reward(model, tokenizer, settings, align)
    else:
        policy = saved or load_pretrained(out / SFT)
        if stage == "dpo":
            train_dpo(policy, sft, tokenizer, settings, align, run)
        else:
            reward_model = load_pretrained(out / "reward")
            value_model = (load_pretrained(out / stage / "value") if saved is not None else
                           load_pretrained(out / "reward"))
            train_ppo(policy, value_model, sft, reward_model, tokenizer, settings, align, run)
        results[stage] = {**evaluate(policy, tokenizer, settings),
                          "kl_from_sft": kl_from_sft(policy, sft, tokenizer, settings, align)}
    seconds[stage] = round(time.monotonic() - started, 1)
    write_results(out, {**results, "seconds": seconds}, RESULTS)
    (out / "alignment.md").write_text(report(results), encoding="utf-8")
    if any(s in results for s in ("ppo", "dpo")):
        plot(results, out / "alignment.png")
    print(f"{seconds[stage]:.0f} s; alignment.json, alignment.md and alignment.png in {out}")
    return 0
