"""Reading what a user uploads as a reference image, and preparing gallery images for display.

[`prepare_reference`] opens an uploaded file with clear refusals ([`InputError`], shown in the page) for what is not an
image, what is too large, and what cannot be read. Colour modes are converted the way the gallery side converts them
(`PIL.Image.convert("RGB")`, as `extract_image_features` and `mra-cir search` do), so a gallery image uploaded as a
reference gives the same features as its gallery row; 16-bit and floating-point greyscale images, which that
conversion would clip to white, are scaled to 8 bits first.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: the largest reference image accepted, in pixels (40 megapixels: a 7,000 x 5,700 photograph)
MAX_PIXELS = 40_000_000
#: gallery images smaller than this (pixels, longest side) are enlarged for display, without smoothing
DISPLAY_MIN_SIDE = 160
#: 16-bit and 32-bit integer / float modes that `convert("RGB")` would clip
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class InputError(ValueError):
    """A problem with what the user gave (an image, a text, a setting): its message is shown in the page as it is."""


def _to_eight_bits(image: Image.Image) -> Image.Image:
    """A 16-bit / 32-bit integer or float greyscale image as 8-bit `"L"`: integers are read as 16-bit values, floats
    in [0, 1] are scaled by 255 (others are clipped to [0, 255])."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        values = values * 255.0 if values.size and np.nanmax(values) <= 1.0 else values
    else:
        values = values / 257.0
    return Image.fromarray(np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8), mode="L")


def prepare_reference(source: str | os.PathLike | Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An uploaded reference image as an RGB `PIL.Image`, or an [`InputError`] saying what is wrong with it.

    Args:
        source (`str`, `os.PathLike` or `PIL.Image.Image`): the uploaded file (or an image already opened).
        max_pixels (`int`, defaults to `MAX_PIXELS`): larger images are refused (the decompression-bomb guard of PIL
            is far above it).

    Returns:
        `PIL.Image.Image` in mode `"RGB"`, EXIF orientation applied, first frame of an animation.

    Raises:
        [`InputError`]: not an image, an SVG, too many pixels, a damaged file, or a colour mode that cannot be shown
        in RGB.

    Example:

    ```python
    >>> prepare_reference("photo_cmyk.jpg").mode
    'RGB'
    ```
    """
    name = Path(source).name if not isinstance(source, Image.Image) else "the image"
    if isinstance(source, Image.Image):
        image = source
    else:
        if Path(source).suffix.lower() == ".svg":
            raise InputError(f"{name} is an SVG drawing: upload a raster image (PNG, JPEG, WebP, ...)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source)
        except Image.DecompressionBombError:
            raise InputError(f"{name} is far too large (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels)") from None
        except UnidentifiedImageError:
            raise InputError(f"{name} is not an image (PNG, JPEG, WebP, GIF, BMP or TIFF are accepted)") from None
        except OSError as err:
            raise InputError(f"{name} cannot be read: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(
            f"{name} is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); the app accepts up to "
            f"{max_pixels / 1e6:.0f} megapixels: resize it"
        )
    if width < 1 or height < 1:
        raise InputError(f"{name} has no pixels ({width} x {height})")
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in WIDE_MODES:
            image = _to_eight_bits(image)
        return image.convert("RGB") if image.mode != "RGB" else image
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f"{name} cannot be read as an image ({image.mode} mode): {err}") from None


def display_image(image: Image.Image, min_side: int = DISPLAY_MIN_SIDE) -> Image.Image:
    """`image` for display: small images (such as the quickstart's 32-pixel scenes) are enlarged by a whole factor
    with nearest-neighbour sampling, so the browser shows sharp pixels instead of a blur."""
    factor = -(-min_side // max(1, max(image.size)))
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def placeholder_image(text: str, size: int = DISPLAY_MIN_SIDE) -> Image.Image:
    """A grey tile carrying `text`: what a result shows when its gallery image file is not available."""
    from PIL import ImageDraw

    tile = Image.new("RGB", (size, size), (225, 225, 225))
    ImageDraw.Draw(tile).multiline_text((8, size // 2 - 12), text[:22] + "\n(image not found)", fill=(60, 60, 60))
    return tile


__all__ = ["InputError", "MAX_PIXELS", "display_image", "placeholder_image", "prepare_reference"]
