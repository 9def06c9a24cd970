"""Instructions about scenes (data/scenes.py) for instruction tuning: several task types, each a
question with one right answer, put into the lecture's template.

    TEMPLATE: "Below is an instruction that describes a task. Write a response that
               appropriately completes the request.
               Instruction: {instruction}
               Input: <image>
               Response:"   (the response follows as " " + answer, one BPE word)

    task, instruction, response = instruct(objects, rng)          # one task drawn at random
    instruct(objects, rng, task="count")  -> ("count", "How many shapes are there?", "two")

Task types: describe the image; what colour / shape / size is the X; where is the X; how many
shapes; is there a Y (yes/no, the object absent in half of them, then sharing its colour or its
shape with one that is there as often as not); which of two is further left.
"""
from .scenes import caption
from .shapes import COLOURS, SHAPES

IGNORE_INDEX = -100   # a label that does not count in the loss (cross_entropy's ignore_index)
IMAGE = "<image>"
TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\nInstruction: {instruction}\nInput: " + IMAGE + "\nResponse:")
NUMBERS = ("zero", "one", "two", "three")


def prompt(instruction):
    """The template around an instruction, up to the response (the image token inside)."""
    return TEMPLATE.format(instruction=instruction)


def _name(obj):
    return f"{obj.colour} {obj.shape}"


def _one(objects, rng):
    return objects[rng.integers(len(objects))]


def describe_task(objects, rng):
    return "Describe the image.", caption(objects)


def colour_task(objects, rng):
    obj = _one(objects, rng)
    return f"What colour is the {obj.shape}?", obj.colour


def shape_task(objects, rng):
    obj = _one(objects, rng)
    return f"What shape is the {obj.colour} object?", obj.shape


def size_task(objects, rng):
    obj = _one(objects, rng)
    return f"What size is the {_name(obj)}?", obj.size


def position_task(objects, rng):
    obj = _one(objects, rng)
    return f"Where is the {_name(obj)}?", f"in the {obj.position}"


def count_task(objects, rng):
    return "How many shapes are there?", NUMBERS[len(objects)]


def exists_task(objects, rng):
    """Is there a Y: present in half the questions; otherwise an absent colour-shape pair that
    shares the colour or the shape of a present object (or neither) — POPE's random and
    adversarial negatives."""
    if rng.random() < 0.5:
        return f"Is there a {_name(_one(objects, rng))}?", "yes"
    present = {(o.colour, o.shape) for o in objects}
    anchor = _one(objects, rng)
    kind = rng.integers(3)
    candidates = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present
                  and (kind == 2 or (c == anchor.colour if kind == 0 else s == anchor.shape))]
    colour, shape = candidates[rng.integers(len(candidates))]
    return f"Is there a {colour} {shape}?", "no"


def left_of_task(objects, rng):
    """Which of two objects in different columns is further left; None for a scene without."""
    pairs = [(a, b) for a in objects for b in objects if _column(a) < _column(b)]
    if not pairs:
        return None
    left, right = pairs[rng.integers(len(pairs))]
    first, second = (left, right) if rng.random() < 0.5 else (right, left)
    return (f"Which is further left, the {_name(first)} or the {_name(second)}?",
            f"the {_name(left)}")


def _column(obj):
    return 0 if obj.position.endswith("left") else 2 if obj.position.endswith("right") else 1


TASKS = {"describe": describe_task, "colour": colour_task, "shape": shape_task,
         "size": size_task, "position": position_task, "count": count_task,
         "exists": exists_task, "left_of": left_of_task}


def instruct(objects, rng, task=None):
    """(task, instruction, response) about a scene's objects: `task`, or one drawn uniformly
    among those the scene can answer (left_of needs two columns)."""
    names = [task] if task is not None else list(TASKS)
    while True:
        name = names[rng.integers(len(names))]
        example = TASKS[name](objects, rng)
        if example is not None:
            return (name, *example)
        if task is not None:
            raise ValueError(f"task {task!r} does not apply to this scene: {objects}")
        names.remove(name)


def response_labels(prompt_ids, response_ids, eos_id, ignore_index=IGNORE_INDEX):
    """One training example: ids = prompt, response, EOS; labels = ignore_index for every
    prompt token (the template, the instruction, the image tokens) and the ids themselves for
    the response and the EOS — the loss of instruction tuning counts the answer only. An empty
    response is an error: the example would teach nothing but the EOS."""
    prompt_ids, response_ids = list(prompt_ids), list(response_ids)
    if not response_ids:
        raise ValueError("response_labels: the response is empty (only the EOS would be "
                         "supervised)")
    ids = prompt_ids + response_ids + [eos_id]
    return ids, [ignore_index] * len(prompt_ids) + response_ids + [eos_id]
