"""Coloured shapes: a built-in, generated image-caption dataset that needs no download.

Each image shows one shape of one colour and size, at one of nine positions, on a dark grey
background with light Gaussian noise, and is captioned like "a small red circle in the top left".

    images, labels, captions = make_shapes(1000, image_size=32, seed=0)
    images: float32 (N, 3, H, W), values in [0, 1] (not normalised)
    labels: {"shape", "colour", "size", "position"} -> int64 (N,), indices into SHAPES, COLOURS,
            SIZES and POSITIONS; positions are the cells of a 3 x 3 grid in reading order
    captions: list of N str

For compositional zero-shot tests, `split_pairs` holds some colour-shape pairs out, and
`make_shapes(..., pairs=seen)` draws only the given pairs. The same arguments always give the
same images; shapes are anti-aliased by 2 x 2 supersampling.
"""

import numpy as np

COLOURS = {   # name -> RGB in [0, 1]
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.60, 0.20, 0.80),
    "orange": (1.00, 0.55, 0.05),
    "cyan": (0.10, 0.85, 0.90),
    "white": (0.95, 0.95, 0.95),
}
BACKGROUND = 0.15

# Each shape is a mask over (u, v): pixel offsets from the centre divided by the radius, v down.
SHAPE_MASKS = {
    "circle": lambda u, v: u**2 + v**2 <= 1,
    "square": lambda u, v: np.maximum(abs(u), abs(v)) <= 0.85,
    "triangle": lambda u, v: (v <= 0.75) & (abs(u) <= (v + 1) / 1.75),   # apex up, base at v = 0.75
    "diamond": lambda u, v: abs(u) + abs(v) <= 1,
    "cross": lambda u, v: (np.minimum(abs(u), abs(v)) <= 0.3) & (np.maximum(abs(u), abs(v)) <= 1),
    "ring": lambda u, v: (u**2 + v**2 <= 1) & (u**2 + v**2 >= 0.55**2),
}
SHAPES = tuple(SHAPE_MASKS)

SIZES = ("small", "large")
RADII = (0.12, 0.19)            # radius as a fraction of the image size, per size
POSITIONS = ("top left", "top middle", "top right",
             "middle left", "middle", "middle right",
             "bottom left", "bottom middle", "bottom right")
ANCHORS = (0.25, 0.5, 0.75)     # centre of each grid row / column, as a fraction of the image size
JITTER = 0.03                   # centres move up to this fraction of the image size from the anchor

CAPTION = "a {size} {colour} {shape} in the {position}"
_SUPERSAMPLE = 2
_CHUNK = 1024                   # images drawn at a time, to bound memory


def colour_shape_pairs():
    """Every (colour, shape) name pair, colours in COLOURS order, then shapes in SHAPES order."""
    return [(colour, shape) for colour in COLOURS for shape in SHAPES]


def split_pairs(n_held_out, seed=0):
    """Split colour_shape_pairs() into (seen, held_out), n_held_out pairs held out at random.

    Every colour and every shape still appears in some seen pair, so a model trained on seen
    pairs has met each word and must compose them to recognise a held-out pair.
    """
    pairs = colour_shape_pairs()
    if n_held_out < 0:
        raise ValueError(f"n_held_out must be >= 0, got {n_held_out}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    seen, held_out = set(pairs), set()
    for colour, shape in (pairs[i] for i in order):
        if len(held_out) == n_held_out:
            break
        still_seen = seen - {(colour, shape)}
        if any(c == colour for c, _ in still_seen) and any(s == shape for _, s in still_seen):
            seen, held_out = still_seen, held_out | {(colour, shape)}
    if len(held_out) < n_held_out:
        raise ValueError(f"cannot hold out {n_held_out} of {len(pairs)} colour-shape pairs and keep "
                         f"every colour and shape in a seen pair (held out {len(held_out)})")
    return [p for p in pairs if p in seen], [p for p in pairs if p in held_out]


def make_shapes(n, image_size=32, seed=0, pairs=None, noise=0.02):
    """n random images -> (images (n, 3, H, W) float32 in [0, 1], labels dict, captions list).

    pairs: (colour, shape) name pairs to draw from, uniformly (default: all of them).
    noise: standard deviation of the Gaussian noise added to every pixel before clipping.
    """
    pair_ids = _pair_ids(colour_shape_pairs() if pairs is None else pairs)
    rng = np.random.default_rng(seed)
    colour, shape = np.ascontiguousarray(pair_ids[rng.integers(len(pair_ids), size=n)].T)
    labels = {"shape": shape, "colour": colour,
              "size": rng.integers(len(SIZES), size=n), "position": rng.integers(len(POSITIONS), size=n)}
    row, column = np.divmod(labels["position"], 3)
    centre_y = (np.take(ANCHORS, row) + rng.uniform(-JITTER, JITTER, n)) * image_size
    centre_x = (np.take(ANCHORS, column) + rng.uniform(-JITTER, JITTER, n)) * image_size
    radius = np.take(RADII, labels["size"]) * rng.uniform(0.95, 1.05, n) * image_size
    covered = coverage(shape, centre_x, centre_y, radius, image_size)[:, None]    # (n, 1, H, W)
    rgb = np.array(list(COLOURS.values()), np.float32)[colour][:, :, None, None]   # (n, 3, 1, 1)
    images = BACKGROUND + covered * (rgb - BACKGROUND)
    images += noise * rng.standard_normal(images.shape, dtype=np.float32)
    np.clip(images, 0, 1, out=images)
    colour_names = list(COLOURS)
    captions = [CAPTION.format(size=SIZES[z], colour=colour_names[c], shape=SHAPES[s], position=POSITIONS[p])
                for z, c, s, p in zip(labels["size"], colour, shape, labels["position"])]
    return images, labels, captions


def _pair_ids(pairs):
    """(colour, shape) name pairs -> int64 array (P, 2) of (colour id, shape id)."""
    colour_ids = {name: i for i, name in enumerate(COLOURS)}
    shape_ids = {name: i for i, name in enumerate(SHAPES)}
    unknown = [pair for pair in pairs if pair[0] not in colour_ids or pair[1] not in shape_ids]
    if unknown or not pairs:
        raise ValueError(f"pairs must be a non-empty list of (colour, shape) with colour in "
                         f"{list(COLOURS)} and shape in {list(SHAPES)}; unknown: {unknown}")
    return np.array([(colour_ids[c], shape_ids[s]) for c, s in pairs], dtype=np.int64)


def coverage(shape, centre_x, centre_y, radius, image_size):
    """Fraction of each pixel that each image's shape covers: float32 (n, H, W) in [0, 1]."""
    s = _SUPERSAMPLE
    samples = ((np.arange(image_size * s) + 0.5) / s).astype(np.float32)   # sub-pixel centres
    centre_x, centre_y, radius = (a.astype(np.float32)[:, None, None] for a in (centre_x, centre_y, radius))
    coverage = np.empty((len(shape), image_size, image_size), np.float32)
    for start in range(0, len(shape), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        u = (samples[None, None, :] - centre_x[chunk]) / radius[chunk]   # (c, 1, W*s)
        v = (samples[None, :, None] - centre_y[chunk]) / radius[chunk]   # (c, H*s, 1)
        inside = np.zeros((len(u), image_size * s, image_size * s), bool)
        for shape_id, mask in enumerate(SHAPE_MASKS.values()):
            which = shape[chunk] == shape_id
            inside[which] = mask(u[which], v[which])
        hits = sum(inside[:, i::s, j::s].view(np.uint8) for i in range(s) for j in range(s))
        coverage[chunk] = hits / np.float32(s * s)
    return coverage


class ShapesDataset:
    """make_shapes as a dataset: dataset[i] -> (image (3, H, W), caption, labels {name: int})."""

    def __init__(self, n, image_size=32, seed=0, pairs=None, noise=0.02):
        self.images, self.labels, self.captions = make_shapes(n, image_size, seed, pairs, noise)

    def __len__(self):
        return len(self.captions)

    def __getitem__(self, i):
        return self.images[i], self.captions[i], {name: int(ids[i]) for name, ids in self.labels.items()}
