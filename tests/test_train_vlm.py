"""train-vlm's stages (recipes/vlm.py): which parameters each stage trains, what its loss counts,
its batches; the VLM evaluation (eval/vlm.py); and the train-vlm and chat commands end to end on
a tiny run."""
import argparse
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

import minivlm as mv
from minivlm.__main__ import main
from minivlm.data.instructions import IGNORE_INDEX, IMAGE
from minivlm.data.text import corpus
from minivlm.eval.vlm import exact_match, generate_answers, left_padded, option_logprobs, pope
from minivlm.models.clip import CLIP
from minivlm.models.llama import LlamaForCausalLM
from minivlm.recipes import clip as clip_recipe
from minivlm.recipes import train_vlm, vlm
from minivlm.recipes.common import Run
from minivlm.tokenizers import BPETokenizer
from reference.llava import instruction_labels

SETTINGS = vlm.VLMSettings(lm_width=16, lm_layers=1, lm_heads=2, lm_kv_heads=1,
                           pretrain_batch_size=3, instruct_batch_size=3, pretrain_steps=1,
                           instruct_steps=1, eval_per_task=2)


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE with the <image> token, as train-vlm trains it (on less text)."""
    return BPETokenizer.train(vlm.tokenizer_text(SETTINGS, corpus(300)), vocab_size=300,
                              special_tokens=vlm.SPECIAL_TOKENS)


def tiny_parts(tokenizer):
    """A fresh (untrained) tiny CLIP and decoder, the same on every call."""
    mv.manual_seed(0)
    return (CLIP(clip_recipe.shapes_clip_config(SETTINGS.image_size)),
            LlamaForCausalLM(vlm.decoder_config(SETTINGS, tokenizer)))


def tiny_vlm(tokenizer):
    return vlm.build_vlm(*tiny_parts(tokenizer), tokenizer, SETTINGS)


def parameter_values(module):
    return {name: p.numpy().copy() for name, p in module.named_parameters()}


@pytest.mark.parametrize("stage", vlm.STAGES)
def test_a_step_of_each_stage_changes_only_what_the_stage_trains(tokenizer, stage):
    clip, decoder = tiny_parts(tokenizer)
    model = vlm.build_vlm(clip, decoder, tokenizer, SETTINGS)
    clip_visual = parameter_values(clip.visual)
    before = parameter_values(model)
    vlm.train_stage(stage, model, tokenizer, SETTINGS, Run(None, vlm.COMMAND, {}))
    after = parameter_values(model)
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    projector = {n for n in before if n.startswith("multi_modal_projector.")}
    language = {n for n in before if n.startswith("language_model.")}
    assert projector <= changed                              # every projector parameter moved
    assert not {n for n in changed if n.startswith("vision_tower.")}
    if stage == "pretrain":
        assert changed == projector
    else:
        assert changed == projector | language               # (the tied head is the embedding)
    for name, values in parameter_values(clip.visual).items():
        np.testing.assert_array_equal(values, clip_visual[name])   # the CLIP it came from too


def test_the_loss_counts_the_response_and_its_eos_only(tokenizer):
    model = tiny_vlm(tokenizer)
    images, batch = vlm.batch_of_step("instruct", tokenizer, SETTINGS, 0, SETTINGS.pairs()[0],
                                      model.config.image_seq_length)
    ids, labels, mask = batch
    with mv.no_grad():
        loss = vlm.vlm_loss(model, images, batch).item()
        logits = model(mv.tensor(ids), pixel_values=images,
                       attention_mask=mv.tensor(mask)).numpy().astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    terms = [-log_probs[b, t - 1, ids[b, t]] for b in range(len(ids)) for t in range(1, ids.shape[1])
             if labels[b, t] != IGNORE_INDEX]                # token t predicted at t - 1
    assert loss == pytest.approx(np.mean(terms), rel=1e-5)


def test_labels_mask_the_prompt_and_keep_the_first_response_token_and_the_eos(tokenizer):
    prompt = vlm.instruction_prompt(tokenizer, "What colour is the ring?", 16)
    ids, labels = vlm.instruction_example(tokenizer, "What colour is the ring?", "red", 16)
    assert ids[:len(prompt)] == prompt and ids[-1] == tokenizer.eos_id
    assert prompt.count(tokenizer.special_tokens[IMAGE]) == 16
    assert set(labels[:len(prompt)]) == {IGNORE_INDEX}
    assert labels[len(prompt)] == ids[len(prompt)] != IGNORE_INDEX     # the first answer token
    assert labels[-1] == tokenizer.eos_id
    assert tokenizer.decode(ids[len(prompt):-1]) == " red"
    np.testing.assert_array_equal(labels, instruction_labels(np.array(ids), len(prompt),
                                                             tokenizer.eos_id))


def test_an_example_with_nothing_supervised_is_an_error():
    good = ([1, 5, 6, 2], [IGNORE_INDEX, IGNORE_INDEX, 6, 2])
    ids, labels, mask = vlm.collate([good, ([1, 5], [IGNORE_INDEX, IGNORE_INDEX])][:1], pad_id=0)
    assert mask.tolist() == [[1, 1, 1, 1]]
    with pytest.raises(ValueError, match="example 1 has no supervised token"):
        vlm.collate([good, ([1, 5], [IGNORE_INDEX, IGNORE_INDEX])], pad_id=0)


def test_batches_are_a_function_of_seed_and_step(tokenizer):
    seen, _ = SETTINGS.pairs()
    first = vlm.batch_of_step("instruct", tokenizer, SETTINGS, 3, seen, 16)
    again = vlm.batch_of_step("instruct", tokenizer, SETTINGS, 3, seen, 16)
    other = vlm.batch_of_step("instruct", tokenizer, SETTINGS, 4, seen, 16)
    np.testing.assert_array_equal(first[0], again[0])
    for a, b in zip(first[1], again[1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


# --- evaluation ---------------------------------------------------------------------------------

def test_exact_match_and_pope_count_as_their_definitions():
    assert exact_match([" red", "two "], ["red", "three"]) == 0.5
    predicted = ["yes", "yes", "no", "yes", "yes", "no"]
    truth = ["yes", "no", "no", "yes", "yes", "no"]
    # by hand: 4 "yes" said, 3 of them right (precision 3/4); 3 true "yes", all found (recall 1)
    assert pope(predicted, truth) == pytest.approx({"precision": 3 / 4, "recall": 1.0,
                                                    "f1": 6 / 7, "accuracy": 5 / 6,
                                                    "yes_ratio": 4 / 6})
    with pytest.raises(ValueError, match="2 predictions for 3 answers"):
        exact_match(["a", "b"], ["a", "b", "c"])


def test_answers_in_a_left_padded_batch_are_each_prompt_s_alone(tokenizer):
    model = tiny_vlm(tokenizer)
    questions = ["Describe the image.", "How many shapes are there?", "Is there a red ring?"]
    prompts = [vlm.instruction_prompt(tokenizer, q, 16) for q in questions]
    ids, mask = left_padded([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]
    images = vlm.make_scenes(3, SETTINGS.image_size, seed=0).images
    with mv.nn.evaluating(model):
        together = generate_answers(model, prompts, images, tokenizer.eos_id, tokenizer.pad_id,
                                    max_new_tokens=5)
        alone = [generate_answers(model, [p], images[i:i + 1], tokenizer.eos_id,
                                  tokenizer.pad_id, max_new_tokens=5)[0]
                 for i, p in enumerate(prompts)]
    assert together == alone and all(len(a) > 0 for a in together)


def test_option_log_likelihoods_are_the_model_s_for_each_option_alone(tokenizer):
    model = tiny_vlm(tokenizer)
    prompt = vlm.instruction_prompt(tokenizer, "What colour is the ring?", 16)
    image = vlm.make_scenes(1, SETTINGS.image_size, seed=0).images
    options = [tokenizer.encode(" " + word) for word in ("red", "green", "purple")]
    with mv.nn.evaluating(model):
        scores = option_logprobs(model, prompt, image, options, tokenizer.eos_id)
        for option, score in zip(options, scores):
            sequence = prompt + option + [tokenizer.eos_id]
            logits = model(mv.tensor([sequence]), pixel_values=image).numpy()[0]
            logits = logits.astype(np.float64)
            log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            expected = sum(log_probs[t - 1, sequence[t]] for t in range(len(prompt),
                                                                        len(sequence)))
            assert score == pytest.approx(expected, rel=1e-4)


# --- the commands ---------------------------------------------------------------------------------

TINY_RUN = ["--clip-steps", "3", "--lm-steps", "3", "--lm-sentences", "100", "--vocab-size", "300",
            "--lm-width", "16", "--lm-layers", "1", "--lm-heads", "2", "--lm-kv-heads", "1",
            "--lm-batch-size", "4", "--pretrain-steps", "2", "--instruct-steps", "2",
            "--pretrain-batch-size", "3", "--instruct-batch-size", "3", "--eval-per-task", "2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vlm") / "run"
    assert main(["train-vlm", "--out", str(out), *TINY_RUN]) == 0
    return out


def test_train_vlm_writes_each_stage_results_and_figures(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    assert list(results) == ["before", "pretrain", "instruct", "seconds"]
    for stage in ("before", "pretrain", "instruct"):
        assert set(results[stage]["exact_match"]) == {"describe", "colour", "shape", "size",
                                                      "position", "count", "exists", "left_of"}
        assert 0 <= results[stage]["pope"]["f1"] <= 1
    for directory in ("clip", "lm", "pretrain", "instruct"):
        metrics = (tiny_run / directory / "metrics.jsonl").read_text().splitlines()
        assert json.loads(metrics[-1])["step"] >= 2
    assert (tiny_run / "stages.png").stat().st_size > 1000
    assert "| colour (held-out pairs) |" in (tiny_run / "results.md").read_text()
    model = mv.load_pretrained(tiny_run / "instruct")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    config = json.loads((tiny_run / "instruct" / "config.json").read_text())
    assert config["model_type"] == "llava"


def test_train_vlm_continues_a_finished_run_without_training_again(tiny_run, capsys):
    weights = (tiny_run / "instruct" / "model.safetensors").read_bytes()
    assert main(["train-vlm", "--out", str(tiny_run), *TINY_RUN]) == 0
    assert (tiny_run / "instruct" / "model.safetensors").read_bytes() == weights
    assert main(["train-vlm", "--out", str(tiny_run), *TINY_RUN[:-1], "3"]) == 2
    assert "trained with other settings" in capsys.readouterr().err


def test_a_stage_needs_the_one_before(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train-vlm", "--out", str(out), "--stage", "instruct", *TINY_RUN])
    assert status == 2
    assert "--stage instruct needs the previous stage" in capsys.readouterr().err


def test_chat_answers_a_question_about_an_image(tiny_run, tmp_path, capsys, monkeypatch):
    image = tmp_path / "scene.png"
    pixels = vlm.make_scenes(1, 32, seed=5).images[0].transpose(1, 2, 0)
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(image)
    assert main(["chat", "--model", str(tiny_run / "instruct"), "--image", str(image),
                 "--max-new-tokens", "4", "What colour is the ring?"]) == 0
    one = capsys.readouterr().out
    assert one.strip()
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("What colour is the ring?\n"
                                                                 "How many shapes?\n\n"))
    assert main(["chat", "--model", str(tiny_run / "instruct"), "--image", str(image),
                 "--max-new-tokens", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == one.strip()
    assert main(["chat", "--model", str(tiny_run / "lm"), "--image", str(image), "hi"]) == 2
    assert "not a vision-language model" in capsys.readouterr().err


def test_settings_of_a_run_are_its_flags():
    args = {f.name: None for f in dataclasses.fields(vlm.VLMSettings)}
    assert train_vlm.settings_from_args(type("Args", (), {**args, "lm_width": 32})) == \
        vlm.VLMSettings(lm_width=32)


def test_the_vision_feature_layer_flag_reaches_the_model(tokenizer):
    parser = argparse.ArgumentParser()
    train_vlm.add_arguments(parser)
    layer = parser.parse_args(["--vision-feature-layer", "-1"]).vision_feature_layer
    settings = dataclasses.replace(SETTINGS, vision_feature_layer=layer)
    assert vlm.build_vlm(*tiny_parts(tokenizer), tokenizer, settings).config \
        .vision_feature_layer == -1
