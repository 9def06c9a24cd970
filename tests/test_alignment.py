"""Alignment tuning (recipes/alignment.py, data/preferences.py): the ranked answers and their
pairs, the imperfect SFT data, the reward model's score on the last token, what each stage
trains (the reference never changes), a short DPO run, and train-vlm --stage reward|ppo|dpo end
to end on a tiny run."""
import dataclasses
import json

import numpy as np
import pytest

import minivlm as mv
from minivlm.__main__ import main
from minivlm.autograd import no_grad, tensor
from minivlm.data.instructions import TASKS, instruct
from minivlm.data.preferences import (KINDS, hallucinates, imperfect_response, is_padded,
                                      preference_pairs, ranked_responses)
from minivlm.data.scenes import Object, make_scenes
from minivlm.losses import sequence_logprobs
from minivlm.models.llava import LlavaForScoring
from minivlm.recipes import alignment, vlm
from minivlm.recipes.common import Run, seeded_rng
from test_train_vlm import SETTINGS, TINY_RUN, parameter_values, tiny_vlm, tokenizer  # noqa: F401

ALIGN = alignment.AlignmentSettings(reward_steps=2, reward_batch_size=2, dpo_steps=2,
                                    dpo_batch_size=2, ppo_steps=2, ppo_batch_size=3,
                                    max_new_tokens=4, eval_comparisons=4)
SCENE = [Object("red", "circle", "small", "top left"), Object("blue", "cross", "large", "middle")]


# --- the preference data ----------------------------------------------------------------------

@pytest.mark.parametrize("task", list(TASKS))
def test_ranked_answers_are_distinct_and_only_the_last_kind_claims_an_absent_object(task):
    rng = np.random.default_rng(0)
    for objects in make_scenes(30, seed=1, counts=(2, 3)).objects:
        if task == "left_of" and len({o.position[-4:] for o in objects}) == 1:
            continue                                          # no two columns to compare
        _, question, answer = instruct(objects, rng, task)
        ranked = ranked_responses(objects, task, answer, rng)
        kinds, responses = zip(*ranked)
        assert responses[0] == answer
        expected = {"exists": ("concise", "padded", "absent object") if answer == "no" else KINDS,
                    "count": KINDS[:3]}.get(task, KINDS)     # "no" has no wrong attribute
        assert kinds == expected
        assert len(set(responses)) == len(responses)
        assert is_padded(responses[1]) and not any(is_padded(r) for r in responses[2:])
        for kind, response in ranked:
            claims = hallucinates(objects, question, response)
            assert claims == (kind == "absent object" or task == "describe"
                              and kind == "wrong attribute"), (kind, response)


def test_preference_pairs_are_every_pair_better_first():
    assert preference_pairs("DCA") == [("D", "C"), ("D", "A"), ("C", "A")]
    assert len(preference_pairs(range(4))) == 6


def test_hallucinates_names_an_absent_object_or_says_yes_to_one():
    assert hallucinates(SCENE, "Is there a green cross?", "yes")
    assert not hallucinates(SCENE, "Is there a blue cross?", "yes")
    assert not hallucinates(SCENE, "Is there a green cross?", "no")
    assert hallucinates(SCENE, "What colour is the cross?", "blue, next to a green ring")
    assert not hallucinates(SCENE, "Describe the image.", "a small red circle in the top left")


def test_stage_two_data_hold_the_imperfect_share():
    settings = dataclasses.replace(SETTINGS, imperfect_answers=0.3)
    rng = np.random.default_rng(0)
    answers = [vlm.sft_answer(objects, rng, settings.imperfect_answers)
               for objects in make_scenes(2000, seed=2).objects]
    padded = np.mean([is_padded(a) for _, a in answers])
    absent = np.mean([hallucinates(o, q, a) for o, (q, a) in
                      zip(make_scenes(2000, seed=2).objects, answers)])
    assert 0.13 < padded < 0.2 and 0.1 < absent < 0.17     # 0.3 split evenly (counts: padded)
    clean = [vlm.sft_answer(o, np.random.default_rng(0), 0.0) for o in
             make_scenes(200, seed=2).objects]
    assert not any(is_padded(a) for _, a in clean)


def test_imperfect_response_is_padded_or_hallucinated():
    rng = np.random.default_rng(0)
    made = [imperfect_response(SCENE, "colour", "red", rng) for _ in range(200)]
    assert all(is_padded(m) or hallucinates(SCENE, "What colour is the circle?", m)
               for m in made)
    assert 60 < sum(map(is_padded, made)) < 140
    assert all(is_padded(imperfect_response(SCENE, "count", "two", rng)) for _ in range(20))


def test_ranked_batch_pairs_rows_of_one_prompt_better_first(tokenizer):
    images, prompts = alignment.preference_prompts(SETTINGS, 0, (7,), 5, SETTINGS.pairs()[0])
    images, (ids, labels, _), chosen, rejected, kinds = alignment.ranked_batch(
        tokenizer, images, prompts, 16)
    sizes = [len(ranked) for _, ranked in prompts]
    assert len(ids) == len(images) == sum(sizes)
    assert len(chosen) == sum(n * (n - 1) // 2 for n in sizes)
    starts = np.cumsum([0] + sizes)
    owner = np.searchsorted(starts, chosen, side="right")
    assert np.array_equal(owner, np.searchsorted(starts, rejected, side="right"))
    assert (chosen < rejected).all()
    assert all(a in KINDS and b in KINDS and KINDS.index(a) < KINDS.index(b)
               for a, b in (k.split(" > ") for k in kinds))


# --- the models and what each stage trains --------------------------------------------------------

def test_the_reward_is_the_score_of_the_last_real_token_on_either_side(tokenizer):
    mv.manual_seed(0)
    scorer = LlavaForScoring.from_vlm(tiny_vlm(tokenizer))
    scorer.score.weight.array[...] = np.random.default_rng(0).standard_normal((1, 16))
    prompt = vlm.instruction_prompt(tokenizer, "What colour is the circle?", 16)
    image = make_scenes(1, seed=3).images
    with no_grad():
        alone = scorer.score_last(np.array([prompt]), image).numpy()[0]
        for padding in ("left", "right"):
            row = [tokenizer.pad_id] * 3 + prompt if padding == "left" else \
                prompt + [tokenizer.pad_id] * 3
            mask = np.array([[int(t != tokenizer.pad_id) for t in row]])
            assert scorer.score_last(np.array([row]), image, mask).numpy()[0] == \
                pytest.approx(alone, rel=1e-4), padding


def test_a_scoring_model_starts_from_the_vlm_and_is_saved_and_read_back(tokenizer, tmp_path):
    model = tiny_vlm(tokenizer)
    scorer = LlavaForScoring.from_vlm(model)
    assert np.array_equal(scorer.model.multi_modal_projector.linear_1.weight.numpy(),
                          model.multi_modal_projector.linear_1.weight.numpy())
    scorer.score.weight.array[...] = 1.0
    mv.save_pretrained(scorer, tmp_path)
    loaded = mv.load_pretrained(tmp_path)
    assert type(loaded) is LlavaForScoring
    assert parameter_values(loaded).keys() == parameter_values(scorer).keys()
    assert all(np.array_equal(a, parameter_values(loaded)[k])
               for k, a in parameter_values(scorer).items())


def frozen_copy(model):
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    copy.requires_grad_(False)
    return copy


def changed(before, after):
    return {name for name in before if not np.array_equal(before[name], after[name])}


def test_dpo_trains_the_policy_but_not_its_vision_tower_nor_the_reference(tokenizer):
    policy = tiny_vlm(tokenizer)
    reference = frozen_copy(policy)
    before, reference_before = parameter_values(policy), parameter_values(reference)
    alignment.train_dpo(policy, reference, tokenizer, SETTINGS, ALIGN,
                        Run(None, "train-vlm dpo", {}))
    assert not changed(reference_before, parameter_values(reference))
    moved = changed(before, parameter_values(policy))
    assert moved and not any(name.startswith("vision_tower") for name in moved)
    assert any(name.startswith("language_model") for name in moved)


def test_ppo_trains_policy_and_value_model_only(tokenizer):
    policy = tiny_vlm(tokenizer)
    reference = frozen_copy(policy)
    reward_model = LlavaForScoring.from_vlm(policy)
    reward_model.score.weight.array[...] = np.random.default_rng(1).standard_normal((1, 16))
    value_model = LlavaForScoring.from_vlm(policy)
    frozen = {"reference": reference, "reward": reward_model}
    before = {name: parameter_values(m) for name, m in frozen.items()}
    policy_before, value_before = parameter_values(policy), parameter_values(value_model)
    run = Run(None, "train-vlm ppo", {})
    alignment.train_ppo(policy, value_model, reference, reward_model, tokenizer, SETTINGS,
                        ALIGN, run)
    for name, model in frozen.items():
        assert not changed(before[name], parameter_values(model)), name
    for model, start in ((policy, policy_before), (value_model, value_before)):
        moved = changed(start, parameter_values(model))
        assert moved and not any("vision_tower" in name for name in moved)
    logged = run.metrics[-1]
    assert {"reward", "kl", "clip_fraction", "entropy"} <= logged.keys()
    assert logged["entropy"] > 0


def test_a_rollout_scores_only_the_answer_and_rewards_its_last_token(tokenizer):
    policy = tiny_vlm(tokenizer)
    reward_model = LlavaForScoring.from_vlm(policy)
    reward_model.score.weight.array[...] = 0.5
    mv.manual_seed(0)
    settings = dataclasses.replace(ALIGN, lam=1.0)       # returns: the reward still to come
    batch = alignment.rollout(policy, LlavaForScoring.from_vlm(policy), frozen_copy(policy),
                              reward_model, tokenizer, SETTINGS, settings, 0)
    response = batch["response"]
    returns, answer = batch["returns"], response > 0
    first = returns[np.arange(len(returns)), response.argmax(axis=1)]
    assert np.allclose(returns[answer], np.broadcast_to(first[:, None], returns.shape)[answer],
                       atol=1e-4)                               # the score at the end
    assert first.mean() == pytest.approx(batch["metrics"]["reward"], abs=1e-4)
    assert np.ptp(first) > 1e-3
    lengths = response.sum(axis=1)
    assert lengths.min() >= 1 and (lengths <= ALIGN.max_new_tokens).all()
    assert np.array_equal(response > 0, batch["labels"][:, 1:] != -100)
    assert (batch["logprobs"][response == 0] == 0).all()
    assert (batch["logprobs"][response > 0] < 0).all()
    assert (batch["returns"][response == 0] == 0).all()
    assert batch["metrics"]["kl"] == pytest.approx(0, abs=1e-4)   # the policy is the reference


def test_a_short_dpo_run_raises_held_out_preference_accuracy(tokenizer):
    policy = tiny_vlm(tokenizer)
    reference = frozen_copy(policy)
    images, prompts = alignment.preference_prompts(SETTINGS, 1, (99,), 12, SETTINGS.pairs()[0])
    images, (ids, labels, mask), chosen, rejected, _ = alignment.ranked_batch(
        tokenizer, images, prompts, 16, best_only=True)

    def accuracy():
        with no_grad():
            logps = sequence_logprobs(policy(tensor(ids), pixel_values=images,
                                             attention_mask=tensor(mask)), labels).numpy()
        reference_logps = alignment.frozen_logprobs(reference, ids, images, mask,
                                                    labels).sum(axis=1)
        ratio = logps - reference_logps
        return float((ratio[chosen] > ratio[rejected]).mean())

    assert accuracy() == 0.0                  # policy = reference: every implicit reward is 0
    settings = dataclasses.replace(ALIGN, dpo_steps=30, dpo_batch_size=4, dpo_lr=3e-3)
    alignment.train_dpo(policy, reference, tokenizer, SETTINGS, settings,
                        Run(None, "train-vlm dpo", {}))
    assert accuracy() > 0.7


# --- the command --------------------------------------------------------------------------------

TINY_ALIGN = ["--reward-steps", "2", "--reward-batch-size", "2", "--dpo-steps", "2",
              "--dpo-batch-size", "2", "--ppo-steps", "2", "--ppo-batch-size", "2",
              "--eval-comparisons", "4", "--max-new-tokens", "4"]


@pytest.fixture(scope="module")
def aligned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("aligned") / "run"
    assert main(["train-vlm", "--out", str(out), *TINY_RUN]) == 0
    for stage in ("reward", "ppo", "dpo"):
        assert main(["train-vlm", "--out", str(out), "--stage", stage, *TINY_RUN,
                     *TINY_ALIGN]) == 0
    return out


def test_each_alignment_stage_writes_its_model_and_the_side_by_side_results(aligned_run):
    results = json.loads((aligned_run / "alignment.json").read_text())
    assert list(results) == ["instruct", "reward", "ppo", "dpo", "seconds"]
    for stage in ("instruct", "ppo", "dpo"):
        assert {"exact_match", "pope", "behaviour", "kl_from_sft"} <= results[stage].keys()
        assert 0 <= results[stage]["behaviour"]["absent_object_hallucination"] <= 1
    assert results["instruct"]["kl_from_sft"] == 0
    assert {"seen_pairs", "held_out_pairs"} == results["reward"].keys()
    assert type(mv.load_pretrained(aligned_run / "reward")) is LlavaForScoring
    assert type(mv.load_pretrained(aligned_run / "ppo" / "value")) is LlavaForScoring
    for stage in ("ppo", "dpo"):
        assert type(mv.load_pretrained(aligned_run / stage)).__name__ == \
            "LlavaForConditionalGeneration"
    table = (aligned_run / "alignment.md").read_text()
    assert "| | SFT (stage 2) | PPO | DPO |" in table and "absent-object prompts" in table
    assert (aligned_run / "alignment.png").stat().st_size > 1000
    dpo = json.loads((aligned_run / "dpo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin"} <= \
        dpo.keys()


def test_a_finished_alignment_stage_is_not_trained_again(aligned_run):
    weights = (aligned_run / "dpo" / "model.safetensors").read_bytes()
    assert main(["train-vlm", "--out", str(aligned_run), "--stage", "dpo", *TINY_RUN,
                 *TINY_ALIGN]) == 0
    assert (aligned_run / "dpo" / "model.safetensors").read_bytes() == weights


def test_alignment_stages_need_their_models(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-vlm", "--out", str(out), "--stage", "dpo", *TINY_RUN]) == 2
    assert "starts from the stage-2 model" in capsys.readouterr().err
    (out / "instruct").mkdir(parents=True)
    assert main(["train-vlm", "--out", str(out), "--stage", "ppo", *TINY_RUN]) == 2
    assert "starts from the stage-2 model" in capsys.readouterr().err


def test_ppo_needs_the_reward_model(aligned_run, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(aligned_run / "instruct", out / "instruct")
    assert main(["train-vlm", "--out", str(out), "--stage", "ppo", *TINY_RUN]) == 2
    assert "needs the reward model" in capsys.readouterr().err


def test_alignment_flags_are_checked(aligned_run, capsys):
    dpo = ["train-vlm", "--out", str(aligned_run), "--stage", "dpo", *TINY_RUN]
    assert main([*dpo, "--loss-type", "kto"]) == 2
    assert "invalid choice: 'kto'" in capsys.readouterr().err
    assert main([*dpo, "--label-smoothing", "0.5"]) == 2
    assert "--label-smoothing must lie in [0, 0.5), got 0.5" in capsys.readouterr().err
    assert main([*dpo, "--label-smoothing", "0.1", "--loss-type", "ipo"]) == 2
    assert "--label-smoothing 0.1 is for --loss-type sigmoid only" in capsys.readouterr().err
    assert main(["train-vlm", "--imperfect-answers", "1"]) == 2
    assert "--imperfect-answers: invalid share value: '1'" in capsys.readouterr().err


def test_generation_never_produces_a_suppressed_token(tokenizer):
    model = tiny_vlm(tokenizer)
    prompt = np.array([vlm.instruction_prompt(tokenizer, "What colour is the circle?", 16)])
    image = make_scenes(1, seed=4).images
    greedy = model.generate(prompt, pixel_values=image, max_new_tokens=1)[0, -1]
    again = model.generate(prompt, pixel_values=image, max_new_tokens=1,
                           suppress_tokens=[int(greedy)])[0, -1]
    assert again != greedy
    mv.manual_seed(0)
    sampled = model.generate(np.repeat(prompt, 8, 0), pixel_values=np.repeat(image, 8, 0),
                             max_new_tokens=6, do_sample=True, temperature=5.0,
                             suppress_tokens=list(range(0, 250)))
    assert (np.asarray(sampled)[:, prompt.shape[1]:] >= 250).all()


def test_the_sft_evaluation_is_read_from_stage_two_results_when_it_has_the_behaviour(tmp_path):
    assert alignment.sft_results(tmp_path) is None
    (tmp_path / "results.json").write_text(json.dumps({"instruct": {"exact_match": {}}}))
    assert alignment.sft_results(tmp_path) is None             # from before the behaviour rates
    entry = {"exact_match": {"colour": 0.5}, "behaviour": {"preferred": 0.5}}
    (tmp_path / "results.json").write_text(json.dumps({"instruct": entry}))
    assert alignment.sft_results(tmp_path) == entry
