"""`minivlm train-vlm`: a LLaVA-style vision–language model made in the lecture's training
stages ("Pre-Trained Vision Model ? Pre-Trained Language Model"), on the built-in scenes.

    minivlm train-vlm                       # stages 1 and 2, from nothing, into runs/vlm
    minivlm train-vlm --clip runs/clip      # start from train-clip's CLIP
    minivlm train-vlm --stage instruct      # one stage (the earlier ones must be there)
    minivlm chat --model runs/vlm/instruct --image scene.png "What colour is the circle?"

The run directory holds one run directory per step (recipes.common.Run: model, resume state,
metrics.jsonl), each resumable:

    clip/       the vision model, train-clip's recipe (skipped with --clip DIR)
    lm/         the language model: a byte-level BPE with an <image> token and a Llama-style
                decoder trained on the built-in corpus and scene captions (skipped with --lm DIR)
    pretrain/   stage 1, modality alignment: vision tower and language model frozen, only the
                projector trains, on (image, caption)
    instruct/   stage 2, instruction tuning: the lecture's template, the loss on the response
                and its EOS only; projector and language model train, the vision tower frozen

and results.json, results.md and stages.png: the evaluation after each stage (exact match per
task type on seen and held-out colour–shape pairs, the POPE-style yes/no probe, multiple choice
by likelihood), side by side with the model before stage 1.
"""
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from .. import plots
from ..autograd import manual_seed, tensor
from ..data.instructions import IGNORE_INDEX, IMAGE, TASKS, instruct, prompt, response_labels
from ..data.preferences import hallucinates, imperfect_response, is_padded
from ..data.scenes import caption, make_scenes
from ..data.shapes import COLOURS, SHAPES, split_pairs
from ..data.text import corpus
from ..eval.vlm import exact_match, generate_answers, option_logprobs, pope
from ..models.clip import CLIP
from ..models.lm import lm_loss
from ..models.llama import LlamaConfig, LlamaForCausalLM
from ..models.llava import LlavaConfig, LlavaForConditionalGeneration
from ..nn import evaluating
from ..optim import cosine_schedule
from ..pretrained import load_pretrained
from ..tokenizers import BPETokenizer
from . import clip as clip_recipe
from . import lm as lm_recipe
from .common import (EVAL_STREAM, TRAIN_STREAM, Run, UsageError, adamw, fit, saved_step,
                     seeded_rng, write_results)

COMMAND = "train-vlm"
STAGES = ("pretrain", "instruct")
SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<mask>", IMAGE)
TOKENIZER_FILE = "tokenizer.json"


@dataclasses.dataclass
class VLMSettings:
    """Everything that decides a train-vlm run (saved in each stage's run)."""
    seed: int = 0
    image_size: int = 32
    held_out_pairs: int = 8        # colour-shape pairs no stage (nor the CLIP) ever shows
    clip_steps: int = 800          # the vision model, when trained here
    vision_feature_layer: int = -2  # the tower's hidden state the projector reads
    vocab_size: int = 1024
    lm_width: int = 128
    lm_layers: int = 4
    lm_heads: int = 4
    lm_kv_heads: int = 2
    lm_context: int = 64
    lm_sentences: int = 20000
    lm_steps: int = 300
    lm_batch_size: int = 32
    lm_lr: float = 3e-3
    pretrain_steps: int = 300
    pretrain_batch_size: int = 32
    pretrain_lr: float = 2e-3
    instruct_steps: int = 1500
    instruct_batch_size: int = 32
    instruct_lr: float = 1e-3
    imperfect_answers: float = 0.2  # the share of stage-2 answers padded or hallucinated
    eval_per_task: int = 40

    def pairs(self):
        """(seen, held_out) colour-shape pairs: train-clip's split, so the CLIP never saw the
        held-out ones either."""
        return split_pairs(self.held_out_pairs, seed=self.seed)


# --- the examples ------------------------------------------------------------------------------

def caption_example(tokenizer, objects, image_seq_length):
    """Stage 1: <s>, the image tokens, then the caption and the EOS (supervised)."""
    prompt_ids = [tokenizer.bos_id] + [tokenizer.special_tokens[IMAGE]] * image_seq_length
    return response_labels(prompt_ids, tokenizer.encode(" " + caption(objects)),
                           tokenizer.eos_id)


def instruction_prompt(tokenizer, instruction, image_seq_length):
    """<s> and the lecture's template around the instruction, the image token expanded to
    image_seq_length tokens, up to "Response:"."""
    image = tokenizer.special_tokens[IMAGE]
    ids = [tokenizer.bos_id] + tokenizer.encode(prompt(instruction))
    at = ids.index(image)
    return ids[:at] + [image] * image_seq_length + ids[at + 1:]


def instruction_example(tokenizer, instruction, response, image_seq_length):
    """Stage 2: the prompt (not supervised), then the response and the EOS (supervised)."""
    return response_labels(instruction_prompt(tokenizer, instruction, image_seq_length),
                           tokenizer.encode(" " + response), tokenizer.eos_id)


def collate(examples, pad_id):
    """(ids, labels) pairs -> ids, labels, attention_mask (B, T) int64, padded on the right
    (labels IGNORE_INDEX there). An example with nothing supervised is an error."""
    width = max(len(ids) for ids, _ in examples)
    ids = np.full((len(examples), width), pad_id, np.int64)
    labels = np.full((len(examples), width), IGNORE_INDEX, np.int64)
    mask = np.zeros((len(examples), width), np.int64)
    for row, (example_ids, example_labels) in enumerate(examples):
        if all(label == IGNORE_INDEX for label in example_labels):
            raise ValueError(f"example {row} has no supervised token: its loss would be 0")
        n = len(example_ids)
        ids[row, :n], labels[row, :n], mask[row, :n] = example_ids, example_labels, 1
    return ids, labels, mask


def scenes_of_step(settings, step, pairs, batch_size):
    rng = seeded_rng(settings.seed, TRAIN_STREAM, step)
    scenes = make_scenes(batch_size, settings.image_size, seed=int(rng.integers(2 ** 63)),
                         pairs=pairs)
    return scenes, rng


def batch_of_step(stage, tokenizer, settings, step, pairs, image_seq_length):
    """The images and the collated examples of training step `step` of `stage`: a pure
    function of (seed, step)."""
    batch_size = getattr(settings, f"{stage}_batch_size")
    scenes, rng = scenes_of_step(settings, step, pairs, batch_size)
    if stage == "pretrain":
        examples = [caption_example(tokenizer, objects, image_seq_length)
                    for objects in scenes.objects]
    else:
        examples = [instruction_example(tokenizer, *sft_answer(objects, rng,
                                                               settings.imperfect_answers),
                                        image_seq_length) for objects in scenes.objects]
    return scenes.images, collate(examples, tokenizer.pad_id)


def sft_answer(objects, rng, imperfect_share):
    """(instruction, response) of stage 2's data: a share of the responses imperfect, padded or
    hallucinated (data/preferences.py), as human-written instruction data is ("data quality is
    important!"): what alignment tuning then has to fix."""
    task, instruction, response = instruct(objects, rng)
    if rng.random() < imperfect_share:
        response = imperfect_response(objects, task, response, rng)
    return instruction, response


def vlm_loss(model, images, batch):
    """Mean cross-entropy of the supervised next tokens (labels shifted by one, as
    transformers' causal LM loss)."""
    ids, labels, mask = batch
    logits = model(tensor(ids), pixel_values=images, attention_mask=tensor(mask))
    return lm_loss(logits[:, :-1], tensor(labels[:, 1:]))


# --- the pre-trained models --------------------------------------------------------------------

def vision_model(settings, clip_dir, out):
    """CLIP from --clip DIR, or trained here (train-clip's recipe, its held-out pairs ours)."""
    if clip_dir is not None:
        clip = load_pretrained(clip_dir)
    else:
        config = clip_recipe.TrainConfig(
            model=clip_recipe.shapes_clip_config(settings.image_size), steps=settings.clip_steps,
            held_out_pairs=settings.held_out_pairs, seed=settings.seed)
        directory = out / "clip"
        step = saved_step(directory, clip_recipe.COMMAND)
        if step is None:
            clip, _ = clip_recipe.train(config, out=directory)
        else:
            clip, _ = clip_recipe.train(config, resume=directory)
    if not isinstance(clip, CLIP) or clip.config.vision.is_resnet:
        raise UsageError(f"--clip {clip_dir}: expected a CLIP with a Vision Transformer (as "
                         f"train-clip writes), got {type(clip).__name__}")
    if clip.config.vision.image_resolution != settings.image_size:
        raise UsageError(f"--clip {clip_dir} reads {clip.config.vision.image_resolution}-pixel "
                         f"images; the scenes are {settings.image_size} pixels (--image-size)")
    return clip


def text_sentences(settings):
    """The language model's text: the built-in corpus and captions of (seen) scenes."""
    scenes = make_scenes(settings.lm_sentences // 2, settings.image_size, seed=settings.seed,
                         pairs=settings.pairs()[0])
    return corpus(settings.lm_sentences, seed=settings.seed) + [caption(o) for o in
                                                                scenes.objects]


def tokenizer_text(settings, sentences):
    """What the tokenizer learns from: the text, and instructions in the template (so that
    the template's words get their own tokens)."""
    rng = seeded_rng(settings.seed, EVAL_STREAM, 1)
    scenes = make_scenes(2000, settings.image_size, seed=settings.seed)
    instructions = [prompt(i) + " " + r for _, i, r in (instruct(o, rng) for o in scenes.objects)]
    return sentences + instructions


def language_model(settings, lm_dir, out):
    """(decoder, tokenizer) from --lm DIR, or a Llama-style decoder trained here."""
    if lm_dir is not None:
        decoder, tokenizer = load_pretrained(lm_dir), BPETokenizer.load(Path(lm_dir) /
                                                                        TOKENIZER_FILE)
        if IMAGE not in tokenizer.special_tokens:
            raise UsageError(f"--lm {lm_dir}: its tokenizer has no {IMAGE} token (train-vlm's "
                             f"own language model has one)")
        return decoder, tokenizer
    directory, command = out / "lm", f"{COMMAND} lm"
    sentences = text_sentences(settings)
    if saved_step(directory, command) is None:
        run = Run.start(directory, command, dataclasses.asdict(settings))
        tokenizer = BPETokenizer.train(tokenizer_text(settings, sentences), settings.vocab_size,
                                       special_tokens=SPECIAL_TOKENS)
        tokenizer.save(directory / TOKENIZER_FILE)
        manual_seed(settings.seed)
        decoder = LlamaForCausalLM(decoder_config(settings, tokenizer))
    else:
        run = Run.resume(directory, command)
        tokenizer, decoder = BPETokenizer.load(directory / TOKENIZER_FILE), load_pretrained(
            directory)
    run.extra_config = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
    lm_recipe.train(decoder, tokenizer, lm_recipe.token_stream(sentences, tokenizer),
                    settings.lm_steps, settings.lm_batch_size, settings.lm_lr, seed=settings.seed,
                    run=run, context_length=settings.lm_context)
    return decoder, tokenizer


def decoder_config(settings, tokenizer):
    width = settings.lm_width
    return LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=width,
                       intermediate_size=3 * width, num_hidden_layers=settings.lm_layers,
                       num_attention_heads=settings.lm_heads,
                       num_key_value_heads=settings.lm_kv_heads, max_position_embeddings=256,
                       tie_word_embeddings=True, bos_token_id=tokenizer.bos_id,
                       eos_token_id=tokenizer.eos_id)


# --- the stages --------------------------------------------------------------------------------

def build_vlm(clip, decoder, tokenizer, settings):
    """LLaVA: the CLIP's vision tower, a new projector, the decoder; the image token expands to
    one token per patch ("default": the class token dropped)."""
    grid = settings.image_size // clip.config.vision.patch_size
    config = LlavaConfig(vision_config=clip.config.vision, text_config=decoder.config,
                         image_token_id=tokenizer.special_tokens[IMAGE],
                         image_seq_length=grid * grid,
                         vision_feature_layer=settings.vision_feature_layer)
    manual_seed(settings.seed)
    return LlavaForConditionalGeneration(config, vision_tower=clip.visual,
                                         language_model=decoder)


def freeze_for(stage, model):
    """Stage 1 trains the projector alone; stage 2 the projector and the language model. The
    vision tower never trains."""
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    if stage == "instruct":
        model.language_model.requires_grad_(True)
    return model


def train_stage(stage, model, tokenizer, settings, run, save_every=250):
    """Train the stage's parameters on its batches from run.step to its step count -> losses."""
    freeze_for(stage, model)
    steps, lr = getattr(settings, f"{stage}_steps"), getattr(settings, f"{stage}_lr")
    optimizer = adamw(model, lr, weight_decay=0.0)
    run.restore(optimizer)
    schedule = cosine_schedule(optimizer, warmup_steps=steps // 10, total_steps=steps,
                               min_lr=lr / 10)
    schedule.load_state_dict({"last_epoch": run.step, "base_lrs": schedule.base_lrs})
    seen, _ = settings.pairs()
    image_seq_length = model.config.image_seq_length

    def loss_of_step(step):
        images, batch = batch_of_step(stage, tokenizer, settings, step, seen, image_seq_length)
        return vlm_loss(model, images, batch)

    batch_size = getattr(settings, f"{stage}_batch_size")
    return fit(model, optimizer, schedule, loss_of_step, run, steps, settings.seed,
               save_every=save_every, unit="img", scale=batch_size)


def open_stage(stage, out, settings):
    """The run of `stage` in out/stage (settings: a JSON-able dict): resumed where it holds one,
    else new."""
    directory, command = out / stage, f"{COMMAND} {stage}"
    if saved_step(directory, command) is None:
        return Run.start(directory, command, settings), None
    run = Run.resume(directory, command)
    if run.settings != settings:
        raise UsageError(f"{directory} was trained with other settings; continue it with the "
                         f"same flags or choose another --out")
    return run, load_pretrained(directory)


# --- evaluation --------------------------------------------------------------------------------

HELD_OUT_TASKS = ("colour", "shape", "size", "position", "exists")
BEHAVIOUR = {"preferred": "preferred (concise and correct)", "padded": "padded answers",
             "absent_object_hallucination": "hallucinated object, absent-object prompts",
             "hallucinated": "hallucinated object, all prompts"}
CHOICES = {"colour": tuple(COLOURS), "shape": SHAPES}


def evaluation_set(settings, task, held_out):
    """(images, instructions, responses, the scenes' objects) of eval_per_task questions of
    `task` about scenes of seen pairs, or (held_out) scenes whose every object is a held-out
    pair."""
    seen, unseen = settings.pairs()
    key = (list(TASKS).index(task), int(held_out))
    rng = seeded_rng(settings.seed, EVAL_STREAM, *key)
    scenes = make_scenes(settings.eval_per_task, settings.image_size,
                         seed=int(rng.integers(2 ** 63)), pairs=unseen if held_out else seen,
                         counts=(2, 3) if task == "left_of" else (1, 2, 3))
    questions = [instruct(objects, rng, task)[1:] for objects in scenes.objects]
    return scenes.images, [q for q, _ in questions], [a for _, a in questions], scenes.objects


def absent_object_set(settings):
    """(images, questions, objects) of 2·eval_per_task "Is there a Y?" questions about scenes of
    seen pairs whose Y is absent (POPE's negatives: random and sharing a colour or a shape)."""
    rng = seeded_rng(settings.seed, EVAL_STREAM, len(TASKS))
    scenes = make_scenes(2 * settings.eval_per_task, settings.image_size,
                         seed=int(rng.integers(2 ** 63)), pairs=settings.pairs()[0])
    questions = []
    for objects in scenes.objects:
        question, answer = instruct(objects, rng, "exists")[1:]
        while answer != "no":
            question, answer = instruct(objects, rng, "exists")[1:]
        questions.append(question)
    return scenes.images, questions, scenes.objects


def answers_to(model, tokenizer, images, questions, max_new_tokens=12):
    """The model's greedy answers (strings) to questions about images."""
    n = model.config.image_seq_length
    prompts = [instruction_prompt(tokenizer, q, n) for q in questions]
    return [tokenizer.decode(ids).strip() for ids in generate_answers(
        model, prompts, images, tokenizer.eos_id, tokenizer.pad_id, max_new_tokens)]


def evaluate(model, tokenizer, settings):
    """Exact match of greedy answers per task type (seen pairs; held-out pairs for the tasks
    about one object), POPE on the yes/no questions, multiple choice by likelihood for the
    colour and shape questions, and the behaviour alignment tuning is after: the preferred rate
    (concise and correct: the mean exact match on seen pairs), the shares of padded answers and
    of answers that claim an absent object, and the share of "yes" to "Is there a Y?" for absent
    Ys (absent_object_set) -> a JSON-able dict."""
    n = model.config.image_seq_length
    results = {"exact_match": {}, "exact_match_held_out": {}, "multiple_choice": {},
               "multiple_choice_held_out": {}}
    padded, hallucinated = [], []
    with evaluating(model):
        for task in TASKS:
            for held_out in (False, True):
                if held_out and task not in HELD_OUT_TASKS:
                    continue
                images, questions, answers, objects = evaluation_set(settings, task, held_out)
                predicted = answers_to(model, tokenizer, images, questions,
                                       max_new_tokens=48 if task == "describe" else 12)
                suffix = "_held_out" if held_out else ""
                results["exact_match" + suffix][task] = exact_match(predicted, answers)
                if task == "exists":
                    results["pope" + suffix] = pope(predicted, answers)
                if task in CHOICES:
                    prompts = [instruction_prompt(tokenizer, q, n) for q in questions]
                    results["multiple_choice" + suffix][task] = multiple_choice_accuracy(
                        model, tokenizer, images, prompts, answers, CHOICES[task])
                if not held_out:
                    padded += [is_padded(p) for p in predicted]
                    hallucinated += [hallucinates(o, q, p) for o, q, p in
                                     zip(objects, questions, predicted)]
        images, questions, objects = absent_object_set(settings)
        absent = [hallucinates(o, q, p) for o, q, p in
                  zip(objects, questions, answers_to(model, tokenizer, images, questions))]
    results["behaviour"] = {
        "preferred": float(np.mean(list(results["exact_match"].values()))),
        "padded": float(np.mean(padded)), "hallucinated": float(np.mean(hallucinated)),
        "absent_object_hallucination": float(np.mean(absent))}
    return results


def multiple_choice_accuracy(model, tokenizer, images, prompts, answers, options):
    """The share of questions whose likeliest option (option_logprobs) is the answer."""
    option_ids = [tokenizer.encode(" " + option) for option in options]
    right = [options[int(np.argmax(option_logprobs(model, p, images[i:i + 1], option_ids,
                                                   tokenizer.eos_id)))] == answer
             for i, (p, answer) in enumerate(zip(prompts, answers))]
    return float(np.mean(right))


# --- reporting -----------------------------------------------------------------------------------

def report(results):
    """The stages side by side as a Markdown table (also printed)."""
    stages = list(results)
    header = "| | " + " | ".join(stages) + " |\n|---|" + "---|" * len(stages) + "\n"
    rows = []
    for key, label in (("exact_match", "{} (seen pairs)"),
                       ("exact_match_held_out", "{} (held-out pairs)"),
                       ("multiple_choice", "{}, multiple choice"),
                       ("multiple_choice_held_out", "{}, multiple choice, held-out")):
        for task in results[stages[-1]][key]:
            rows.append([label.format(task)] + [f"{100 * results[s][key][task]:.1f} %"
                                                for s in stages])
    for key in ("pope", "pope_held_out"):
        for metric in ("f1", "precision", "recall", "yes_ratio"):
            rows.append([f"POPE {metric}{' (held-out)' if key.endswith('out') else ''}"] +
                        [f"{results[s][key][metric]:.3f}" for s in stages])
    for metric, label in BEHAVIOUR.items():
        rows.append([label] + [f"{100 * results[s]['behaviour'][metric]:.1f} %"
                               for s in stages])
    table = header + "".join("| " + " | ".join(row) + " |\n" for row in rows)
    print(table)
    return table


# --- stages 1 and 2 ----------------------------------------------------------------------------

def train_stages(settings, out, only=None, clip_dir=None, lm_dir=None):
    """The vision and language models (trained into out, or read from clip_dir and lm_dir), then
    stage 1 and stage 2 (or the stage `only`), each evaluated; results.json, results.md and
    stages.png in out."""
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    seconds, started = results.pop("seconds", {}), time.monotonic()

    clip = vision_model(settings, clip_dir, out)
    seconds["vision"] = round(time.monotonic() - started, 1)
    decoder, tokenizer = language_model(settings, lm_dir, out)
    seconds["language"] = round(time.monotonic() - started, 1)

    stages = STAGES if only is None else (only,)
    model = None
    for stage in stages:
        training_run, saved = open_stage(stage, out, dataclasses.asdict(settings))
        if saved is not None:
            model = saved
        elif stage == STAGES[0]:
            model = build_vlm(clip, decoder, tokenizer, settings)
            results["before"] = evaluate(model, tokenizer, settings)
        else:
            previous = out / STAGES[STAGES.index(stage) - 1]
            if saved_step(previous, f"{COMMAND} {STAGES[STAGES.index(stage) - 1]}") is None:
                raise UsageError(f"--stage {stage} needs the previous stage in {previous}; run "
                                 f"train-vlm without --stage first")
            model = load_pretrained(previous)
        tokenizer.save(out / stage / TOKENIZER_FILE)
        print(f"{stage}: {model.num_parameters(trainable_only=False):,} parameters")
        train_stage(stage, model, tokenizer, settings, training_run)
        results[stage] = evaluate(model, tokenizer, settings)
        seconds[stage] = round(time.monotonic() - started, 1)

    write_results(out, {**results, "seconds": seconds})
    (out / "results.md").write_text(report(results), encoding="utf-8")
    plots.plot_stages(results, out / "stages.png")
    print(f"{time.monotonic() - started:.0f} s; results.json, results.md and stages.png in {out}")
    return 0
