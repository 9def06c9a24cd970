"""The experiments clip-text-encoders, vit-vs-resnet and clip-scaling: each run end to end with
tiny settings (what it prints and writes), and the pieces they are built of (batches, the
caption choice, conclusions, the compute axis)."""
import dataclasses
import json

import numpy as np
import pytest

import minivlm as mv
from minivlm.__main__ import main
from minivlm.flops import count_flops
from minivlm.models.clip import CLIP
from minivlm.recipes import clip
from minivlm.recipes.common import METRICS_FILE, RESULTS_FILE, read_metrics, seeded_rng
from minivlm.recipes.experiments import clip_scaling, clip_text_encoders, vit_vs_resnet
from minivlm.tokenizers import CLIPTokenizer

PNG = b"\x89PNG\r\n\x1a\n"


def run_experiment(argv, capsys):
    """main(["experiment", *argv]) -> what it printed, after checking that it succeeded and
    printed its conclusion."""
    assert main(["experiment", *argv]) == 0
    printed = capsys.readouterr().out
    assert "conclusion: " in printed
    return printed


def written(out, figure):
    """results.json and metrics.jsonl of `out`, after checking that the figure is a PNG."""
    assert (out / figure).read_bytes().startswith(PNG)
    return json.loads((out / RESULTS_FILE).read_text()), read_metrics(out)


def test_the_registry_lists_the_three_experiments(capsys):
    assert main(["experiment", "--help"]) == 0
    printed = capsys.readouterr().out
    for name in ("clip-text-encoders", "vit-vs-resnet", "clip-scaling"):
        assert name in printed


# --- clip-text-encoders -------------------------------------------------------------------------

def test_clip_text_encoders_end_to_end(tmp_path, capsys):
    printed = run_experiment(["clip-text-encoders", "--steps", "2", "--batch-size", "8",
                              "--test-images", "30", "--images-per-pair", "2",
                              "--out", str(tmp_path)], capsys)
    results, metrics = written(tmp_path, clip_text_encoders.FIGURE)
    assert results["settings"] == {"steps": 2, "batch_size": 8, "test_images": 30,
                                   "images_per_pair": 2, "seed": 0}
    assert set(results["results"]) == {"transformer", "cbow"}
    for encoder, r in results["results"].items():
        assert all(0 <= r[key] <= 1 for key in ("zero_shot_seen", "zero_shot_held_out",
                                                "objects_swapped", "colours_swapped"))
        assert encoder in printed
    cbow = results["results"]["cbow"]
    assert cbow["objects_swapped"] == cbow["colours_swapped"] == 0.5     # by construction
    assert [(m["encoder"], m["step"]) for m in metrics] == [
        ("transformer", 1), ("transformer", 2), ("cbow", 1), ("cbow", 2)]


def test_clip_text_encoders_needs_a_batch_of_four_parts(tmp_path, capsys):
    assert main(["experiment", "clip-text-encoders", "--batch-size", "6",
                 "--out", str(tmp_path)]) == 2
    assert "--batch-size 6 is not a multiple of 4" in capsys.readouterr().err
    assert not (tmp_path / METRICS_FILE).exists()


def test_a_batch_is_half_single_shapes_half_two_shape_images_beside_their_mirrors():
    config = clip.TrainConfig(batch_size=16, seed=3)
    tokenizer = CLIPTokenizer()
    images, ids = clip_text_encoders.mixed_batches(config, tokenizer)(5)
    assert images.shape == (16, 3, 32, 32) and ids.shape == (16, config.context_length)
    captions = [tokenizer.decode(row[1:row.argmax()]).strip() for row in ids]
    half = dataclasses.replace(config, batch_size=8)
    single, single_ids = clip.training_batch(half, 5, config.pairs()[0], tokenizer)
    assert np.array_equal(images[:8], single) and np.array_equal(ids[:8], single_ids)
    assert all("left of" not in caption for caption in captions[:8])
    seen = {f"{colour} {shape}" for colour, shape in config.pairs()[0]}
    for first, mirror in zip(captions[8:12], captions[12:]):
        left, right = first.removeprefix("a ").split(" left of a ")
        assert mirror == f"a {right} left of a {left}"
        assert {left, right} <= seen
    again, _ = clip_text_encoders.mixed_batches(config, tokenizer)(5)
    assert np.array_equal(images, again)


def test_two_shape_images_show_seen_pairs_only():
    config = clip.TrainConfig(seed=2)
    tokenizer = CLIPTokenizer()
    _, ids = clip_text_encoders.two_shape_batch(config, step=0, n=200, tokenizer=tokenizer)
    named = {tokenizer.decode(row[1:row.argmax()]).strip() for row in ids}
    seen = {f"{colour} {shape}" for colour, shape in config.pairs()[0]}
    for caption in named:
        assert set(caption.removeprefix("a ").split(" left of a ")) <= seen, caption


class ScoredModel:
    """A stand-in for CLIP whose embeddings make the caption choice known: image i is the unit
    vector e_i, and a caption of ids (a, b, ...) is the vector (a, b, ...)."""

    def encode_image(self, images):
        return mv.tensor(np.eye(4)[images[:, 0, 0, 0].astype(int)])

    def encode_text(self, ids):
        return mv.tensor(ids.astype(np.float64))


def test_the_caption_choice_counts_a_tie_as_one_half():
    images = np.arange(4, dtype=np.float64).reshape(4, 1, 1, 1)
    true = np.array([[5, 1, 1, 1], [1, 5, 1, 1], [1, 1, 5, 1], [1, 1, 1, 1]])
    other = np.array([[1, 5, 1, 1], [5, 1, 1, 1], [1, 1, 1, 5], [1, 1, 1, 1]])
    # images 0-2: the true caption is closer; image 3: the same vector, a tie
    assert clip_text_encoders.caption_choice(ScoredModel(), images, true, other) == 3.5 / 4
    assert clip_text_encoders.caption_choice(ScoredModel(), images, other, true) == 0.5 / 4


def test_a_cbow_clip_is_at_chance_on_both_word_order_tests_and_a_transformer_is_not():
    config = clip.TrainConfig(model=clip.shapes_clip_config(text_encoder="cbow"))
    mv.manual_seed(0)
    tokenizer = CLIPTokenizer()
    assert clip_text_encoders.word_order_tests(CLIP(config.model), config, 40, tokenizer) == \
        (0.5, 0.5)
    transformer = CLIP(clip.shapes_clip_config())
    assert 0.5 not in clip_text_encoders.word_order_tests(transformer, config, 40, tokenizer)


# --- vit-vs-resnet ------------------------------------------------------------------------------

def test_vit_vs_resnet_end_to_end(tmp_path, capsys):
    printed = run_experiment(["vit-vs-resnet", "--sizes", "128", "64", "--steps", "3",
                              "--batch-size", "32", "--test-images", "40",
                              "--out", str(tmp_path)], capsys)
    results, metrics = written(tmp_path, vit_vs_resnet.FIGURE)
    assert results["sizes"] == [64, 128] and results["epochs"] == [1.5, 0.75]
    assert set(results["accuracy"]) == set(vit_vs_resnet.MODELS)
    assert all(len(values) == 2 and all(0 <= a <= 1 for a in values)
               for values in results["accuracy"].values())
    assert [(m["model"], m["size"], m["step"]) for m in metrics] == [
        (model, size, step) for size in (64, 128) for model in ("ViT", "ResNet")
        for step in (1, 2, 3)]
    assert "forward MFLOPs per image: ViT 5.01, ResNet 4.76" in printed


def test_vit_vs_resnet_refuses_a_size_below_the_batch(tmp_path, capsys):
    assert main(["experiment", "vit-vs-resnet", "--sizes", "16", "--batch-size", "32",
                 "--out", str(tmp_path)]) == 2
    assert "--sizes 16 is smaller than --batch-size 32" in capsys.readouterr().err


def test_the_two_classifiers_cost_about_the_same():
    flops = [vit_vs_resnet.flops_per_image(config) for config in vit_vs_resnet.MODELS.values()]
    assert 1 / 1.1 < flops[0] / flops[1] < 1.1


def test_subset_batches_go_through_each_epoch_of_the_subset_in_a_new_order():
    pool_images = np.zeros((100, 3, 4, 4), np.uint8)
    pool_labels = np.arange(100)                     # each image's label is its index
    batches = vit_vs_resnet.subset_batches(pool_images, pool_labels, 40, 8, seed=1)
    epochs = [np.concatenate([batches(step)[1] for step in range(5 * e, 5 * e + 5)])
              for e in range(2)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(40))
    assert not np.array_equal(epochs[0], epochs[1])
    assert np.array_equal(batches(3)[1], batches(3)[1])
    assert batches(0)[0].dtype == np.float32 and np.all(batches(0)[0] == -1)   # 0 -> -1


def test_the_pool_holds_bytes_of_the_target_label():
    config = vit_vs_resnet.MODELS["ViT"]
    images, labels = vit_vs_resnet.image_pool(vit_vs_resnet.POOL_CHUNK + 10, config,
                                              seeded_rng(0, 0))
    assert images.dtype == np.uint8 and images.shape == (vit_vs_resnet.POOL_CHUNK + 10, 3, 32, 32)
    assert labels.shape == (vit_vs_resnet.POOL_CHUNK + 10,) and set(labels) == set(range(6))


@pytest.mark.parametrize("vit, resnet, expected", [
    ([0.5, 0.7, 0.9], [0.6, 0.8, 0.95], "the ViT is ahead of the ResNet at no size (ViT − ResNet "
                                        "from -10.0 points at 1,024 images to -5.0 at 4,096)"),
    ([0.5, 0.7, 0.9], [0.6, 0.7, 0.85], "the ViT is ahead at 4,096 images (ViT − ResNet from "
                                        "-10.0 points at 1,024 images to +5.0 at 4,096)"),
])
def test_vit_vs_resnet_conclusion_says_where_the_vit_is_ahead(vit, resnet, expected):
    sizes = [1024, 2048, 4096]
    assert vit_vs_resnet.conclusion(sizes, {"ViT": vit, "ResNet": resnet}).startswith(expected)


# --- clip-scaling -------------------------------------------------------------------------------

@pytest.mark.slow
def test_clip_scaling_end_to_end(tmp_path, capsys):
    printed = run_experiment(["clip-scaling", "--steps", "2", "--batch-size", "4",
                              "--images-per-pair", "1", "--out", str(tmp_path)], capsys)
    results, metrics = written(tmp_path, clip_scaling.FIGURE)
    for family, widths in clip_scaling.ENCODERS.items():
        by_width = results["results"][family]
        assert [int(w) for w in by_width] == list(widths)
        compute = [r["train_flops"] for r in by_width.values()]
        assert compute == sorted(compute) and len(set(compute)) == 3
        for width, r in by_width.items():
            assert r["train_flops"] == 3 * r["pair_flops"] * 2 * 4
            assert f"{family} width {width}" in printed
    assert len(metrics) == 6 * 2


def test_the_compute_of_a_pair_is_the_image_encoders_plus_the_captions():
    config = clip.TrainConfig(model=clip_scaling.clip_with(clip_scaling.ENCODERS["ViT"][32]))
    model = CLIP(config.model)
    image, pair = clip_scaling.flops_per_pair(model, config)
    ids = CLIPTokenizer()(["a red circle"], context_length=config.context_length)
    assert pair - image == count_flops(model.text, ids) > 0
    assert image == count_flops(model.visual, mv.tensor(np.zeros((1, 3, 32, 32),
                                                                         np.float32)))


def test_clip_scaling_conclusion_names_the_leader_or_a_tie():
    def family(held_out, compute):
        return {w: {"zero_shot_seen": 0.5, "zero_shot_held_out": h, "train_flops": c}
                for w, h, c in zip((1, 2, 3), held_out, compute)}
    results = {"ResNet": family([0.1, 0.2, 0.3], [1, 2, 4]),
               "ViT": family([0.1, 0.3, 0.4], [1, 3, 9])}
    assert clip_scaling.conclusion(results) == (
        "ResNet 50.0 → 50.0 % seen, 10.0 → 30.0 % held-out over 4.0× the compute; ViT 50.0 → "
        "50.0 % seen, 10.0 → 40.0 % held-out over 9.0× the compute; on held-out pairs the "
        "widest ViT leads")
    results["ViT"][3]["zero_shot_held_out"] = 0.3
    assert clip_scaling.conclusion(results).endswith("the widest ViT and ResNet tie on held-out "
                                                     "pairs")

