"""Two shapes side by side: images whose captions only word order tells apart.

Each image shows one shape in the left column of data/shapes.py's 3 × 3 grid and another, of
another colour and another shape, in its right column (each in a random row, of a random size),
captioned "a red circle left of a blue square". The swapped caption "a blue square left of a red
circle" holds the same words in another order, and so does "a red square left of a blue circle"
(the colours bound to the other shapes): a bag of words cannot tell them apart.

    rng = np.random.default_rng(0)
    left, right = draw_object_pairs(100, colour_shape_pairs(), rng)   # (colour, shape) lists
    images = make_side_by_side(left, right, image_size=32, seed=0)    # float32 (100, 3, 32, 32)
    relation_caption(left[0], right[0])        # "a red circle left of a blue square"
    relation_caption(right[0], left[0])        # its swap, false of images[0]

(A small companion of data/shapes.py for one experiment, minivlm experiment clip-text-encoders.)
"""
import numpy as np

from .shapes import ANCHORS, BACKGROUND, COLOURS, JITTER, RADII, SHAPES, SIZES, coverage

LEFT, RIGHT = 0, 2   # the grid columns the two shapes stand in


def relation_caption(left, right):
    """'a red circle left of a blue square' for the (colour, shape) pairs left and right."""
    return f"a {left[0]} {left[1]} left of a {right[0]} {right[1]}"


def draw_object_pairs(n, pairs, rng):
    """n (left, right) objects drawn uniformly from the ordered pairs of (colour, shape) pairs
    in `pairs` that differ in colour and in shape -> (left, right): two lists of n pairs."""
    candidates = [(a, b) for a in pairs for b in pairs if a[0] != b[0] and a[1] != b[1]]
    if not candidates:
        raise ValueError(f"draw_object_pairs: no two of the pairs {list(pairs)} differ in both "
                         f"colour and shape")
    chosen = [candidates[i] for i in rng.integers(len(candidates), size=n)]
    return [a for a, _ in chosen], [b for _, b in chosen]


def make_side_by_side(left, right, image_size=32, seed=0, noise=0.02):
    """Images float32 (n, 3, S, S) in [0, 1], image i showing left[i] in the left column and
    right[i] in the right column ((colour, shape) name pairs), each in a random row, of a random
    size, with Gaussian pixel noise of standard deviation `noise`. The same arguments give the
    same images."""
    if len(left) != len(right):
        raise ValueError(f"make_side_by_side: {len(left)} left objects but {len(right)} right "
                         f"ones")
    unknown = sorted({pair for pair in [*left, *right]
                      if pair[0] not in COLOURS or pair[1] not in SHAPES})
    if unknown:
        raise ValueError(f"make_side_by_side: unknown (colour, shape) pairs {unknown}; colours "
                         f"are {list(COLOURS)}, shapes {list(SHAPES)}")
    rng = np.random.default_rng(seed)
    images = np.full((len(left), 3, image_size, image_size), BACKGROUND, np.float32)
    for objects, column in ((left, LEFT), (right, RIGHT)):
        _paint(images, objects, column, rng)
    images += noise * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images, 0, 1, out=images)


def _paint(images, objects, column, rng):
    """Draw objects[i] into images[i] in grid column `column`, in a random row, of a random size,
    jittered as data/shapes.py jitters its shapes."""
    n, size = images.shape[0], images.shape[-1]
    shape = np.array([SHAPES.index(s) for _, s in objects], dtype=np.int64)
    centre_y = (np.take(ANCHORS, rng.integers(3, size=n)) + rng.uniform(-JITTER, JITTER, n)) * size
    centre_x = (ANCHORS[column] + rng.uniform(-JITTER, JITTER, n)) * size
    radius = np.take(RADII, rng.integers(len(SIZES), size=n)) * rng.uniform(0.95, 1.05, n) * size
    covered = coverage(shape, centre_x, centre_y, radius, size)[:, None]         # (n, 1, S, S)
    rgb = np.array([COLOURS[c] for c, _ in objects], np.float32)[:, :, None, None]
    images += covered * (rgb - images)
