"""The built-in multimodal data of train-vlm: scenes of one to three shapes (data/scenes.py) and
instructions about them in the lecture's template (data/instructions.py). Each answer is checked
against the scene by a reading of the question written here, independently of the task code."""
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minivlm.data.instructions import (IGNORE_INDEX, IMAGE, NUMBERS, TASKS, instruct, prompt,
                                       response_labels)
from minivlm.data.scenes import caption, make_scenes
from minivlm.data.shapes import ANCHORS, BACKGROUND, COLOURS, POSITIONS, colour_shape_pairs

seeds = st.integers(0, 2 ** 32 - 1)


def cell(obj):
    return divmod(POSITIONS.index(obj.position), 3)


@settings(max_examples=20)
@given(seeds)
def test_scenes_hold_distinct_objects_in_cells_that_do_not_touch(seed):
    pairs = colour_shape_pairs()[::2]
    scenes = make_scenes(30, image_size=16, seed=seed, pairs=pairs)
    assert scenes.images.shape == (30, 3, 16, 16) and scenes.images.dtype == np.float32
    assert 0 <= scenes.images.min() and scenes.images.max() <= 1
    for objects in scenes.objects:
        assert 1 <= len(objects) <= 3
        assert len({o.colour for o in objects}) == len({o.shape for o in objects}) == len(objects)
        assert all((o.colour, o.shape) in pairs for o in objects)
        for a in objects:
            for b in objects:
                (ra, ca), (rb, cb) = cell(a), cell(b)
                assert a is b or max(abs(ra - rb), abs(ca - cb)) > 1
    again = make_scenes(30, image_size=16, seed=seed, pairs=pairs)
    np.testing.assert_array_equal(again.images, scenes.images)
    assert again.objects == scenes.objects


def test_each_object_is_painted_in_its_own_cell_in_its_colour():
    scenes = make_scenes(200, image_size=48, seed=1, noise=0.0)
    checked = 0
    for image, objects in zip(scenes.images, scenes.objects):
        for obj in objects:
            if obj.shape not in ("circle", "square", "diamond", "cross") or obj.size != "large":
                continue      # shapes whose centre pixel is painted (a ring's is not)
            row, column = cell(obj)
            y, x = int(ANCHORS[row] * 48), int(ANCHORS[column] * 48)
            np.testing.assert_allclose(image[:, y, x], COLOURS[obj.colour], atol=1e-6)
            checked += 1
        occupied = {cell(o) for o in objects}
        for r, c in {(r, c) for r in range(3) for c in range(3)} - occupied:
            pixel = image[:, int(ANCHORS[r] * 48), int(ANCHORS[c] * 48)]   # an empty cell
            np.testing.assert_allclose(pixel, BACKGROUND, atol=1e-6)
    assert checked > 50


def test_captions_name_every_object_in_reading_order():
    scenes = make_scenes(50, seed=2)
    for objects in scenes.objects:
        text = caption(objects)
        named = re.findall(r"a (small|large) (\w+) (\w+) in the ([a-z ]+?)(?:,| and |$)", text)
        assert len(named) == len(objects)
        order = sorted(objects, key=lambda o: POSITIONS.index(o.position))
        assert [(s, c, sh, p) for s, c, sh, p in named] == \
            [(o.size, o.colour, o.shape, o.position) for o in order]


def true_answer(objects, task, instruction):
    """The answer to `instruction` read off the scene, by a parser of the question (not the
    task code)."""
    by_shape = {o.shape: o for o in objects}
    by_colour = {o.colour: o for o in objects}
    by_name = {f"{o.colour} {o.shape}": o for o in objects}
    if task == "describe":
        return caption(objects)
    if task == "count":
        return NUMBERS[len(objects)]
    if task == "colour":
        return by_shape[re.fullmatch(r"What colour is the (\w+)\?", instruction)[1]].colour
    if task == "shape":
        return by_colour[re.fullmatch(r"What shape is the (\w+) object\?", instruction)[1]].shape
    if task == "size":
        return by_name[re.fullmatch(r"What size is the (\w+ \w+)\?", instruction)[1]].size
    if task == "position":
        return "in the " + by_name[re.fullmatch(r"Where is the (\w+ \w+)\?",
                                                instruction)[1]].position
    if task == "exists":
        return "yes" if re.fullmatch(r"Is there a (\w+ \w+)\?", instruction)[1] in by_name \
            else "no"
    first, second = re.fullmatch(r"Which is further left, the (\w+ \w+) or the (\w+ \w+)\?",
                                 instruction).groups()
    left = min(by_name[first], by_name[second], key=lambda o: cell(o)[1])
    assert cell(by_name[first])[1] != cell(by_name[second])[1]
    return f"the {left.colour} {left.shape}"


@settings(max_examples=10)
@given(seeds)
def test_every_answer_is_true_of_its_scene(seed):
    rng = np.random.default_rng(seed)
    scenes = make_scenes(60, seed=seed)
    tasks = set()
    for objects in scenes.objects:
        task, instruction, response = instruct(objects, rng)
        tasks.add(task)
        assert response == true_answer(objects, task, instruction), (objects, instruction)
    assert len(tasks) >= 6


def test_half_the_existence_questions_name_an_absent_object():
    rng = np.random.default_rng(0)
    scenes = make_scenes(600, seed=3)
    answers = [instruct(objects, rng, task="exists")[2] for objects in scenes.objects]
    assert 0.45 < answers.count("no") / len(answers) < 0.55


def test_a_task_the_scene_cannot_answer_is_an_error():
    one_object = make_scenes(1, seed=0, counts=(1,)).objects[0]
    with pytest.raises(ValueError, match="task 'left_of' does not apply"):
        instruct(one_object, np.random.default_rng(0), task="left_of")
    assert set(TASKS) == {"describe", "colour", "shape", "size", "position", "count", "exists",
                          "left_of"}


def test_the_template_is_the_lecture_s():
    text = prompt("What colour is the ring?")
    assert text == ("Below is an instruction that describes a task. Write a response that "
                    "appropriately completes the request.\nInstruction: What colour is the "
                    f"ring?\nInput: {IMAGE}\nResponse:")


def test_labels_supervise_the_response_and_its_eos_only():
    ids, labels = response_labels([1, 7, 7, 9], [20, 21], eos_id=2)
    assert ids == [1, 7, 7, 9, 20, 21, 2]
    assert labels == [IGNORE_INDEX] * 4 + [20, 21, 2]
    with pytest.raises(ValueError, match="the response is empty"):
        response_labels([1, 7], [], eos_id=2)
