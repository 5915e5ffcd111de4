"""Input images: every odd format is normalised, every bad one is refused with one line."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sketchmind import Canvas, ImageInputError, load_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions but holds almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="is a directory"):
        load_image(tmp_path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is text, not pixels")
    with pytest.raises(ImageInputError, match="not an image file"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(ImageInputError, match=r"100000x100000 is 10000\.0 Mpx, over the limit of 64\.0 Mpx"):
        load_image(path)


def test_pixel_limit_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageInputError, match="over the limit"):
        load_image(data, max_pixels=5000)
    monkeypatch.setenv("SKETCHMIND_MAX_PIXELS", "5000")
    with pytest.raises(ImageInputError, match="over the limit"):
        load_image(data)
    assert load_image(data, max_pixels=10_000).shape == (100, 100, 3)


def test_rgba_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    array = load_image(_encode(rgba, "PNG"))
    assert array.shape == (4, 4, 3) and array.dtype == np.uint8
    assert tuple(array[0, 0]) == (255, 0, 0) and tuple(array[1, 1]) == (255, 255, 255)


def test_palette_with_transparency() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((2, 2), 1)
    image.info["transparency"] = 0
    array = load_image(_encode(image, "PNG", transparency=0))
    assert tuple(array[0, 0]) == (255, 255, 255) and tuple(array[2, 2]) == (0, 255, 0)


def test_grayscale_and_16_bit() -> None:
    gray = load_image(_encode(Image.new("L", (3, 2), 77), "PNG"))
    assert gray.shape == (2, 3, 3) and (gray == 77).all()
    deep = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert (load_image(_encode(deep, "PNG")) == 255).all()
    assert (load_image(np.full((2, 2), 32896, dtype=np.uint16)) == 128).all()


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    array = load_image(_encode(cmyk, "JPEG", quality=95))
    assert array.shape == (8, 8, 3)
    r, g, b = array[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_exif_rotation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    array = load_image(_encode(image, "JPEG", exif=exif.tobytes()))
    assert array.shape == (40, 20, 3)


def test_arrays_are_normalised() -> None:
    assert load_image(np.zeros((5, 6), np.float32)).shape == (5, 6, 3)
    assert (load_image(np.ones((5, 6, 3), np.float64)) == 255).all()
    assert load_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    with pytest.raises(ImageInputError, match="NaN"):
        load_image(np.full((2, 2), np.nan))
    with pytest.raises(ImageInputError, match="not an image"):
        load_image(np.zeros((2, 2, 7), np.uint8))


def test_canvas_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError) as error:
        Canvas(tmp_path / "missing.jpg")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (256, 256, (252, 252)),  # rounded to multiples of 28, already within the limit
        (1080, 1920, (420, 784)),  # scaled down under 351,232 px (ViLaSR's limit)
        (10, 10, (56, 56)),  # scaled up to the minimum area
    ],
)
def test_smart_resize_matches_qwen_vl_utils(height: int, width: int, expected: tuple[int, int]) -> None:
    from sketchmind.images import smart_resize, smart_resize_shape

    assert smart_resize_shape(height, width, max_pixels=351_232) == expected
    resized = smart_resize(np.zeros((height, width, 3), np.uint8), max_pixels=351_232)
    assert resized.shape[:2] == expected and resized.shape[0] * resized.shape[1] <= 351_232


def test_concurrent_loads_leave_the_warning_filters_as_they_were() -> None:
    """Silencing Pillow per call must not leave an 'ignore' filter behind when threads interleave."""
    import threading
    import warnings

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, format="PNG")
    data, before = buffer.getvalue(), list(warnings.filters)

    def load_many() -> None:
        for _ in range(300):
            load_image(data)

    threads = [threading.Thread(target=load_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == before
