"""PNG figures of the training commands: the loss curve, the image × text similarity matrix (the
CLIP notebook's figure), a confusion matrix, the few-shot curve (the CLIP paper's Figure 6) and
the VLM's stages side by side; and the lecture's experiments: the model-size table, three ways
of processing sequences, grouped bars and accuracy curves.

Figures are drawn on matplotlib's Agg canvas without pyplot (no window, no global state) and
each file is written to a temporary name, then renamed (minivlm.io.atomic_write).

    plot_loss(losses, "loss.png")
    plot_similarity(similarity, images, texts, "similarity.png")
    plot_confusion(counts, class_names, "confusion.png")
    plot_few_shot({1: 0.4, 2: 0.6, ...}, "few_shot.png", zero_shot=0.9, linear_probe=0.97)
    plot_stages({"before": results, "pretrain": ..., "instruct": ...}, "stages.png")
    plot_model_sizes(names, slide_counts, counted, "model_sizes.png")
    plot_sequences({"RNN": field, ...}, lengths, {"RNN": seconds, ...}, {"RNN": bytes, ...},
                   "sequences.png")
    plot_bars({"cbow": [0.9, 0.5]}, ["seen", "swapped"], "bars.png", "title", chance=[0.1, 0.5])
    plot_lines({"vit": ([1000, 4000], [0.6, 0.9])}, "lines.png", "training images", "title")
"""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_write


def _save(figure, path):
    FigureCanvasAgg(figure)
    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100, bbox_inches="tight")


def moving_average(values, window):
    """The mean of each run of `window` consecutive values (shorter at the start): (n,) -> (n,)."""
    values = np.asarray(values, np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def plot_loss(losses, path, title="contrastive loss"):
    """The loss at each step, and its moving average over about 2 % of the steps."""
    losses = np.asarray(losses)
    steps = np.arange(1, len(losses) + 1)
    figure = Figure(figsize=(6, 4))
    ax = figure.add_subplot()
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="per step")
    ax.plot(steps, moving_average(losses, max(1, len(losses) // 50)), color="tab:blue",
            label="moving average")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    _save(figure, path)


def plot_similarity(similarity, images, texts, path, title="cosine similarity"):
    """similarity (T texts, I images) as a coloured table with its values, each image (3, H, W)
    in [0, 1] above its column and each text beside its row, as in OpenAI's CLIP notebook."""
    similarity = np.asarray(similarity)
    if similarity.shape != (len(texts), len(images)):
        raise ValueError(f"plot_similarity: similarity of shape {similarity.shape} needs "
                         f"{similarity.shape[0]} texts and {similarity.shape[1]} images, got "
                         f"{len(texts)} and {len(images)}")
    n_texts, n_images = similarity.shape
    figure = Figure(figsize=(2 + 0.8 * n_images, 1.5 + 0.55 * n_texts))
    ax = figure.add_subplot()
    ax.imshow(similarity, cmap="viridis", aspect="equal")
    bright = (similarity.min() + similarity.max()) / 2       # viridis is light above the middle
    for row in range(n_texts):
        for column in range(n_images):
            value = similarity[row, column]
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if value > bright else "white")
    for column, image in enumerate(images):
        ax.imshow(np.transpose(image, (1, 2, 0)), extent=(column - 0.5, column + 0.5, -0.6, -1.6))
    ax.set_xlim(-0.5, n_images - 0.5)
    ax.set_ylim(n_texts - 0.5, -1.7)
    ax.set_yticks(range(n_texts), texts, fontsize=9)
    ax.set_xticks([])
    for side in ("left", "top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title)
    _save(figure, path)


def plot_confusion(counts, class_names, path, title="zero-shot confusion matrix"):
    """Row-normalised confusion counts (C, C), rows = true class, columns = predicted class."""
    counts = np.asarray(counts, np.float64)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"plot_confusion: counts of shape {counts.shape} do not match "
                         f"{len(class_names)} class names")
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 3 + 0.18 * len(class_names)
    figure = Figure(figsize=(size + 1, size))
    ax = figure.add_subplot()
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=6)
    ax.set_yticks(ticks, class_names, fontsize=6)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    _save(figure, path)


def plot_few_shot(accuracies, path, zero_shot=None, linear_probe=None,
                  title="few-shot linear probes vs zero-shot"):
    """Test accuracy against k examples per class ({k: accuracy}, k on a log2 axis), with the
    zero-shot accuracy (and optionally the all-data linear probe) as horizontal lines, as the CLIP
    paper's Figure 6 compares zero-shot CLIP with few-shot probes."""
    shots = sorted(accuracies)
    figure = Figure(figsize=(6, 4))
    ax = figure.add_subplot()
    ax.plot(shots, [100 * accuracies[k] for k in shots], "o-", label="k-shot linear probe")
    if zero_shot is not None:
        ax.axhline(100 * zero_shot, color="tab:red", linestyle="--", label="zero-shot")
    if linear_probe is not None:
        ax.axhline(100 * linear_probe, color="tab:gray", linestyle=":",
                   label="linear probe, all training data")
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set(xlabel="labelled training examples per class", ylabel="top-1 accuracy (%)",
           title=title, ylim=(0, 100))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    _save(figure, path)


def plot_stages(results, path, title="the VLM after each training stage"):
    """Exact match per task type (seen pairs), held-out pairs and POPE's F1, one bar per stage
    ({stage: evaluate()'s dict}), as grouped bars."""
    last = results[list(results)[-1]]
    groups = [("exact_match", task, task) for task in last["exact_match"]]
    groups += [("exact_match_held_out", task, f"{task}\n(held-out)")
               for task in last["exact_match_held_out"]]
    values = {stage: [r[key][task] for key, task, _ in groups] + [r["pope"]["f1"]]
              for stage, r in results.items()}
    plot_bars(values, [name for _, _, name in groups] + ["POPE F1"], path, title,
              ylabel="exact match (%)")


def plot_model_sizes(names, slide, counted, path,
                     title="parameters: the slide and minivlm's count"):
    """Bars of the slide's parameter counts and minivlm's, per model, on a log axis, each counted
    bar labelled with its difference from the slide."""
    slide, counted = np.asarray(slide, np.float64), np.asarray(counted, np.float64)
    positions = np.arange(len(names))
    figure = Figure(figsize=(8, 4))
    ax = figure.add_subplot()
    ax.bar(positions - 0.2, slide, width=0.4, color="tab:gray", label="slide")
    ax.bar(positions + 0.2, counted, width=0.4, color="tab:blue", label="minivlm, from shapes")
    for x, (theirs, ours) in enumerate(zip(slide, counted)):
        ax.text(x + 0.2, ours * 1.15, f"{100 * (ours / theirs - 1):+.1f}%", ha="center",
                fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="parameters", title=title)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    _save(figure, path)


def plot_sequences(fields, lengths, seconds, peak_bytes, path):
    """Top: each model's receptive field |∂ output_t / ∂ input_s| as a heatmap (white: exactly
    zero). Bottom: forward time and peak memory against N, on log axes. fields {name: (n, n)},
    seconds and peak_bytes {name: one per length}."""
    figure = Figure(figsize=(3.4 * len(fields), 6.4), layout="constrained")
    figure.suptitle("after one layer: log10 |∂ output_t / ∂ input_s| (white: exactly 0)")
    grid = figure.add_gridspec(2, 2 * len(fields))
    for i, (name, field) in enumerate(fields.items()):
        ax = figure.add_subplot(grid[0, 2 * i:2 * i + 2])
        field = np.asarray(field, np.float64)
        log_field = np.log10(np.where(field > 0, field, 1.0))
        ax.imshow(np.ma.masked_where(field == 0, log_field), cmap="viridis")
        ax.set(title=name, xlabel="input s", ylabel="output t")
    half = len(fields)
    for ax, values, label in ((figure.add_subplot(grid[1, :half]), seconds, "forward seconds"),
                              (figure.add_subplot(grid[1, half:]), peak_bytes, "peak bytes")):
        for name, series in values.items():
            ax.plot(lengths, series, marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="sequence length N", ylabel=label)
        ax.legend()
        ax.grid(alpha=0.3, which="both")
    _save(figure, path)


def plot_bars(values, categories, path, title, chance=None, ylabel="accuracy (%)"):
    """Grouped bars: values {series name: [a value in [0, 1] per category]}, drawn in percent,
    one group per category, one colour per series; chance: [a value per category] (or None),
    drawn as a dashed line across each group."""
    figure = Figure(figsize=(1.5 + 1.6 * len(categories), 4))
    ax = figure.add_subplot()
    width = 0.8 / len(values)
    for i, (name, heights) in enumerate(values.items()):
        ax.bar(np.arange(len(categories)) + (i - (len(values) - 1) / 2) * width,
               100 * np.asarray(heights), width, label=name)
    for i, level in enumerate(chance or ()):
        ax.hlines(100 * level, i - 0.45, i + 0.45, colors="black", linestyles="--",
                  label="chance" if i == 0 else None)
    ax.set_xticks(range(len(categories)), categories)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 100))
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    _save(figure, path)


def plot_lines(series, path, xlabel, title, ylabel="accuracy (%)", log_x=True, point_labels=None):
    """series {name: (xs, ys)}, ys in [0, 1] drawn in percent, as lines with markers (x on a log
    axis where log_x); point_labels: {name: [a text per point]} written beside the points."""
    figure = Figure(figsize=(6, 4))
    ax = figure.add_subplot()
    for name, (xs, ys) in series.items():
        ax.plot(xs, 100 * np.asarray(ys), "o-", label=name)
        for x, y, text in zip(xs, ys, (point_labels or {}).get(name, ())):
            ax.annotate(text, (x, 100 * y), textcoords="offset points", xytext=(4, -10),
                        fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    _save(figure, path)
