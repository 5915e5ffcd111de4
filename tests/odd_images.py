"""Odd image files, built deterministically, and the contract every one of them must meet.

``odd_images(n)`` yields named special cases first (decompression bombs, 1x1, palette, 16-bit, float
TIFF, CMYK, LA/RGBA, animated GIF/APNG, EXIF rotations, wrong extensions, empty and random files),
then random truncations and byte flips of valid PNG/JPEG/GIF/WebP/BMP/TIFF files, so the first ``n``
are the same for any ``n``. ``exercise`` checks one: it must load as contiguous RGB uint8 and survive
``Canvas`` + one drawing action + ``fit_pixels``, or raise ``ImageInputError`` with one line.

Used by ``tests/test_image_fuzz.py`` (a subset) and ``tools/fuzz.py`` (1,000).
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from sketchmind import Canvas, ImageInputError, View, load_image
from sketchmind.images import fit_pixels

Expect = Literal["load", "refuse", "either"]
FUZZ_MAX_PIXELS = 4_000_000  # mutated headers may claim anything: keep what they decode to small and quick
RED, BLUE = (255, 0, 0), (0, 0, 255)


@dataclass(frozen=True)
class OddImage:
    """One input file: what it is called, its bytes, and what loading it must do."""

    name: str
    data: bytes
    suffix: str = ".png"
    expect: Expect = "either"
    check: Callable[[np.ndarray], None] | None = None  # more assertions on the loaded pixels
    max_pixels: int | None = None  # None: the loader's default (64 Mpx)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """``image`` saved in ``fmt`` (Pillow), as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but holds almost no data: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    )


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame claim ``width`` x ``height`` (at most 65535 each)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def _scene(width: int = 48, height: int = 32) -> Image.Image:
    """A small RGB picture with structure (gradient, a red block), so codecs have something to encode."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=2)
    pixels[: height // 2, : width // 2] = RED
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


@cache
def valid_files() -> dict[str, tuple[bytes, str]]:
    """Small valid files in every common format: name -> (bytes, suffix)."""
    scene = _scene()
    return {
        "png": (encode(scene, "PNG"), ".png"),
        "jpeg": (encode(scene, "JPEG", quality=90), ".jpg"),
        "gif": (encode(scene.convert("P"), "GIF"), ".gif"),
        "webp": (encode(scene, "WEBP", quality=80), ".webp"),
        "bmp": (encode(scene, "BMP"), ".bmp"),
        "tiff": (encode(scene, "TIFF"), ".tif"),
    }


# ---------------------------------------------------------------------------------------------------
# Checks on loaded pixels
# ---------------------------------------------------------------------------------------------------


def _shape(height: int, width: int) -> Callable[[np.ndarray], None]:
    def check(pixels: np.ndarray) -> None:
        assert pixels.shape == (height, width, 3), pixels.shape

    return check


def _near(y: int, x: int, colour: tuple[int, int, int], tolerance: int = 40) -> Callable[[np.ndarray], None]:
    def check(pixels: np.ndarray) -> None:
        got = pixels[y, x].astype(int)
        assert np.abs(got - colour).max() <= tolerance, f"pixel ({x}, {y}) is {got.tolist()}, want {colour}"

    return check


def _all(*checks: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], None]:
    def check(pixels: np.ndarray) -> None:
        for one in checks:
            one(pixels)

    return check


# ---------------------------------------------------------------------------------------------------
# Special cases
# ---------------------------------------------------------------------------------------------------


def _exif_rotated(orientation: int) -> bytes:
    """A 40 x 20 JPEG, red in its top-left quarter, tagged to be shown rotated (6: 90° clockwise, 8: 90° ccw)."""
    pixels = np.full((20, 40, 3), 255, dtype=np.uint8)
    pixels[:10, :20] = RED
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


def _frames(fmt: str) -> bytes:
    """Two 16 x 16 frames, red then blue: the loader must use the first."""
    first, second = Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)
    return encode(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)


def _cv2_png(pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return bytes(data.tobytes())


def _palette(transparent: bool) -> bytes:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    return encode(image, "PNG", **({"transparency": 0} if transparent else {}))


def special_cases() -> list[OddImage]:
    """Every named odd input, with what it must do."""
    gray16 = np.full((6, 5), 65535, dtype=np.uint16)
    gray16[0, 0] = 0
    bgr16 = np.zeros((4, 4, 3), dtype=np.uint16)
    bgr16[..., 2] = 65535  # OpenCV writes BGR: this is pure red
    rgba = Image.new("RGBA", (10, 10), (0, 0, 255, 0))  # fully transparent blue: white on screen
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    la = Image.new("LA", (10, 10), (0, 0))
    png, jpeg = valid_files()["png"][0], valid_files()["jpeg"][0]
    random_bytes = random.Random(1).randbytes(4096)
    return [
        OddImage("bomb-png-100k", png_claiming(100_000, 100_000), expect="refuse"),
        OddImage("bomb-gif-65k", gif_claiming(65_535, 65_535), ".gif", expect="refuse"),
        OddImage("bomb-png-zero-width", png_claiming(0, 100), expect="refuse"),
        OddImage("real-9000x9000", _big_png(), expect="refuse"),
        OddImage(
            "tiny-1x1-png", encode(Image.new("RGB", (1, 1), RED), "PNG"), expect="load", check=_near(0, 0, RED, 0)
        ),
        OddImage("tiny-1x1-jpeg", encode(Image.new("RGB", (1, 1), RED), "JPEG"), ".jpg", expect="load"),
        OddImage("tiny-1x1-gif", encode(Image.new("P", (1, 1), 0), "GIF"), ".gif", expect="load"),
        OddImage("sliver-1x3000", encode(Image.new("L", (3000, 1), 0), "PNG"), expect="load", check=_shape(1, 3000)),
        OddImage("palette", _palette(False), expect="load", check=_all(_near(0, 0, (0, 0, 0), 0), _near(1, 1, RED, 0))),
        OddImage("palette-transparent", _palette(True), expect="load", check=_near(0, 0, (255, 255, 255), 0)),
        OddImage(
            "gray-16bit-cv2",
            _cv2_png(gray16),
            expect="load",
            check=_all(_near(0, 0, (0, 0, 0), 0), _near(1, 1, (255, 255, 255), 0)),
        ),
        OddImage("rgb-16bit-cv2", _cv2_png(bgr16), expect="load", check=_near(0, 0, RED, 1)),
        OddImage(
            "float-tiff",
            encode(Image.fromarray(np.linspace(-3, 7, 60, dtype=np.float32).reshape(6, 10), "F"), "TIFF"),
            ".tif",
            expect="load",
            check=_all(_near(0, 0, (0, 0, 0), 0), _near(5, 9, (255, 255, 255), 0)),
        ),
        OddImage(
            "cmyk-jpeg",
            encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"),
            ".jpg",
            expect="load",
            check=_near(4, 4, RED),
        ),
        OddImage("la-png", encode(la, "PNG"), expect="load", check=_near(3, 3, (255, 255, 255), 0)),
        OddImage(
            "rgba-png",
            encode(rgba, "PNG"),
            expect="load",
            check=_all(_near(0, 0, BLUE, 0), _near(5, 5, (255, 255, 255), 0)),
        ),
        OddImage(
            "bilevel-bmp",
            encode(Image.new("1", (9, 7), 1), "BMP"),
            ".bmp",
            expect="load",
            check=_near(3, 3, (255, 255, 255), 0),
        ),
        OddImage("animated-gif", _frames("GIF"), ".gif", expect="load", check=_near(8, 8, RED, 0)),
        OddImage("apng", _frames("PNG"), expect="load", check=_near(8, 8, RED, 0)),
        OddImage("webp", valid_files()["webp"][0], ".webp", expect="load"),
        # Orientation 6 shows the 40x20 picture rotated 90° clockwise: 20 wide, 40 tall, red at the top right.
        OddImage(
            "exif-orientation-6",
            _exif_rotated(6),
            ".jpg",
            expect="load",
            check=_all(_shape(40, 20), _near(5, 15, RED), _near(5, 5, (255, 255, 255))),
        ),
        # Orientation 8: rotated 90° counter-clockwise, red at the bottom left.
        OddImage(
            "exif-orientation-8",
            _exif_rotated(8),
            ".jpg",
            expect="load",
            check=_all(_shape(40, 20), _near(34, 5, RED), _near(5, 5, (255, 255, 255))),
        ),
        OddImage("png-named-jpg", png, ".jpg", expect="load", check=_shape(32, 48)),
        OddImage("jpeg-named-gif", jpeg, ".gif", expect="load", check=_shape(32, 48)),
        OddImage("png-no-extension", png, "", expect="load"),
        OddImage("text-named-png", b"this is not an image\n", expect="refuse"),
        OddImage("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', ".svg", expect="refuse"),
        OddImage("zero-bytes", b"", expect="refuse"),
        OddImage("random-4k", random_bytes, expect="refuse"),
        OddImage("png-magic-then-random", png[:8] + random_bytes[:500], expect="refuse"),
        OddImage("png-cut-after-header", png[:40], expect="refuse"),
        OddImage("jpeg-cut-in-half", jpeg[: len(jpeg) // 2], ".jpg", expect="refuse"),
        # Cut inside its tag directory: Pillow warns (two stderr lines each) before it gives up.
        OddImage("tiff-cut-in-tags", valid_files()["tiff"][0][:60], ".tif", expect="refuse"),
    ]


@cache
def _big_png() -> bytes:
    """A real 9000 x 9000 PNG (81 Mpx, over the default limit), compressed small: it is all black."""
    return encode(Image.new("L", (9000, 9000), 0), "PNG", compress_level=1)


# ---------------------------------------------------------------------------------------------------
# Random mutations
# ---------------------------------------------------------------------------------------------------


def mutated(rng: random.Random, index: int) -> OddImage:
    """One random truncation, header flip, body flip or magic-prefixed garbage of a valid file."""
    kind, (data, suffix) = rng.choice(sorted(valid_files().items()))
    how = rng.choice(["truncate", "header", "header", "body", "garbage"])
    buffer = bytearray(data)
    if how == "truncate":
        buffer = buffer[: rng.randrange(len(buffer))]
    elif how in ("header", "body"):
        span = min(len(buffer), 64) if how == "header" else len(buffer)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(span)
            buffer[at] = rng.choice([0, 0xFF, buffer[at] ^ (1 << rng.randrange(8)), rng.randrange(256)])
    else:
        buffer = buffer[: rng.randint(2, 16)] + rng.randbytes(rng.randint(0, 2000))
    return OddImage(f"{index:04d}-{kind}-{how}", bytes(buffer), suffix, max_pixels=FUZZ_MAX_PIXELS)


def odd_images(n: int, seed: int = 0) -> Iterator[OddImage]:
    """The first ``n`` odd images: every special case (as many as fit), then random mutations."""
    specials = special_cases()
    yield from specials[:n]
    rng = random.Random(seed)
    for index in range(len(specials), n):
        yield mutated(rng, index)


# ---------------------------------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------------------------------


def exercise(case: OddImage, scratch: Path) -> Literal["loaded", "refused"]:
    """Write ``case`` to a file in ``scratch`` and check the loader's contract on it.

    Returns whether it loaded or was refused; raises ``AssertionError`` when the contract breaks, and
    lets any exception other than ``ImageInputError`` through (that is the bug fuzzing looks for). A
    warning counts as a failure too: on the command line it is extra stderr lines around the one error.
    """
    path = scratch / f"{case.name}{case.suffix}"
    path.write_bytes(case.data)
    try:
        with warnings.catch_warnings(record=True) as warned:  # a warning is stderr noise around the one line
            warnings.simplefilter("always")
            pixels = load_image(path, max_pixels=case.max_pixels)
        assert not warned, f"{case.name}: warned {warned[0].message}"
    except ImageInputError as error:
        assert not warned, f"{case.name}: warned {warned[0].message}"
        message = str(error)
        assert message and "\n" not in message and "\r" not in message, f"{case.name}: message {message!r}"
        assert case.expect != "load", f"{case.name} should load, got: {message}"
        return "refused"
    finally:
        path.unlink()
    assert case.expect != "refuse", f"{case.name} should be refused, loaded {pixels.shape}"
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, (pixels.dtype, pixels.shape)
    assert pixels.flags.c_contiguous and pixels.size > 0
    if case.check is not None:
        case.check(pixels)
    height, width = pixels.shape[:2]
    canvas = Canvas(pixels)
    view = canvas.apply("box", {"bbox": [0, 0, width, height], "label": "all"})
    assert isinstance(view, View), f"{case.name}: drawing failed: {view}"
    fitted = fit_pixels(view.image, 64 * 64)
    assert fitted.mode == "RGB" and fitted.width * fitted.height <= 64 * 64, fitted.size
    return "loaded"
