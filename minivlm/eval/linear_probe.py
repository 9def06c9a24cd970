"""Linear probes and few-shot classifiers on frozen features, as the slides "Experiments and
Results (Linear Probe)" and "(Few-Shot)" and the CLIP paper's appendix A.3.

A linear probe is multinomial logistic regression on features the encoder computed once and
never changes: with W (C, D), b (C,) and λ >= 0 it minimises

    J(W, b) = (1/N) Σ_n −log softmax(W x_n + b)[y_n]  +  (λ/2) ‖W‖²      (b is not penalised)

with SciPy's L-BFGS and the analytic gradient (∂J/∂logits = (softmax − onehot)/N). λ is chosen
on a validation split by the paper's search: λ ∈ {1e-6, 1e-4, ..., 1e6}, then the interval
around the best halved, within [1e-6, 1e6], until it reaches 8 steps per decade; equal
accuracies are decided by the validation cross-entropy. A k-shot classifier is the same probe
trained on k examples per class (λ still chosen on the whole validation split, which is generous
to it when k is small).

    probe = fit_linear_probe(train_x, train_y, val_x, val_y)
    probe.score(test_x, test_y)                                   # top-1 accuracy
    few_shot_accuracies(train_x, train_y, val_x, val_y, test_x, test_y, shots=(1, 2, 4, 8, 16))
"""
import dataclasses

import numpy as np
import scipy.optimize

SHOTS = (1, 2, 4, 8, 16)
FIRST_L2_EXPONENTS = (-6, -4, -2, 0, 2, 4, 6)     # λ = 10 ** exponent, the paper's first sweep
STEPS_PER_DECADE = 8                               # the resolution the search stops at


@dataclasses.dataclass
class LinearProbe:
    """A fitted linear classifier: logits = features @ weight.T + bias."""
    weight: np.ndarray      # (C, D)
    bias: np.ndarray        # (C,)
    l2: float               # the λ it was fitted with

    def logits(self, features):
        return np.asarray(features, np.float64) @ self.weight.T + self.bias

    def predict(self, features):
        return self.logits(features).argmax(axis=1)

    def score(self, features, labels):
        """Top-1 accuracy on (features (N, D), labels (N,))."""
        return float((self.predict(features) == np.asarray(labels)).mean())

    def cross_entropy(self, features, labels):
        """Mean −log p(label | features) on (features (N, D), labels (N,))."""
        log_probs = log_softmax(self.logits(features))
        return float(-log_probs[np.arange(len(log_probs)), labels].mean())


def log_softmax(logits):
    """log softmax over the last axis of (N, C) logits, shifted by the row maximum for safety."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def logistic_regression_objective(params, features, labels, num_classes, l2):
    """J(W, b) of the module docstring and its gradient, for SciPy.

    params: float64 (C·D + C,), W row by row then b; features (N, D); labels (N,) ints in [0, C).
    Returns (J, ∂J/∂params of the same shape as params)."""
    n, d = features.shape
    weight, bias = params[:num_classes * d].reshape(num_classes, d), params[num_classes * d:]
    log_probs = log_softmax(features @ weight.T + bias)
    rows = np.arange(n)
    loss = -log_probs[rows, labels].mean() + 0.5 * l2 * np.sum(weight ** 2)
    grad_logits = np.exp(log_probs)
    grad_logits[rows, labels] -= 1
    grad_logits /= n
    grad_weight = grad_logits.T @ features + l2 * weight
    return loss, np.concatenate([grad_weight.ravel(), grad_logits.sum(axis=0)])


def _check_features(features, labels, num_classes=None):
    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),) or labels.dtype.kind not in "iu":
        raise ValueError(f"expected features (N, D) and integer labels (N,), got shapes "
                         f"{features.shape} and {labels.shape} ({labels.dtype})")
    if (num_classes is not None and labels.size
            and not 0 <= labels.min() <= labels.max() < num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return features, labels


def fit_logistic_regression(features, labels, num_classes, l2, max_iter=1000, start=None):
    """Minimise J(W, b) with L-BFGS from W = 0, b = 0, or from the LinearProbe `start` (a warm
    start) -> LinearProbe (float64 weights)."""
    features, labels = _check_features(features, labels, num_classes)
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    d = features.shape[1]
    initial = (np.zeros(num_classes * (d + 1)) if start is None
               else np.concatenate([start.weight.ravel(), start.bias]))
    result = scipy.optimize.minimize(
        logistic_regression_objective, initial, jac=True,
        args=(features, labels, num_classes, l2), method="L-BFGS-B",
        options={"maxiter": max_iter})
    weight, bias = result.x[:num_classes * d].reshape(num_classes, d), result.x[num_classes * d:]
    return LinearProbe(weight, bias, l2)


def fit_linear_probe(train_features, train_labels, val_features, val_labels, num_classes=None,
                     max_iter=1000):
    """The probe whose λ scores best on the validation split (the paper's search; among equal
    accuracies, the lowest validation cross-entropy), fitted on the training split. Each fit
    starts from the solution for the nearest λ already fitted, which saves most L-BFGS
    iterations."""
    if num_classes is None:
        num_classes = int(max(np.max(train_labels), np.max(val_labels))) + 1
    val_features, val_labels = _check_features(val_features, val_labels, num_classes)
    probes, scores = {}, {}               # exponent of λ -> probe, (val accuracy, −val loss)

    def best_of(exponents):
        for exponent in sorted(exponents, reverse=True):    # from strong to weak regularisation
            if exponent not in probes:
                nearest = min(probes, key=lambda e: abs(e - exponent), default=None)
                probes[exponent] = fit_logistic_regression(
                    train_features, train_labels, num_classes, 10.0 ** exponent, max_iter,
                    start=probes.get(nearest))
                scores[exponent] = (probes[exponent].score(val_features, val_labels),
                                    -probes[exponent].cross_entropy(val_features, val_labels))
        return max(exponents, key=scores.get)

    best, step = best_of(FIRST_L2_EXPONENTS), FIRST_L2_EXPONENTS[1] - FIRST_L2_EXPONENTS[0]
    while step > 1 / STEPS_PER_DECADE:
        step /= 2
        best = best_of([e for e in (best - step, best, best + step)
                        if FIRST_L2_EXPONENTS[0] <= e <= FIRST_L2_EXPONENTS[-1]])
    return probes[best]


def few_shot_indices(labels, k, rng):
    """Indices of k examples of each class present in labels (N,), drawn without replacement by
    `rng` (a NumPy Generator), class by class in increasing order -> int array (k · classes,)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    short = {int(c): int(n) for c, n in zip(classes, counts) if n < k}
    if short:
        raise ValueError(f"few_shot_indices: {k} examples per class needed, but these classes "
                         f"have fewer {{class: count}}: {short}")
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
                           for c in classes])


def few_shot_accuracies(train_features, train_labels, val_features, val_labels, test_features,
                        test_labels, shots=SHOTS, trials=1, seed=0, num_classes=None):
    """{k: test accuracy} of probes trained on k examples per class of the training split (λ
    chosen on the validation split), each the mean over `trials` random draws of the k-shot set."""
    if num_classes is None:
        num_classes = int(max(np.max(train_labels), np.max(val_labels), np.max(test_labels))) + 1
    rng = np.random.default_rng(seed)
    train_features, train_labels = _check_features(train_features, train_labels, num_classes)
    accuracies = {}
    for k in shots:
        scores = []
        for _ in range(trials):
            chosen = few_shot_indices(train_labels, k, rng)
            probe = fit_linear_probe(train_features[chosen], train_labels[chosen], val_features,
                                     val_labels, num_classes)
            scores.append(probe.score(test_features, test_labels))
        accuracies[k] = float(np.mean(scores))
    return accuracies
