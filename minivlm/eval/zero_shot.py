"""Zero-shot classification, the CLIP slides' steps (2) and (3): no labelled image is needed.

(2) Create a dataset classifier from label text: each class name is put into prompt templates
("a photo of a {}."), the text encoder embeds every prompt, and a class's weight is the mean of
its prompts' L2-normalised embeddings, normalised again (the CLIP paper's prompt ensembling).
(3) Use it for zero-shot prediction: an image gets the class whose weight has the highest cosine
similarity with its embedding.

    classifier = zero_shot_classifier(model, CLIPTokenizer(), ["red circle", ...],
                                      IMAGENET_TEMPLATES)
    logits = zero_shot_logits(encode_images(model, images), classifier)    # (N, C) cosines
    top1, top5 = accuracy(logits, labels, topk=(1, 5))

Features and classifiers are host NumPy arrays (float32), whatever backend the model runs on.
"""
import numpy as np

from .. import backend
from ..autograd import no_grad
from .templates import DEFAULT_TEMPLATES


def l2_normalize(x, axis=-1):
    """x divided by its L2 norm along `axis` (a zero vector stays zero)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _encode(encoder, inputs, batch_size):
    """encoder(inputs[i:i + batch_size]) for every batch, without gradients -> (N, E) NumPy."""
    with no_grad():
        batches = [backend.to_numpy(encoder(inputs[i:i + batch_size]).array)
                   for i in range(0, len(inputs), batch_size)]
    return np.concatenate(batches)


def encode_images(model, images, batch_size=256):
    """model.encode_image over images (N, 3, R, R) in batches -> (N, embed_dim), not normalised."""
    return _encode(model.encode_image, images, batch_size)


def encode_texts(model, ids, batch_size=256):
    """model.encode_text over token ids (N, L) in batches -> (N, embed_dim), not normalised."""
    return _encode(model.encode_text, ids, batch_size)


def ensemble_prompts(text_embeddings):
    """Prompt ensembling: (C classes, T templates, E) -> (C, E). Each embedding is L2-normalised,
    the T of a class averaged, and the mean normalised again (as OpenAI's zeroshot_classifier)."""
    if text_embeddings.ndim != 3:
        raise ValueError(f"ensemble_prompts: expected embeddings (classes, templates, dim), got "
                         f"shape {text_embeddings.shape}")
    return l2_normalize(l2_normalize(text_embeddings).mean(axis=1))


def zero_shot_classifier(model, tokenizer, classnames, templates=DEFAULT_TEMPLATES,
                         batch_size=256):
    """The zero-shot weights (C, embed_dim), unit rows, for C class names.

    tokenizer: a CLIPTokenizer, called as tokenizer(texts, context_length) with the model's
    context length. templates: strings with one "{}" for the class name."""
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates or not classnames:
        raise ValueError(f"zero_shot_classifier: need class names and templates each with one "
                         f"'{{}}'; got {len(classnames)} class names, templates without it: {bad}")
    prompts = [template.format(name) for name in classnames for template in templates]
    ids = tokenizer(prompts, context_length=model.config.text.context_length)
    embeddings = encode_texts(model, ids, batch_size)
    return ensemble_prompts(embeddings.reshape(len(classnames), len(templates), -1))


def zero_shot_logits(image_features, classifier):
    """Cosine similarity of each image with each class: (N, E), (C, E) unit rows -> (N, C)."""
    if image_features.ndim != 2 or image_features.shape[1] != classifier.shape[1]:
        raise ValueError(f"zero_shot_logits: image features of shape {image_features.shape} do not "
                         f"match the classifier of shape {classifier.shape}")
    return l2_normalize(image_features) @ classifier.T


def _check_logits_labels(logits, labels):
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (len(logits),):
        raise ValueError(f"expected logits (N, C) and labels (N,), got shapes {logits.shape} and "
                         f"{labels.shape}")
    if labels.size and not (0 <= labels.min() and labels.max() < logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return logits, labels


def top_k_accuracy(logits, labels, k=1):
    """The fraction of rows of logits (N, C) whose true label (N,) is among their k highest
    scores. A tie with the k-th score counts against the label (a strict rank)."""
    logits, labels = _check_logits_labels(logits, labels)
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"top_k_accuracy: k must lie in [1, {logits.shape[1]}], got {k}")
    true_scores = logits[np.arange(len(labels)), labels]
    rank = (logits >= true_scores[:, None]).sum(axis=1)     # 1 when the label scores highest
    return float((rank <= k).mean())


def accuracy(logits, labels, topk=(1,)):
    """top_k_accuracy for each k in topk -> a tuple of floats, as the CLIP notebooks' accuracy."""
    return tuple(top_k_accuracy(logits, labels, k) for k in topk)


def confusion_matrix(labels, predictions, num_classes):
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"confusion_matrix: labels of shape {labels.shape} and predictions of "
                         f"shape {predictions.shape} differ")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts
