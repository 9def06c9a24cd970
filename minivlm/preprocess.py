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
"""
import numpy as np
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)  # of CLIP's training images, per RGB channel
STD = (0.26862954, 0.26130258, 0.27577711)


def resize_shortest_side(image, size):
    """Bicubic resize so that the shorter side is `size` and the longer int(size·long/short),
    as torchvision's Resize(size)."""
    width, height = image.size
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    return image.resize(new_size, Image.Resampling.BICUBIC)


def center_crop(image, size):
    """The central size×size square; offsets round((W − size) / 2), as torchvision's CenterCrop
    (Python's round: half to even)."""
    width, height = image.size
    left, top = round((width - size) / 2), round((height - size) / 2)
    return image.crop((left, top, left + size, top + size))


def to_pixels(image, normalize=True):
    """An RGB image -> float32 (3, H, W): values / 255 (ToTensor), then (x − MEAN) / STD per
    channel (Normalize; not with normalize=False, for models trained on pixels in [0, 1] as
    minivlm's built-in images are)."""
    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255
    if not normalize:
        return x
    mean, std = (np.array(v, dtype=np.float32)[:, None, None] for v in (MEAN, STD))
    return (x - mean) / std


def preprocess(image, image_size=224, normalize=True):
    """A PIL image of any size and mode -> CLIP's input, float32 (3, image_size, image_size)."""
    image = center_crop(resize_shortest_side(image, image_size), image_size)
    return to_pixels(image.convert("RGB"), normalize)


def load_images(paths, image_size=224, normalize=True):
    """Image files -> float32 (N, 3, image_size, image_size) (see to_pixels for normalize)."""
    pixels = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pixels.append(preprocess(image, image_size, normalize))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such image file") from None
        except (OSError, SyntaxError, ValueError) as error:   # what Pillow raises for bad bytes
            raise ValueError(f"{path}: not an image that Pillow can read ({error})") from None
    return np.stack(pixels)
