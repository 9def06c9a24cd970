"""Scenes of one to three coloured shapes: the built-in images of minivlm's vision–language model
(no download), drawn as data/shapes.py draws one shape, and described in words.

Each object has a colour, a shape, a size and one of the nine positions of a 3 × 3 grid; a
scene's objects have different colours, different shapes, and cells that do not touch (not even
diagonally), so that "the circle" or "the red shape" names one object and no two overlap.

    scenes = make_scenes(1000, image_size=32, seed=0, pairs=seen)
    scenes.images                # float32 (n, 3, S, S) in [0, 1]
    scenes.objects[0]            # [Object("red", "circle", "small", "top left"), ...]
    caption(scenes.objects[0])   # "a small red circle in the top left and a large blue ring
                                 #  in the bottom right"
"""
import collections
import itertools

import numpy as np

from .shapes import (ANCHORS, BACKGROUND, COLOURS, JITTER, POSITIONS, RADII, SHAPES, SIZES,
                     colour_shape_pairs, coverage)

Object = collections.namedtuple("Object", ["colour", "shape", "size", "position"])
Scenes = collections.namedtuple("Scenes", ["images", "objects"])
MAX_OBJECTS = 3


def _apart(cells):
    """True when no two of the grid cells (0 ... 8) touch, diagonals included."""
    return all(max(abs(a // 3 - b // 3), abs(a % 3 - b % 3)) > 1
               for a, b in itertools.combinations(cells, 2))


# every set of 1 ... 3 cells that do not touch, to draw a scene's layout from
LAYOUTS = [cells for k in range(1, MAX_OBJECTS + 1)
           for cells in itertools.combinations(range(len(POSITIONS)), k) if _apart(cells)]


def draw_objects(rng, pairs, count):
    """`count` objects of distinct colours and shapes from `pairs`, in cells that do not touch."""
    layouts = [cells for cells in LAYOUTS if len(cells) == count]
    cells = layouts[rng.integers(len(layouts))]
    for _ in range(1000):
        chosen = [pairs[i] for i in rng.choice(len(pairs), count, replace=False)]
        if len({c for c, _ in chosen}) == count and len({s for _, s in chosen}) == count:
            break
    else:
        raise ValueError(f"cannot draw {count} objects of distinct colours and shapes from "
                         f"{len(pairs)} pairs")
    return [Object(colour, shape, SIZES[rng.integers(len(SIZES))], POSITIONS[cell])
            for (colour, shape), cell in zip(chosen, cells)]


def make_scenes(n, image_size=32, seed=0, pairs=None, counts=(1, 2, 3), noise=0.02):
    """n scenes of `counts` objects each (uniformly) drawn from `pairs` (default: all colour-
    shape pairs) -> Scenes(images float32 (n, 3, S, S) in [0, 1], objects: n lists of Object).
    The same arguments give the same scenes."""
    pairs = colour_shape_pairs() if pairs is None else list(pairs)
    rng = np.random.default_rng(seed)
    objects = [draw_objects(rng, pairs, counts[rng.integers(len(counts))]) for _ in range(n)]
    images = np.full((n, 3, image_size, image_size), BACKGROUND, np.float32)
    for slot in range(MAX_OBJECTS):
        which = [i for i, scene in enumerate(objects) if len(scene) > slot]
        if which:
            _paint([objects[i][slot] for i in which], images, which, image_size, rng)
    images += noise * rng.standard_normal(images.shape, dtype=np.float32)
    np.clip(images, 0, 1, out=images)
    return Scenes(images, objects)


def _paint(objects, images, which, image_size, rng):
    """Draw one object into each image `which` (its cell jittered as data/shapes.py does)."""
    shape = np.array([SHAPES.index(o.shape) for o in objects])
    cell = np.array([POSITIONS.index(o.position) for o in objects])
    row, column = np.divmod(cell, 3)
    n = len(objects)
    centre_y = (np.take(ANCHORS, row) + rng.uniform(-JITTER, JITTER, n)) * image_size
    centre_x = (np.take(ANCHORS, column) + rng.uniform(-JITTER, JITTER, n)) * image_size
    radius = (np.array([RADII[SIZES.index(o.size)] for o in objects])
              * rng.uniform(0.95, 1.05, n) * image_size)
    covered = coverage(shape, centre_x, centre_y, radius, image_size)[:, None]   # (n, 1, H, W)
    rgb = np.array([COLOURS[o.colour] for o in objects], np.float32)[:, :, None, None]
    images[which] += covered * (rgb - images[which])


def describe(obj):
    """'a small red circle in the top left'."""
    return f"a {obj.size} {obj.colour} {obj.shape} in the {obj.position}"


def caption(objects):
    """The scene in words, its objects in reading order: "a ... , a ... and a ..."."""
    ordered = sorted(objects, key=lambda o: POSITIONS.index(o.position))
    parts = [describe(o) for o in ordered]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
