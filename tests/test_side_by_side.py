"""minivlm.data.side_by_side: two shapes whose captions only word order tells apart: each shape
in its column and its colour, pairs drawn as asked, the same images for the same seed, clear
errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minivlm.data.shapes import BACKGROUND, COLOURS, colour_shape_pairs, split_pairs
from minivlm.data.side_by_side import draw_object_pairs, make_side_by_side, relation_caption

FEW = settings(max_examples=min(10, settings.default.max_examples), deadline=None)


def test_the_caption_names_the_left_object_first():
    assert relation_caption(("red", "circle"), ("blue", "square")) == \
        "a red circle left of a blue square"


@FEW
@given(seed=st.integers(0, 2 ** 16), size=st.sampled_from([16, 32]))
def test_each_object_is_drawn_in_its_own_third_in_its_own_colour(seed, size):
    """Without noise every pixel of the left (right) third is the background blended with the
    left (right) object's colour, by the fraction of the pixel it covers, and some pixel is
    mostly covered."""
    left, right = draw_object_pairs(6, colour_shape_pairs(), np.random.default_rng(seed))
    images = make_side_by_side(left, right, size, seed, noise=0)
    third = size // 3
    for image, a, b in zip(images, left, right):
        for (colour, _), columns in ((a, slice(0, third)), (b, slice(size - third, size))):
            offset = image[:, :, columns].reshape(3, -1) - BACKGROUND              # (3, pixels)
            direction = np.array(COLOURS[colour], np.float32)[:, None] - BACKGROUND
            covered = (direction * offset).sum(axis=0) / (direction ** 2).sum()     # (pixels,)
            assert np.allclose(offset, covered * direction, atol=1e-5)
            assert covered.min() >= -1e-6 and covered.max() <= 1 + 1e-6
            assert covered.max() > 0.5


@FEW
@given(seed=st.integers(0, 2 ** 16), held_out=st.integers(0, 8))
def test_pairs_come_from_the_given_ones_and_differ_in_colour_and_shape(seed, held_out):
    seen, _ = split_pairs(held_out, seed)
    left, right = draw_object_pairs(200, seen, np.random.default_rng(seed))
    assert len(left) == len(right) == 200
    assert set(left) | set(right) <= set(seen)
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in zip(left, right))


def test_the_same_seed_gives_the_same_images_and_another_seed_others():
    left, right = [("red", "circle"), ("cyan", "ring")], [("blue", "square"), ("white", "cross")]
    first = make_side_by_side(left, right, 16, seed=3)
    assert first.dtype == np.float32 and first.shape == (2, 3, 16, 16)
    assert 0 <= first.min() and first.max() <= 1
    assert np.array_equal(first, make_side_by_side(left, right, 16, seed=3))
    assert not np.array_equal(first, make_side_by_side(left, right, 16, seed=4))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="1 left objects but 2 right ones"):
        make_side_by_side([("red", "circle")], [("blue", "square")] * 2)
    with pytest.raises(ValueError, match=r"unknown \(colour, shape\) pairs \[\('pink', 'circle'\)"):
        make_side_by_side([("pink", "circle")], [("blue", "square")])
    with pytest.raises(ValueError, match="differ in both colour and shape"):
        draw_object_pairs(3, [("red", "circle"), ("red", "square")], np.random.default_rng(0))
