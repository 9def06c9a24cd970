"""Evaluating CLIP as its paper does: zero-shot classification from prompts, linear probes and
few-shot classifiers on frozen image features (SciPy L-BFGS)."""
from .linear_probe import (LinearProbe, few_shot_accuracies, few_shot_indices,
                           fit_linear_probe, fit_logistic_regression)
from .templates import DEFAULT_TEMPLATES, IMAGENET_TEMPLATES
from .zero_shot import (accuracy, confusion_matrix, encode_images, encode_texts,
                        ensemble_prompts, l2_normalize, top_k_accuracy, zero_shot_classifier,
                        zero_shot_logits)

__all__ = ["DEFAULT_TEMPLATES", "IMAGENET_TEMPLATES", "LinearProbe", "accuracy",
           "confusion_matrix", "encode_images", "encode_texts", "ensemble_prompts",
           "few_shot_accuracies", "few_shot_indices", "fit_linear_probe",
           "fit_logistic_regression", "l2_normalize", "top_k_accuracy", "zero_shot_classifier",
           "zero_shot_logits"]
