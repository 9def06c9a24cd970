"""A LLaVA-style VLM joins a pre-trained vision model and a pre-trained language model: the image's
patch features, projected to the width of the token embeddings, take the places of the image
tokens in the prompt, and the language model reads them as words. Then the training stages:
pre-training (align the modalities on image–caption pairs) and instruction tuning, whose loss
counts the response only.

Weights are in nn.Linear's (out, in) layout, as transformers' LlavaForConditionalGeneration holds
them (multi_modal_projector.linear_1.weight, ...). Loops where they make the idea plainer.
"""
import numpy as np

from reference.transformer import mlp


def select_features(hidden_state, strategy="default"):
    """The image features of one hidden state (N, 1 + patches, width) of the vision tower:
    "default" drops the class token (the first position), "full" keeps it."""
    return hidden_state[:, 1:] if strategy == "default" else hidden_state


def projector(x, W1, b1, W2, b2):
    """LLaVA-1.5's mlp2x_gelu: W2 GELU(W1 x + b1) + b2, each patch feature (..., vision width) to
    a token embedding (..., text width); the GELU is the exact one, x Φ(x)."""
    return mlp(x, W1, b1, W2, b2, activation="gelu")


def splice(embeddings, ids, image_token_id, features):
    """The prompt's embeddings (N, L, D) with the image features (images, S, D) in place of the
    image tokens' embeddings: the k-th image token of the prompt, counting row by row, takes the
    k-th of the images·S features (image 0's S first)."""
    features = features.reshape(-1, features.shape[-1])
    if (ids == image_token_id).sum() != len(features):
        raise ValueError(f"{(ids == image_token_id).sum()} image tokens, {len(features)} features")
    spliced, k = embeddings.copy(), 0
    for n in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if ids[n, t] == image_token_id:
                spliced[n, t] = features[k]
                k += 1
    return spliced


def instruction_labels(ids, response_start, eos_id, ignore_index=-100):
    """The labels of one instruction-tuning example ids (L,): the template, the instruction and
    the image tokens (before response_start), then the response, its end-of-sequence token
    eos_id, and padding. The loss counts the response and its EOS only: labels (L,) hold their
    ids and ignore_index everywhere else (what the model reads but is not asked to write, and
    the padding after the EOS). Labels sit at their tokens' positions; the model's prediction at
    position t is scored against label t + 1."""
    labels = np.full(len(ids), ignore_index)
    for t in range(response_start, len(ids)):
        labels[t] = ids[t]
        if ids[t] == eos_id:
            break
    if (labels == ignore_index).all():
        raise ValueError("the example has no response to learn from")
    return labels
