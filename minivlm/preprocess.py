"""CLIP's image preprocessing with Pillow and NumPy: the same pixels as OpenAI's `preprocess`,

    Compose([Resize(R, interpolation=BICUBIC), CenterCrop(R), convert("RGB"), ToTensor(),
             Normalize(MEAN, STD)])

    pixels = preprocess(Image.open("cat.jpg"), image_size=224)    # float32 (3, 224, 224)
    batch = load_images(["cat.jpg", "dog.png"], image_size=224)     # float32 (2, 3, 224, 224)

torchvision hands PIL images to PIL's own bicubic resize, so the resize is Pillow's here too.
Hugging Face's CLIPImageProcessor differs in two details. It converts to RGB first, laying
transparent images over white, where OpenAI drops the alpha channel after resizing (the same
pixels for RGB and greyscale images; palette images, which Pillow resizes by nearest neighbour,
and transparent ones differ). Its centre crop rounds the offset (W − R) / 2 down where
torchvision rounds half to even (a one-pixel shift when W − R is 3 mod 4).

Two departures, for files OpenAI's preprocess mishandles: a 16-bit greyscale image keeps its
65536 levels (converting it to RGB would clip it at 255), and an image is refused before it is
decoded when it, or its resized version, has more than MAX_PIXELS pixels (a 126-byte 1×10000 PNG
would be resized to 224×2240000).
"""
import warnings

import numpy as np
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)  # of CLIP's training images, per RGB channel
STD = (0.26862954, 0.26130258, 0.27577711)
MAX_PIXELS = 89_478_485     # Pillow's default Image.MAX_IMAGE_PIXELS (a 1 GB RGBA image / 3)
SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")   # Pillow's modes of 16-bit PNGs


class ImageSizeError(ValueError):
    """An image too large to decode, or to resize to the model's input."""


def resized_size(size, image_size):
    """(width, height) -> the size whose shorter side is `image_size` and whose longer side is
    int(image_size·long/short), as torchvision's Resize(image_size)."""
    width, height = size
    if width <= height:
        return image_size, int(image_size * height / width)
    return int(image_size * width / height), image_size


def check_size(size, image_size):
    """An ImageSizeError when an image of `size` (width, height), or its resized version,
    has more than MAX_PIXELS pixels."""
    new_width, new_height = resized_size(size, image_size)
    if size[0] * size[1] > MAX_PIXELS or new_width * new_height > MAX_PIXELS:
        raise ImageSizeError(f"an image of {size[0]}×{size[1]} pixels, resized to "
                             f"{new_width}×{new_height} (shorter side {image_size}), has more than "
                             f"{MAX_PIXELS:,} pixels")


def resize_shortest_side(image, size):
    """Bicubic resize so that the shorter side is `size`, as torchvision's Resize(size)."""
    return image.resize(resized_size(image.size, size), Image.Resampling.BICUBIC)


def center_crop(image, size):
    """The central size×size square; offsets round((W − size) / 2), as torchvision's CenterCrop
    (Python's round: half to even)."""
    width, height = image.size
    left, top = round((width - size) / 2), round((height - size) / 2)
    return image.crop((left, top, left + size, top + size))


def to_pixels(image, levels=255, normalize=True):
    """An image -> float32 (3, H, W): its RGB values / levels (ToTensor; for mode F, a 16-bit
    greyscale image, levels = 65535 and the grey in all three channels), then (x − MEAN) / STD
    per channel (Normalize; not with normalize=False, for models trained on pixels in [0, 1] as
    minivlm's built-in images are)."""
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, levels)  # (bicubic overshoots)
        x = np.repeat(grey[None], 3, axis=0) / levels
    else:
        x = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / levels
    if not normalize:
        return x
    mean, std = (np.array(v, dtype=np.float32)[:, None, None] for v in (MEAN, STD))
    return (x - mean) / std


def preprocess(image, image_size=224, normalize=True):
    """A PIL image of any size and mode -> CLIP's input, float32 (3, image_size, image_size).
    ImageSizeError for an image of more than MAX_PIXELS pixels, before or after resizing."""
    check_size(image.size, image_size)
    levels = 65535 if image.mode in SIXTEEN_BIT_GREY else 255
    if levels == 65535:
        image = image.convert("F")
    return to_pixels(center_crop(resize_shortest_side(image, image_size), image_size), levels,
                     normalize)


def load_images(paths, image_size=224, normalize=True):
    """Image files -> float32 (N, 3, image_size, image_size) (see to_pixels for normalize)."""
    pixels = []
    for path in paths:
        try:
            with warnings.catch_warnings():   # Pillow's warning of a large image: ours is an error
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(path)
            with image:
                pixels.append(preprocess(image, image_size, normalize))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such image file") from None
        except (ImageSizeError, Image.DecompressionBombError) as error:
            raise ImageSizeError(f"{path}: {error}") from None
        except (OSError, SyntaxError, ValueError) as error:   # what Pillow raises for bad bytes
            raise ValueError(f"{path}: not an image that Pillow can read ({error})") from None
    return np.stack(pixels)
