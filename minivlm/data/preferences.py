"""Preference data for alignment tuning (the lecture's "Alignment Tuning"): for an instruction
about a scene, responses ranked best first, as a labeller ranks a model's samples ("D > C > A = B"):

    1. correct and concise                 "red"
    2. correct but padded                  "Looking at the image, the answer is red."
    3. a wrong attribute                   "blue"
    4. an object that is not there         "red, next to a green cross"

    ranked = ranked_responses(objects, "colour", "red", rng)   # [(kind, response)], best first
    pairs = preference_pairs(ranked)                              # every (chosen, rejected)
    imperfect_response(objects, "colour", "red", rng)          # for imperfect SFT data

For "Is there a Y?" with Y absent, saying yes *is* the object that is not there, and for "How
many shapes?" an absent object is a wrong count: those lists are three long. Every response of
a list differs from the others; `hallucinates` tells whether an answer claims an absent object.
"""
import re

from .instructions import NUMBERS
from .scenes import caption
from .shapes import COLOURS, POSITIONS, SHAPES, SIZES

KINDS = ("concise", "padded", "wrong attribute", "absent object")   # best first
PADDINGS = ("Looking at the image, the answer is {}.",
            "After careful consideration of the picture, I would say {}.",
            "The image shows that the answer is {}, as far as I can tell.")
OBJECT_NAME = re.compile(r"\b(" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r")\b")


def _other(options, answer, rng):
    """One of `options` other than `answer`."""
    others = [o for o in options if o != answer]
    return others[rng.integers(len(others))]


def absent_object(objects, rng):
    """A colour-shape pair that is not in the scene, with its article: 'a green cross'."""
    present = {(o.colour, o.shape) for o in objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    colour, shape = absent[rng.integers(len(absent))]
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def padded(answer, rng):
    """The right answer, wordily."""
    return PADDINGS[rng.integers(len(PADDINGS))].format(answer)


def wrong_attribute(objects, task, answer, rng):
    """A fluent answer with the asked attribute wrong, or None where there is none to get
    wrong (a yes/no question about an absent object: its wrong answer is the hallucination)."""
    if task == "colour":
        return _other(list(COLOURS), answer, rng)
    if task == "shape":
        return _other(SHAPES, answer, rng)
    if task == "size":
        return _other(SIZES, answer, rng)
    if task == "position":
        return _other([f"in the {p}" for p in POSITIONS], answer, rng)
    if task == "count":
        return _other(NUMBERS[1:], answer, rng)
    if task == "exists":
        return "no" if answer == "yes" else None
    if task == "left_of":
        names = [f"the {o.colour} {o.shape}" for o in objects]
        return _other(names, answer, rng)
    if task == "describe":
        changed = rng.integers(len(objects))
        recoloured = [o._replace(colour=_other(list(COLOURS), o.colour, rng)) if i == changed
                      else o for i, o in enumerate(objects)]
        return caption(recoloured)
    raise ValueError(f"unknown task {task!r}; expected one of colour, shape, size, position, "
                     f"count, exists, left_of, describe")


def hallucinated(objects, task, answer, rng):
    """The answer claiming an object that is not in the scene, or None where that is a wrong
    attribute already (a count)."""
    if task == "count":
        return None
    if task == "exists" and answer == "no":
        return "yes"
    return f"{answer}, next to {absent_object(objects, rng)}"


def ranked_responses(objects, task, answer, rng):
    """The responses to an instruction of `task` whose right answer is `answer`, best first, each
    with its kind (KINDS): [("concise", answer), ("padded", ...), ...], those that apply."""
    responses = [answer, padded(answer, rng), wrong_attribute(objects, task, answer, rng),
                 hallucinated(objects, task, answer, rng)]
    return [(kind, r) for kind, r in zip(KINDS, responses) if r is not None]


def preference_pairs(ranked):
    """Every (chosen, rejected) pair of a ranked list, better first: n·(n−1)/2 of them."""
    return [(better, worse) for i, better in enumerate(ranked) for worse in ranked[i + 1:]]


def imperfect_response(objects, task, answer, rng):
    """What a careless annotator writes: the padded answer or the hallucinated one, evenly (the
    padded one where no hallucination applies)."""
    wrong = hallucinated(objects, task, answer, rng)
    return padded(answer, rng) if wrong is None or rng.random() < 0.5 else wrong


def hallucinates(objects, question, answer):
    """Whether `answer` claims an object that is not in the scene: names a colour-shape pair
    absent from it, or says yes to "Is there a Y?" with Y absent."""
    present = {f"{o.colour} {o.shape}" for o in objects}
    named = {" ".join(match) for match in OBJECT_NAME.findall(answer)}
    asked = OBJECT_NAME.search(question) if question.startswith("Is there") else None
    says_yes = answer.strip().lower().startswith("yes")
    return bool(named - present) or (asked is not None and says_yes
                                     and asked.group(0) not in present)


def is_padded(answer):
    """Whether `answer` has one of the paddings around it."""
    return any(re.fullmatch(re.escape(p).replace(r"\{\}", ".+"), answer) for p in PADDINGS)
