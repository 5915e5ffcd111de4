"""Odd image files: each loads as RGB uint8 that draws, or is refused with one line; never anything else.

CI runs the first 150 of ``odd_images`` (every named special case, then random truncations and byte
flips); ``tools/fuzz.py`` runs 1,000. A few go through the real command line in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from odd_images import OddImage, exercise, odd_images

from sketchmind import ImageInputError, load_image

CI_IMAGES = 150
CASES = list(odd_images(CI_IMAGES))
BY_NAME = {case.name: case for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_odd_image_loads_or_is_refused_in_one_line(case: OddImage, tmp_path: Path) -> None:
    outcome = exercise(case, tmp_path)
    assert outcome in ("loaded", "refused")


def test_the_subset_has_both_outcomes_among_mutations(tmp_path: Path) -> None:
    """The random part must exercise both paths, or it tests nothing."""
    outcomes = [exercise(case, tmp_path) for case in CASES if case.name[:4].isdigit()]
    assert len(outcomes) >= 100
    assert outcomes.count("loaded") >= 10 and outcomes.count("refused") >= 10, outcomes


@pytest.mark.parametrize(("name", "fragment"), [("bomb-png-100k", "100000x100000"), ("real-9000x9000", "9000x9000")])
def test_bombs_are_refused_naming_their_size(name: str, fragment: str) -> None:
    with pytest.raises(ImageInputError, match=f"{fragment} is .* over the limit of 64.0 Mpx"):
        load_image(BY_NAME[name].data)


def _draw(image: Path) -> subprocess.CompletedProcess[str]:
    call = '{"name": "box", "arguments": {"bbox": [0, 0, 1, 1]}}'
    return subprocess.run(
        [sys.executable, "-m", "sketchmind", "draw", str(image), call], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("name", ["bomb-gif-65k", "tiff-cut-in-tags", "random-4k"])
def test_the_cli_refuses_bad_images_with_one_stderr_line(name: str, tmp_path: Path) -> None:
    case = BY_NAME[name]
    image = tmp_path / f"input{case.suffix}"
    image.write_bytes(case.data)
    result = _draw(image)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sketchmind: error: {image}"), result.stderr


def test_the_cli_draws_on_an_exif_rotated_photo(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(BY_NAME["exif-orientation-6"].data)
    result = _draw(image)
    assert result.returncode == 0, result.stderr
    assert "view 2: box on view 1 (20x40)" in result.stdout, result.stdout  # shown upright: 20 wide, 40 tall
