"""CLIP, as on the slides "Approach" and "Approach (Similarity)": the paper's NumPy-like pseudocode
with its names, and zero-shot classification from label text.

I_f [n, d_i] image features, T_f [n, d_t] text features (from image_encoder(I), text_encoder(T));
W_i [d_i, d_e], W_t [d_t, d_e] learned projections; t the learned log-temperature.
"""
import numpy as np


def l2_normalize(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


def log_softmax(logits, axis):
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy_loss(logits, labels, axis):
    """Mean cross-entropy where the softmax runs along `axis` and labels[k] is the index, along `axis`,
    of the correct entry for position k of the other axis. axis=1: row k is scored against labels[k]
    (images -> texts); axis=0: column k (texts -> images)."""
    log_probs = log_softmax(logits, axis)
    correct = np.take_along_axis(log_probs, np.expand_dims(labels, axis), axis)
    return -correct.mean()


def clip_logits(I_f, T_f, W_i, W_t, t):
    """Joint multimodal embedding and scaled pairwise cosine similarities: logits [n_images, n_texts].
    (The trained model also keeps exp(t) at most 100; the pseudocode has no clamp.)"""
    I_e = l2_normalize(np.dot(I_f, W_i), axis=1)
    T_e = l2_normalize(np.dot(T_f, W_t), axis=1)
    logits = np.dot(I_e, T_e.T) * np.exp(t)
    return logits


def clip_loss(I_f, T_f, W_i, W_t, t):
    """The symmetric contrastive loss: image k and text k are the n correct pairs, the n² − n others wrong."""
    logits = clip_logits(I_f, T_f, W_i, W_t, t)
    n = len(logits)
    labels = np.arange(n)
    loss_i = cross_entropy_loss(logits, labels, axis=0)
    loss_t = cross_entropy_loss(logits, labels, axis=1)
    loss = (loss_i + loss_t) / 2
    return loss


def zero_shot_classifier(T_f, W_t):
    """(2) Create a dataset classifier from label text: the L2-normalised embeddings of the label
    texts (e.g. "a photo of a {label}."). T_f [classes, d_t] -> [classes, d_e]."""
    return l2_normalize(np.dot(T_f, W_t), axis=1)


def zero_shot_predict(I_f, W_i, classifier):
    """(3) Use it for zero-shot prediction: each image gets the class whose text embedding is most
    similar (cosine) to its image embedding. I_f [n, d_i] -> class indices [n]."""
    I_e = l2_normalize(np.dot(I_f, W_i), axis=1)
    return np.argmax(I_e @ classifier.T, axis=1)
