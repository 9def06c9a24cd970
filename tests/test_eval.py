"""minivlm.eval and minivlm.plots: zero-shot prompt ensembling, top-k accuracy, the confusion
matrix, the L-BFGS linear probe (gradient vs finite differences, optimum vs an independent fit),
the λ search, few-shot subsets, and the PNG figures."""
import math
from unittest import mock

import numpy as np
import pytest
import scipy.optimize
import scipy.special
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

import minivlm as mv
from minivlm import plots
from minivlm.eval import (DEFAULT_TEMPLATES, IMAGENET_TEMPLATES, accuracy, confusion_matrix,
                          encode_images, ensemble_prompts, few_shot_accuracies, few_shot_indices,
                          fit_linear_probe, fit_logistic_regression, top_k_accuracy,
                          zero_shot_classifier, zero_shot_logits)
from minivlm.eval.linear_probe import FIRST_L2_EXPONENTS, logistic_regression_objective
from minivlm.models.clip import CLIP, CLIPConfig, CLIPVisionConfig
from minivlm.models.text import CLIPTextConfig
from minivlm.tokenizers import CLIPTokenizer
from reference import clip as reference

finite = st.floats(-10, 10, allow_nan=False, width=64)


# --- templates ----------------------------------------------------------------------------------

def test_templates_are_openai_80_with_one_slot_each():
    assert len(IMAGENET_TEMPLATES) == 80 == len(set(IMAGENET_TEMPLATES))
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
    assert IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert "a photo of a {}." in IMAGENET_TEMPLATES
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES + DEFAULT_TEMPLATES)


# --- prompt ensembling ------------------------------------------------------------------------

def test_ensemble_prompts_by_hand():
    # class 0: (3, 4) -> (0.6, 0.8) and (0, 2) -> (0, 1); mean (0.3, 0.9), norm √0.9
    # class 1: one template (−5, 0) -> (−1, 0)
    embeddings = np.array([[[3.0, 4.0], [0.0, 2.0]], [[-5.0, 0.0], [-1.0, 0.0]]])
    expected = np.array([[0.3 / math.sqrt(0.9), 0.9 / math.sqrt(0.9)], [-1.0, 0.0]])
    np.testing.assert_allclose(ensemble_prompts(embeddings), expected, rtol=1e-12)


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=3, max_dims=3, max_side=5),
                  elements=st.floats(0.5, 3) | st.floats(-3, -0.5)),
       st.floats(0.1, 10))
def test_ensemble_prompts_is_a_renormalised_mean_of_unit_vectors(embeddings, scale):
    classes, templates, dim = embeddings.shape
    expected = np.empty((classes, dim))
    for c in range(classes):
        total = sum(e / math.sqrt(sum(v * v for v in e)) for e in embeddings[c])
        norm = math.sqrt(sum(v * v for v in total))
        assume(norm > 1e-6)     # prompts that cancel out: see the test below
        expected[c] = total / norm
    result = ensemble_prompts(embeddings)
    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ensemble_prompts(scale * embeddings), result, rtol=1e-9, atol=1e-12)


def test_prompts_that_cancel_out_give_a_zero_class_weight():
    np.testing.assert_array_equal(ensemble_prompts(np.array([[[1.0], [-1.0]], [[2.0], [1.0]]])),
                                  [[0.0], [1.0]])


def test_ensemble_prompts_rejects_a_flat_array():
    with pytest.raises(ValueError, match=r"\(classes, templates, dim\).*\(4, 3\)"):
        ensemble_prompts(np.ones((4, 3)))


@pytest.fixture(scope="module")
def tiny_clip():
    mv.manual_seed(0)
    return CLIP(CLIPConfig(16, CLIPVisionConfig(image_resolution=16, layers=1, width=32,
                                                patch_size=8, heads=2),
                           CLIPTextConfig(context_length=16, width=32, layers=1, heads=2)))


@pytest.mark.parametrize("templates, spelt_out", [
    (["a photo of a {}.", "itap of a {}."], ["a photo of a {}.", "itap of a {}."]),
    (None, ["a photo of a {}."]),   # the CLIP paper's default prompt, section 3.1.4
])
def test_zero_shot_classifier_embeds_every_prompt_of_every_class(tiny_clip, templates, spelt_out):
    classnames = ["red circle", "blue square", "green ring"]
    tokenizer = CLIPTokenizer()
    given = {} if templates is None else {"templates": templates}
    classifier = zero_shot_classifier(tiny_clip, tokenizer, classnames, **given)
    for c, name in enumerate(classnames):     # one prompt at a time, as the paper's pseudocode
        with mv.no_grad():
            prompts = [tiny_clip.encode_text(tokenizer(t.format(name), context_length=16))
                       .numpy()[0] for t in spelt_out]
        unit = [p / np.linalg.norm(p) for p in prompts]
        expected = reference.l2_normalize(np.mean(unit, axis=0)[None], axis=1)[0]
        np.testing.assert_allclose(classifier[c], expected, rtol=1e-4, atol=1e-6)


def test_zero_shot_predictions_match_the_reference(tiny_clip):
    rng = np.random.default_rng(0)
    images = rng.random((6, 3, 16, 16)).astype(np.float32)
    classifier = zero_shot_classifier(tiny_clip, CLIPTokenizer(), ["cat", "dog", "car", "tree"])
    features = encode_images(tiny_clip, images, batch_size=4)
    with mv.no_grad():
        whole_batch = tiny_clip.encode_image(images).numpy()
    np.testing.assert_allclose(features, whole_batch, rtol=1e-5, atol=1e-6)
    expected = reference.zero_shot_predict(features.astype(np.float64), np.eye(16),
                                           classifier.astype(np.float64))
    np.testing.assert_array_equal(zero_shot_logits(features, classifier).argmax(axis=1), expected)


def test_zero_shot_errors_name_what_is_wrong(tiny_clip):
    with pytest.raises(ValueError, match="without it"):
        zero_shot_classifier(tiny_clip, CLIPTokenizer(), ["cat"], ["a photo"])
    with pytest.raises(ValueError, match=r"\(5, 8\).*\(3, 16\)"):
        zero_shot_logits(np.ones((5, 8)), np.ones((3, 16)))


# --- top-k accuracy, confusion matrix ---------------------------------------------------------

def test_top_k_accuracy_by_hand():
    logits = np.array([[0.1, 0.5, 0.2, 0.9],     # ranking 3, 1, 2, 0
                       [2.0, 1.0, 3.0, 0.0],     # ranking 2, 0, 1, 3
                       [0.0, 0.0, 1.0, 0.5]])    # ranking 2, 3, then a tie of 0 and 1
    labels = np.array([1, 2, 0])
    assert top_k_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(logits, labels, 3) == pytest.approx(2 / 3)   # the tie counts against
    assert accuracy(logits, labels, topk=(1, 4)) == pytest.approx((1 / 3, 1.0))


@given(st.integers(1, 20), st.integers(2, 12), st.data())
def test_top_k_accuracy_matches_a_sort(n, classes, data):
    logits = np.array([data.draw(st.permutations(range(classes))) for _ in range(n)], np.float64)
    labels = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)))
    k = data.draw(st.integers(1, classes))
    top = np.argsort(-logits, axis=1)[:, :k]
    expected = np.mean([labels[i] in top[i] for i in range(n)])
    assert top_k_accuracy(logits, labels, k) == pytest.approx(expected)


def test_top_k_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match=r"k must lie in \[1, 3\], got 5"):
        top_k_accuracy(np.zeros((2, 3)), np.array([0, 1]), 5)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3,\)"):
        top_k_accuracy(np.zeros((2, 3)), np.array([0, 1, 2]), 1)
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 7\]"):
        top_k_accuracy(np.zeros((2, 3)), np.array([0, 7]), 1)


def test_confusion_matrix_by_hand():
    counts = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


# --- the linear probe ------------------------------------------------------------------------

def clusters(centres, n_per_class, spread, rng):
    """n_per_class Gaussian points around each centre (C, D): (features (n·C, D), labels)."""
    labels = np.repeat(np.arange(len(centres)), n_per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), centres.shape[1])), labels


def separable_problem(n_per_class, classes, dim, spread, seed):
    rng = np.random.default_rng(seed)
    return clusters(rng.normal(size=(classes, dim)), n_per_class, spread, rng)


@given(st.integers(1, 6), st.integers(2, 4), st.integers(1, 4), st.floats(0, 2),
       st.integers(0, 2 ** 16))
def test_probe_gradient_matches_finite_differences(n, classes, dim, l2, seed):
    rng = np.random.default_rng(seed)
    features, labels = rng.normal(size=(n, dim)), rng.integers(classes, size=n)
    params = rng.normal(size=classes * (dim + 1))
    _, grad = logistic_regression_objective(params, features, labels, classes, l2)
    eps = 1e-6
    for i in range(len(params)):
        step = np.zeros_like(params)
        step[i] = eps
        up, down = (logistic_regression_objective(params + sign * step, features, labels,
                                                  classes, l2)[0] for sign in (1, -1))
        numeric = (up - down) / (2 * eps)
        assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-7)


def independent_objective(params, features, labels, classes, l2):
    """J(W, b) written again: logsumexp from SciPy, a one-hot matrix, no gradient."""
    d = features.shape[1]
    weight, bias = params[:classes * d].reshape(classes, d), params[classes * d:]
    logits = features @ weight.T + bias
    onehot = np.eye(classes)[labels]
    return np.mean(scipy.special.logsumexp(logits, axis=1) - (onehot * logits).sum(axis=1)) \
        + l2 / 2 * np.sum(weight ** 2)


@pytest.mark.parametrize("l2", [1e-2, 0.3])
def test_probe_optimum_matches_an_independent_fit(l2):
    features, labels = separable_problem(10, 3, 2, spread=1.5, seed=1)
    probe = fit_logistic_regression(features, labels, 3, l2)
    # BFGS on the objective written again, with finite-difference gradients, from elsewhere
    result = scipy.optimize.minimize(independent_objective, np.full(9, 0.1),
                                     args=(features, labels, 3, l2), method="BFGS",
                                     options={"gtol": 1e-9})
    weight, bias = result.x[:6].reshape(3, 2), result.x[6:]
    np.testing.assert_allclose(probe.weight, weight, atol=1e-4)
    # the loss ignores a shift of every bias by one constant: compare centred biases
    np.testing.assert_allclose(probe.bias - probe.bias.mean(), bias - bias.mean(), atol=1e-4)


def test_probe_optimum_matches_torch_lbfgs():
    torch = pytest.importorskip("torch")
    features, labels = separable_problem(15, 4, 5, spread=1.0, seed=2)
    l2 = 0.05
    probe = fit_logistic_regression(features, labels, 4, l2)
    linear = torch.nn.Linear(5, 4, dtype=torch.float64)
    torch.nn.init.zeros_(linear.weight), torch.nn.init.zeros_(linear.bias)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (torch.nn.functional.cross_entropy(linear(x), y)
                + l2 / 2 * linear.weight.square().sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    # SciPy's L-BFGS-B stops once every gradient entry is below 1e-5: about 1e-4 from the optimum
    np.testing.assert_allclose(probe.weight, linear.weight.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(probe.bias, linear.bias.detach().numpy(), atol=1e-4)


def test_probe_learns_separable_classes_and_checks_its_input():
    features, labels = separable_problem(20, 5, 8, spread=0.3, seed=3)
    probe = fit_logistic_regression(features, labels, 5, l2=1e-3)
    assert probe.score(features, labels) == 1.0
    with pytest.raises(ValueError, match=r"\(100, 8\) and \(99,\)"):
        fit_logistic_regression(features, labels[:-1], 5, l2=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 4\]"):
        fit_logistic_regression(features, labels, 3, l2=1e-3)
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        fit_logistic_regression(features, labels, 5, l2=-1)


def test_l2_search_beats_every_value_of_the_first_sweep():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(4, 6))
    (features, labels), (val_features, val_labels) = (clusters(centres, n, 1.2, rng)
                                                      for n in (12, 15))
    probe = fit_linear_probe(features, labels, val_features, val_labels)
    sweep = [fit_logistic_regression(features, labels, 4, 10.0 ** e).score(val_features, val_labels)
             for e in FIRST_L2_EXPONENTS]
    assert probe.score(val_features, val_labels) >= max(sweep)


class ScoresByL2:
    """A stand-in for fit_logistic_regression whose probe scores a known function of
    e = log10(λ) on the validation split: accuracy −|e − peak| (or a constant, when
    `by_cross_entropy`, leaving the tie to a cross-entropy of |e − peak|)."""

    def __init__(self, peak, by_cross_entropy=False):
        self.peak, self.by_cross_entropy, self.fitted = peak, by_cross_entropy, []

    def __call__(self, features, labels, num_classes, l2, max_iter, start=None):
        exponent = math.log10(l2)
        self.fitted.append(exponent)
        distance = abs(exponent - self.peak)
        probe = mock.Mock(l2=l2)
        probe.score.return_value = 0.5 if self.by_cross_entropy else -distance
        probe.cross_entropy.return_value = distance if self.by_cross_entropy else 1.0
        return probe


@pytest.mark.parametrize("by_cross_entropy", [False, True])
@given(peak=st.floats(-7, 7))
def test_l2_search_finds_the_nearest_eighth_of_a_decade_to_a_single_peak(by_cross_entropy, peak):
    """The paper's search on a score with one peak: the sweep's best exponent lies within 1 of
    it, and each halving keeps the peak between the best's neighbours, so the search ends at
    the multiple of 1/8 nearest the peak, clipped to [-6, 6]."""
    nearest = round(8 * peak) / 8
    assume(abs(abs(8 * peak - round(8 * peak)) - 0.5) > 1e-6)      # no tie of two neighbours
    fit = ScoresByL2(peak, by_cross_entropy)
    with mock.patch("minivlm.eval.linear_probe.fit_logistic_regression", fit):
        probe = fit_linear_probe(np.zeros((2, 1)), [0, 1], np.zeros((2, 1)), [0, 1])
    assert math.log10(probe.l2) == pytest.approx(min(max(nearest, -6), 6))
    assert len(set(fit.fitted)) == len(fit.fitted)          # no λ fitted twice
    assert set(FIRST_L2_EXPONENTS) <= set(fit.fitted)


# --- few-shot ---------------------------------------------------------------------------------

@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.integers(1, 4), st.integers(0, 99))
def test_few_shot_indices_take_k_distinct_examples_of_each_class(labels, k, seed):
    labels = np.array(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < k:
        with pytest.raises(ValueError, match=f"{k} examples per class"):
            few_shot_indices(labels, k, np.random.default_rng(seed))
        return
    chosen = few_shot_indices(labels, k, np.random.default_rng(seed))
    assert len(set(chosen.tolist())) == len(chosen) == k * len(classes)
    np.testing.assert_array_equal(np.bincount(labels[chosen], minlength=5)[classes], k)
    np.testing.assert_array_equal(chosen, few_shot_indices(labels, k, np.random.default_rng(seed)))


def test_few_shot_indices_name_the_short_classes():
    with pytest.raises(ValueError, match=r"\{2: 1\}"):
        few_shot_indices(np.array([0, 0, 1, 1, 2]), 2, np.random.default_rng(0))


def test_few_shot_accuracy_grows_with_k():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(6, 10))
    train, val, test = (clusters(centres, n, 1.0, rng) for n in (16, 10, 30))
    accuracies = few_shot_accuracies(*train, *val, *test, shots=(1, 16), trials=2)
    assert set(accuracies) == {1, 16}
    assert accuracies[16] > accuracies[1] and accuracies[16] > 0.8


# --- figures ----------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_are_png_files_written_atomically(tmp_path):
    rng = np.random.default_rng(0)
    plots.plot_loss(np.exp(-np.linspace(0, 3, 200)) + 0.01 * rng.random(200), tmp_path / "loss.png")
    plots.plot_similarity(rng.random((3, 2)), rng.random((2, 3, 8, 8)), ["a", "b", "c"],
                          tmp_path / "similarity.png")
    plots.plot_confusion(rng.integers(0, 5, (4, 4)), list("abcd"), tmp_path / "confusion.png")
    plots.plot_few_shot({1: 0.3, 2: 0.5, 4: 0.7}, tmp_path / "few_shot.png", zero_shot=0.6,
                        linear_probe=0.9)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["confusion.png", "few_shot.png", "loss.png", "similarity.png"]
    assert all((tmp_path / name).read_bytes().startswith(PNG_MAGIC) for name in files)


def test_figures_reject_mismatched_input(tmp_path):
    with pytest.raises(ValueError, match=r"\(3, 2\) needs 3 texts and 2 images, got 2 and 2"):
        plots.plot_similarity(np.zeros((3, 2)), np.zeros((2, 3, 4, 4)), ["a", "b"],
                              tmp_path / "s.png")
    with pytest.raises(ValueError, match=r"\(2, 2\) do not match 3 class names"):
        plots.plot_confusion(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "c.png")
    assert not list(tmp_path.iterdir())


def test_moving_average_by_hand():
    np.testing.assert_allclose(plots.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
