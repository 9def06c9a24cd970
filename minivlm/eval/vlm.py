"""Evaluating a vision–language model as VQA benchmarks do: exact match of its greedy answers,
a POPE-style yes/no probe of hallucinated objects (Li et al., 2023: precision, recall, F1 and
the share of "yes"), and multiple choice scored by each option's log-likelihood.

    answers = generate_answers(model, prompts, pixels, eos_id, pad_id)    # token id lists
    exact_match(["red", "two"], ["red", "three"])                          # 0.5
    pope(["yes", "no", "yes"], ["yes", "no", "no"])                        # {"precision": 0.5, ...}
    scores = option_logprobs(model, prompt, pixels, options, eos_id)      # (n_options,)

The model is any VLM with model(input_ids, pixel_values=, attention_mask=) -> logits and
model.generate(...) (minivlm.models.llava); prompts and options are lists of token ids.
"""
import numpy as np

from .. import backend
from ..autograd import no_grad, tensor


def exact_match(predictions, answers):
    """The share of predictions equal to their answers (both stripped)."""
    if len(predictions) != len(answers) or not answers:
        raise ValueError(f"exact_match: {len(predictions)} predictions for {len(answers)} answers")
    return float(np.mean([p.strip() == a.strip() for p, a in zip(predictions, answers)]))


def pope(predictions, answers):
    """POPE's numbers for yes/no questions ("yes" the positive class): precision, recall, F1 of
    "yes", the accuracy, and the share of "yes" answers (near 0.5 on a balanced probe; a model
    that hallucinates says yes too often)."""
    said_yes = np.array([p.strip().lower().startswith("yes") for p in predictions])
    is_yes = np.array([a.strip().lower() == "yes" for a in answers])
    true_positives = int((said_yes & is_yes).sum())
    precision = true_positives / max(1, int(said_yes.sum()))
    recall = true_positives / max(1, int(is_yes.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "accuracy": float((said_yes == is_yes).mean()), "yes_ratio": float(said_yes.mean())}


def left_padded(sequences, pad_id):
    """Token id lists -> (ids (B, T) int64, attention_mask (B, T)) padded on the left, as
    generation wants its prompts (each row's last token in the last column)."""
    width = max(map(len, sequences))
    ids = np.full((len(sequences), width), pad_id, np.int64)
    mask = np.zeros((len(sequences), width), np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence):] = sequence
        mask[row, width - len(sequence):] = 1
    return ids, mask


def generate_answers(model, prompts, pixel_values, eos_id, pad_id, max_new_tokens=40,
                     batch_size=64):
    """The greedy continuation of each prompt (with its image) up to the EOS -> id lists."""
    answers = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_padded(prompts[start:start + batch_size], pad_id)
        out = model.generate(ids, pixel_values=pixel_values[start:start + batch_size],
                             attention_mask=mask, max_new_tokens=max_new_tokens,
                             eos_token_id=eos_id, pad_token_id=pad_id)
        for row in backend.to_numpy(out)[:, ids.shape[1]:].tolist():
            answers.append(row[:row.index(eos_id)] if eos_id in row else row)
    return answers


def option_logprobs(model, prompt, pixel_values, options, eos_id):
    """log p(option, EOS | prompt, image) for each option (token id lists), summed over the
    option's tokens and the EOS -> (n_options,): multiple choice by likelihood. pixel_values:
    the one image (1, 3, R, R)."""
    sequences = [list(prompt) + list(option) + [eos_id] for option in options]
    width = max(map(len, sequences))
    ids = np.zeros((len(sequences), width), np.int64)
    mask = np.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)], mask[row, :len(sequence)] = sequence, 1
    images = backend.numpy.repeat(backend.to_numpy(pixel_values), len(options), axis=0)
    with no_grad():
        logits = model(tensor(ids), pixel_values=images, attention_mask=tensor(mask))
    logp = backend.to_numpy(logits.array).astype(np.float64)
    logp -= np.log(np.exp(logp - logp.max(-1, keepdims=True)).sum(-1, keepdims=True)) + \
        logp.max(-1, keepdims=True)
    scores = []
    for row, sequence in enumerate(sequences):
        positions = range(len(prompt), len(sequence))        # the option's tokens and the EOS
        scores.append(sum(logp[row, t - 1, sequence[t]] for t in positions))
    return np.array(scores)
