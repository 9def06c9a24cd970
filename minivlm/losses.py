"""Sequence-level training objectives, over the models' outputs.

    logits_per_image, _ = model(pixels, ids)
    loss = clip_loss(logits_per_image)                         # one process's whole batch
    loss = gathered_clip_loss(*model.embed(pixels, ids), model.logit_scale)   # any number of ranks
"""
from . import distributed
from . import functional as F
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
