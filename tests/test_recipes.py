"""What the training recipes share (minivlm.recipes.common): the update step (a fresh, clipped
gradient; a loss that is not finite stops the run), the training loop's random streams, and
every trainer's AdamW, which decays the matrices and nothing else."""
import inspect
import json
import math

import numpy as np
import pytest

import minivlm as mv
from minivlm import io, nn
from minivlm.__main__ import main
from minivlm.models.clip import CLIPConfig, CLIPVisionConfig
from minivlm.models.text import CLIPTextConfig
from minivlm.optim import SGD, LambdaLR
from minivlm.recipes import clip, lm, vision
from minivlm.recipes.common import STATE_FILE, CommandError, Run, fit, update

TINY_CLIP = CLIPConfig(16, CLIPVisionConfig(image_resolution=16, layers=1, width=16, patch_size=8,
                                            heads=2),
                       CLIPTextConfig(context_length=16, width=16, layers=1, heads=2))


# --- the update step and the training loop ----------------------------------------------------

def linear_loss(weight, c):
    """The loss Σ weight·c, whose gradient is c."""
    return (weight * mv.tensor(c)).sum()


def test_each_update_steps_along_the_gradient_of_its_own_loss():
    """SGD with lr 1: each update moves the weight by −c, its loss's gradient; the gradient of
    the step before is not added again."""
    c = np.array([1.0, -2.0, 0.5])
    weight = nn.Parameter(mv.tensor(np.zeros(3)))
    optimizer = SGD([weight], lr=1.0)
    for step in (1, 2):
        expected_loss = float(weight.numpy() @ c)
        assert update(linear_loss(weight, c), optimizer, [weight], 10.0) == expected_loss
        np.testing.assert_allclose(weight.numpy(), -step * c, rtol=1e-15)


def test_an_update_clips_the_gradient_to_max_grad_norm():
    c = np.array([3.0, 4.0, 0.0])                     # norm 5
    weight = nn.Parameter(mv.tensor(np.zeros(3)))
    update(linear_loss(weight, c), SGD([weight], lr=1.0), [weight], max_grad_norm=1.0)
    np.testing.assert_allclose(weight.numpy(), -c / (5 + 1e-6), rtol=1e-12)   # torch's rule


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_loss_that_is_not_finite_stops_the_run_before_the_step(value):
    weight = nn.Parameter(mv.tensor(np.ones(3)))
    with pytest.raises(CommandError, match=f"the loss is {value}: training diverged"):
        update((weight * value).sum(), SGD([weight], lr=1.0), [weight], 1.0)
    np.testing.assert_array_equal(weight.numpy(), 1.0)


def test_each_step_draws_what_its_seed_and_step_give(capsys):
    """The backends' generators are reseeded from (seed, step) before each step: a run resumed
    at step 2 draws (dropout masks, random tensors) what the uninterrupted run drew there."""
    def draws_of_a_run(start):
        model = nn.Linear(2, 1)
        optimizer = SGD(model.parameters(), lr=0.1)
        drawn = {}

        def loss_of_step(step):
            drawn[step] = mv.rand(3).numpy()
            return model(mv.ones(1, 2)).sum()

        mv.manual_seed(0)
        fit(model, optimizer, LambdaLR(optimizer, lambda step: 1.0), loss_of_step,
            Run(None, "test", {}, step=start), steps=4, seed=7)
        return drawn

    straight, resumed = draws_of_a_run(0), draws_of_a_run(2)
    assert sorted(resumed) == [2, 3]
    for step in (2, 3):
        np.testing.assert_array_equal(resumed[step], straight[step])
    assert not np.array_equal(straight[2], straight[3])


# --- every trainer's optimizer -------------------------------------------------------------

def default_weight_decay(train):
    return inspect.signature(train).parameters["weight_decay"].default


def train_clip(out):
    clip.train(clip.TrainConfig(model=TINY_CLIP, steps=1, batch_size=4), out=out)
    return clip.TrainConfig().weight_decay


def train_vision(out):
    assert main(["train-vision", "--model", "resnet", "--steps", "1", "--batch-size", "2",
                 "--held-out", "2", "--out", str(out)]) == 0
    return default_weight_decay(vision.train)


def train_lm(out):
    assert main(["train-lm", "--steps", "1", "--batch-size", "2", "--seq-len", "8", "--width",
                 "16", "--layers", "1", "--heads", "2", "--vocab-size", "300", "--sentences",
                 "200", "--out", str(out)]) == 0
    return default_weight_decay(lm.train)


@pytest.mark.parametrize("trainer", [train_clip, train_vision, train_lm], ids=lambda f: f.__name__)
def test_every_trainer_decays_the_matrices_and_nothing_else(trainer, tmp_path, capsys):
    """Read from the run directory's optimizer state: each parameter's moments have its shape,
    and its group its weight decay. Biases, norm gains and CLIP's logit_scale are not decayed
    (GPT-2, CLIP and nanoGPT train so)."""
    weight_decay = trainer(tmp_path)
    capsys.readouterr()
    state = io.load_safetensors(tmp_path / STATE_FILE)
    groups = json.loads(io.read_safetensors_metadata(tmp_path / STATE_FILE)["param_groups"])
    decays = {index: group["weight_decay"] for group in groups for index in group["params"]}
    assert sorted(decays) == list(range(len(state) // 3))     # step, exp_avg, exp_avg_sq each
    ndims = {index: state[f"optimizer.{index}.exp_avg"].ndim for index in decays}
    assert {ndim >= 2 for ndim in ndims.values()} == {True, False}
    assert decays == {index: weight_decay if ndim >= 2 else 0.0 for index, ndim in ndims.items()}
