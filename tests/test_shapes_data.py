"""The coloured-shapes dataset: determinism, and pixels that agree with their captions.

Expected colours, positions and shape geometry are written here from what the words mean,
not read from minivlm.data.shapes, and measured on the pixels.
"""

import re

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minivlm.data import shapes

CAPTION = re.compile(r"a (small|large) (\w+) (\w+) in the (top|middle|bottom)? ?(left|middle|right)?$")

# What each colour word means, as bounds on the mean (R, G, B) of the fully covered pixels.
COLOUR_MEANS = {
    "red": lambda r, g, b: r > 0.7 and g < 0.3 and b < 0.3,
    "green": lambda r, g, b: g > 0.6 and r < 0.3 and b < 0.4,
    "blue": lambda r, g, b: b > 0.7 and r < 0.3 and g < 0.5,
    "yellow": lambda r, g, b: r > 0.7 and g > 0.7 and b < 0.3,
    "purple": lambda r, g, b: r > 0.4 and b > 0.6 and g < 0.3,
    "orange": lambda r, g, b: r > 0.8 and 0.35 < g < 0.75 and b < 0.2,
    "cyan": lambda r, g, b: g > 0.7 and b > 0.7 and r < 0.3,
    "white": lambda r, g, b: min(r, g, b) > 0.8,
}


def parse(caption):
    """'a small red circle in the top left' -> ('small', 'red', 'circle', row 0, column 0)."""
    size, colour, shape, row, column = CAPTION.fullmatch(caption).groups()
    return size, colour, shape, ["top", "middle", "bottom"].index(row or "middle"), \
        ["left", "middle", "right"].index(column or "middle")


def coverage(image):
    """How much of each pixel the shape covers, from a noise-free image: (H, W) in [0, 1].

    The corner pixel is background; the pixel farthest from it is fully covered.
    """
    offset = image - image[:, :1, :1]                            # (3, H, W)
    full = offset.reshape(3, -1)[:, np.argmax(np.abs(offset).sum(0))]
    return np.clip(np.einsum("chw,c->hw", offset, full) / (full @ full), 0, 1)


def centroid(weights):
    rows, columns = np.indices(weights.shape) + 0.5
    return (rows * weights).sum() / weights.sum(), (columns * weights).sum() / weights.sum()


def test_same_seed_same_data_other_seed_other_data():
    first, second, other = (shapes.make_shapes(50, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(first[0], second[0])
    assert first[2] == second[2]
    for name in first[1]:
        np.testing.assert_array_equal(first[1][name], second[1][name])
    assert not np.array_equal(first[0], other[0])


@given(n=st.integers(0, 20), image_size=st.integers(8, 40), seed=st.integers(0, 2**32 - 1))
def test_shapes_dtypes_and_ranges(n, image_size, seed):
    images, labels, captions = shapes.make_shapes(n, image_size=image_size, seed=seed)
    assert images.shape == (n, 3, image_size, image_size) and images.dtype == np.float32
    assert ((0 <= images) & (images <= 1)).all()
    assert len(captions) == n and all(isinstance(c, str) for c in captions)
    bounds = {"shape": shapes.SHAPES, "colour": shapes.COLOURS, "size": shapes.SIZES,
              "position": shapes.POSITIONS}
    assert labels.keys() == bounds.keys()
    for name, names in bounds.items():
        assert labels[name].shape == (n,) and labels[name].dtype == np.int64
        assert ((0 <= labels[name]) & (labels[name] < len(names))).all()


def test_vocabulary_is_rich_enough():
    assert len(shapes.SHAPES) >= 5 and len(shapes.COLOURS) >= 6
    assert set(COLOUR_MEANS) == set(shapes.COLOURS)
    assert len(shapes.POSITIONS) == 9 and shapes.SIZES == ("small", "large")


def test_captions_name_the_labels():
    _, labels, captions = shapes.make_shapes(300, seed=1)
    for i, caption in enumerate(captions):
        size, colour, shape, row, column = parse(caption)
        assert size == shapes.SIZES[labels["size"][i]]
        assert colour == list(shapes.COLOURS)[labels["colour"][i]]
        assert shape == shapes.SHAPES[labels["shape"][i]]
        assert labels["position"][i] == 3 * row + column


def test_colour_and_position_of_the_pixels_match_the_caption():
    images, _, captions = shapes.make_shapes(400, seed=2)
    clean, _, _ = shapes.make_shapes(400, seed=2, noise=0.0)
    height = images.shape[-1]
    for image, clean_image, caption in zip(images, clean, captions):
        _, colour, _, row, column = parse(caption)
        covered = coverage(clean_image)
        assert COLOUR_MEANS[colour](*image[:, covered > 0.99].mean(axis=1)), caption
        y, x = centroid(covered)
        assert (int(y // (height / 3)), int(x // (height / 3))) == (row, column), caption


def test_large_shapes_cover_more_pixels_than_small_ones_of_the_same_kind():
    images, _, captions = shapes.make_shapes(400, seed=5, noise=0.0)
    areas = {}
    for image, caption in zip(images, captions):
        size, _, shape, _, _ = parse(caption)
        areas.setdefault((shape, size), []).append(coverage(image).sum())
    for shape in shapes.SHAPES:
        assert max(areas[shape, "small"]) < min(areas[shape, "large"]), shape


# What each shape word means, measured at 64 pixels on large shapes:
# hole: the pixel at the centroid is background; fill: area over bounding-box area;
# bottom_heavy: the centroid lies below the middle of the bounding box (a triangle, apex up);
# diagonals: the points 40% of the way from the centre to the bounding-box corners are covered.
GEOMETRY = {
    "circle": dict(hole=False, fill=(0.70, 0.87), bottom_heavy=False, diagonals=True),   # pi / 4
    "square": dict(hole=False, fill=(0.87, 1.00), bottom_heavy=False, diagonals=True),
    "triangle": dict(hole=False, fill=(0.40, 0.60), bottom_heavy=True, diagonals=None),
    "diamond": dict(hole=False, fill=(0.40, 0.60), bottom_heavy=False, diagonals=True),
    "cross": dict(hole=False, fill=(0.40, 0.65), bottom_heavy=False, diagonals=False),
    "ring": dict(hole=True, fill=(0.40, 0.75), bottom_heavy=False, diagonals=None),
}


def measure(covered):
    inside = covered > 0.5
    rows, columns = np.nonzero(inside)
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    y, x = centroid(covered)
    half_height, half_width = (bottom - top) / 2, (right - left) / 2
    diagonal_points = [covered[int(y + 0.4 * dy * half_height), int(x + 0.4 * dx * half_width)]
                       for dy in (-1, 1) for dx in (-1, 1)]
    return dict(hole=covered[int(y), int(x)] < 0.5,
                fill=inside.sum() / ((bottom - top) * (right - left)),
                bottom_heavy=y - (top + bottom) / 2 > 0.1 * (bottom - top),
                diagonals=min(diagonal_points) > 0.5)


def test_shape_geometry_matches_the_shape_name():
    images, labels, captions = shapes.make_shapes(300, image_size=64, seed=6, noise=0.0)
    for image, caption in zip(images[labels["size"] == 1], np.array(captions)[labels["size"] == 1]):
        _, _, shape, _, _ = parse(caption)
        measured, expected = measure(coverage(image)), GEOMETRY[shape]
        low, high = expected["fill"]
        assert low < measured["fill"] <= high, (caption, measured)
        assert measured["hole"] == expected["hole"], (caption, measured)
        assert measured["bottom_heavy"] == expected["bottom_heavy"], (caption, measured)
        if expected["diagonals"] is not None:
            assert measured["diagonals"] == expected["diagonals"], (caption, measured)


def test_small_ring_still_has_a_hole_at_32_pixels():
    images, labels, _ = shapes.make_shapes(200, seed=7, noise=0.0, pairs=[("red", "ring")])
    for image in images[labels["size"] == 0]:
        covered = coverage(image)
        y, x = centroid(covered)
        assert covered[int(y), int(x)] < 0.5


@given(n_held_out=st.integers(0, 30), seed=st.integers(0, 2**32 - 1))
def test_split_pairs_is_a_partition_that_keeps_every_word_seen(n_held_out, seed):
    seen, held_out = shapes.split_pairs(n_held_out, seed=seed)
    every_pair = {(c, s) for c in shapes.COLOURS for s in shapes.SHAPES}
    assert len(held_out) == n_held_out
    assert set(seen).isdisjoint(held_out) and set(seen) | set(held_out) == every_pair
    assert {c for c, _ in seen} == set(shapes.COLOURS) and {s for _, s in seen} == set(shapes.SHAPES)
    assert shapes.split_pairs(n_held_out, seed=seed) == (seen, held_out)


def test_split_pairs_depends_on_the_seed_and_refuses_too_many():
    assert shapes.split_pairs(10, seed=0)[1] != shapes.split_pairs(10, seed=1)[1]
    too_many = len(shapes.colour_shape_pairs()) - max(len(shapes.COLOURS), len(shapes.SHAPES)) + 1
    with pytest.raises(ValueError, match=f"cannot hold out {too_many}"):
        shapes.split_pairs(too_many)
    with pytest.raises(ValueError, match="n_held_out must be >= 0, got -1"):
        shapes.split_pairs(-1)


def test_only_the_given_pairs_are_drawn():
    seen, held_out = shapes.split_pairs(12, seed=0)
    _, labels, captions = shapes.make_shapes(500, seed=0, pairs=seen)
    drawn = {(list(shapes.COLOURS)[c], shapes.SHAPES[s]) for c, s in zip(labels["colour"], labels["shape"])}
    assert drawn == set(seen)
    assert not any(f" {colour} {shape} " in caption for caption in captions for colour, shape in held_out)


def test_unknown_pairs_are_named():
    with pytest.raises(ValueError, match=r"\('mauve', 'circle'\)"):
        shapes.make_shapes(3, pairs=[("red", "circle"), ("mauve", "circle")])
    with pytest.raises(ValueError, match="non-empty"):
        shapes.make_shapes(3, pairs=[])


def test_dataset_indexes_the_generated_arrays():
    dataset = shapes.ShapesDataset(20, image_size=16, seed=9)
    images, labels, captions = shapes.make_shapes(20, image_size=16, seed=9)
    assert len(dataset) == 20
    image, caption, label = dataset[7]
    np.testing.assert_array_equal(image, images[7])
    assert caption == captions[7]
    assert label == {name: int(values[7]) for name, values in labels.items()}
