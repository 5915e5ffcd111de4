"""Load any image a user hands us into one canonical form: a contiguous RGB uint8 array.

Everything odd is normalised here, once, so the rest of the code can assume plain RGB: EXIF
rotation, alpha (composited on white, as a viewer shows it), palette, grayscale, 16-bit, float and
CMYK. Anything that cannot be normalised raises ``ImageInputError`` with one line for the user.
Decompression bombs are refused from the header, before a single pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; override with SKETCHMIND_MAX_PIXELS
ImageSource = str | os.PathLike[str] | bytes | Image.Image | np.ndarray


class ImageInputError(ValueError):
    """An input image that cannot be used; ``str(error)`` is one line for the user."""


def max_pixels_default() -> int:
    """The pixel limit: ``SKETCHMIND_MAX_PIXELS`` if set, else 64 Mpx."""
    raw = os.environ.get("SKETCHMIND_MAX_PIXELS", "")
    return int(raw) if raw.isdigit() else DEFAULT_MAX_PIXELS


def _check_size(width: int, height: int, max_pixels: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageInputError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageInputError(
            f"{name}: {width}x{height} is {width * height / 1e6:.1f} Mpx, over the limit of "
            f"{max_pixels / 1e6:.1f} Mpx (raise it with SKETCHMIND_MAX_PIXELS)"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Normalise every PIL mode to RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            array = array / 257.0  # 65535 -> 255 exactly
        else:
            low, high = float(array.min()), float(array.max())
            array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _from_array(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageInputError(f"array of shape {array.shape} is not an image (want HxW, HxWx3 or HxWx4)")
    _check_size(array.shape[1], array.shape[0], max_pixels, "array")
    if array.dtype == np.uint16:
        array = np.rint(array / 257.0).astype(np.uint8)
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ImageInputError("array holds NaN or infinite values")
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise ImageInputError(f"array dtype {array.dtype} is not supported (want uint8, uint16 or float)")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = np.rint(array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(array)


# Pillow's bomb guard and Python's warning filters are process-wide; catch_warnings saves and restores
# them, which two threads interleaving would leave changed (an "ignore everything" filter stuck on for the
# process: seen with 8 threads loading at once). One re-entrant lock around every such section.
_PILLOW_GUARD = threading.RLock()


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Pillow's warnings (corrupt metadata it skips, several stderr lines) silenced, thread-safely."""
    with _PILLOW_GUARD, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _open_header(stream: io.BytesIO) -> Image.Image:
    """Open lazily (header only) with Pillow's global bomb guard lifted, so our own limit, which
    names the image size, is the one that speaks."""
    with _quiet_pillow():
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(stream)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from an encoded image's header alone, without decoding the pixels.

    None when Pillow cannot tell (not an image, truncated): ``load_image`` then says why, in one line.
    """
    try:
        with _quiet_pillow(), _open_header(io.BytesIO(data)) as image:
            return int(image.width), int(image.height)
    except Exception:  # any decoder failure means "unknown"; the caller's load_image words the error
        return None


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image from a path, bytes, a PIL image or an array as contiguous RGB uint8 (H, W, 3).

    Raises ``ImageInputError`` (one line) for missing files, non-images, truncated files and images
    over ``max_pixels`` (default: ``SKETCHMIND_MAX_PIXELS`` or 64 Mpx).
    """
    limit = max_pixels if max_pixels is not None else max_pixels_default()
    if isinstance(source, np.ndarray):
        return _from_array(source, limit)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, limit, "image")
        return np.ascontiguousarray(np.asarray(_to_rgb(ImageOps.exif_transpose(source))))
    if isinstance(source, bytes):
        name, stream = "image bytes", io.BytesIO(source)
        if not source:
            raise ImageInputError("image bytes are empty")
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise ImageInputError(f"{name}: no such file")
        if path.is_dir():
            raise ImageInputError(f"{name}: is a directory, not an image")
        if path.stat().st_size > 1 << 30:
            raise ImageInputError(f"{name}: file is over 1 GiB")
        stream = io.BytesIO(path.read_bytes())
    try:
        with _quiet_pillow(), _open_header(stream) as image:  # the outcome counts, not Pillow's warnings
            _check_size(image.width, image.height, limit, name)
            image.load()
            rgb = _to_rgb(ImageOps.exif_transpose(image))
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"{name}: truncated or corrupt image ({' '.join(str(exc).split())})") from None
    return np.ascontiguousarray(np.asarray(rgb))


def smart_resize_shape(
    height: int, width: int, *, factor: int = 28, min_pixels: int = 4 * 28 * 28, max_pixels: int = 16384 * 28 * 28
) -> tuple[int, int]:
    """Qwen-VL's target (height, width): sides multiples of ``factor``, area within the pixel limits.

    The same arithmetic as ``qwen_vl_utils.smart_resize``, so coordinates a Qwen-VL model writes refer
    to exactly the image we draw on.
    """
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def smart_resize(pixels: np.ndarray, *, max_pixels: int, factor: int = 28, min_pixels: int = 4 * 28 * 28) -> np.ndarray:
    """Resize RGB pixels as ``qwen_vl_utils.fetch_image`` does (PIL bicubic); unchanged if already fitting."""
    height, width = pixels.shape[:2]
    target = smart_resize_shape(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    if target == (height, width):
        return pixels
    resized = Image.fromarray(pixels, "RGB").resize((target[1], target[0]), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(resized))


MAX_ASPECT = 100  # Qwen-VL processors refuse images more elongated than 200:1; a model may crop such a sliver


def fit_pixels(image: Image.Image | np.ndarray, max_pixels: int | None) -> Image.Image:
    """``image`` as RGB PIL, downscaled (aspect kept, bicubic) to at most ``max_pixels`` pixels.

    The one downscale every model input goes through: inference (``HFPolicy``), SFT batches and GRPO
    rollouts, so a model is trained on the pixels it later sees. A view more elongated than
    ``MAX_ASPECT``:1 (a model's crop of a thin sliver) is first padded with white at its bottom or right,
    so the content keeps its pixel coordinates and the processor does not reject the whole batch.
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    pil = pil if pil.mode == "RGB" else pil.convert("RGB")
    if max(pil.width, pil.height) > MAX_ASPECT * min(pil.width, pil.height):
        short = math.ceil(max(pil.width, pil.height) / MAX_ASPECT)
        padded = Image.new("RGB", (max(pil.width, short), max(pil.height, short)), "white")
        padded.paste(pil, (0, 0))
        pil = padded
    if max_pixels and pil.width * pil.height > max_pixels:
        scale = math.sqrt(max_pixels / (pil.width * pil.height))
        pil = pil.resize((max(1, int(pil.width * scale)), max(1, int(pil.height * scale))), Image.Resampling.BICUBIC)
    return pil
