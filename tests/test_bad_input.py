"""Bad recipes, bad benchmark folders and bad arguments: one line on stderr, exit code 2, never a traceback.

Driven through the real entry point (``sketchmind.cli.main``), plus a few real subprocesses to prove no
traceback or usage block reaches stderr.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from sketchmind.cli import main

ROOT = Path(__file__).resolve().parents[1]
VSP_LEVEL3 = ROOT / "data" / "vsp-maze-examples" / "maps" / "level3"
MAZE = VSP_LEVEL3.parent / "level4" / "img" / "0.png"
BOX = '{"name": "box", "arguments": {"bbox": [0, 0, 10, 10]}}'


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    """Run the CLI; assert exit code 2 and exactly one stderr line; return that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("sketchmind"), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# Recipes: sketchmind train RECIPE
# ---------------------------------------------------------------------------------------------------

VALID = "name: x\noutput: {out}\nmodel: {tiny: {}}\n"


def _laughs(levels: int) -> str:
    """'Billion laughs': each level an alias list of the one before, 2**levels strings once expanded."""
    lines = ["l0: &l0 [lol, lol]"] + [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, levels)]
    return (
        "\n".join(lines)
        + f"\nname: x\noutput: run\nmodel: {{base: m}}\nstages: {{sft: {{lora: {{r: *l{levels - 1}}}}}}}\n"
    )


RECIPES: list[tuple[str, bytes | str, str]] = [
    ("not yaml", "a: [unclosed\nb: {", "not valid YAML"),
    ("a list", "- name\n- output\n", "top level must be a mapping of recipe fields, not list"),
    ("a scalar", "42\n", "top level must be a mapping of recipe fields, not int"),
    ("empty", "", "empty recipe"),
    ("only a comment", "# nothing\n", "empty recipe"),
    ("unknown key", VALID + "epochs: 3\n", "epochs: Extra inputs are not permitted"),
    ("unknown nested key", VALID + "stages: {sft: {lr: 1}}\n", "stages.sft.lr: Extra inputs are not permitted"),
    ("wrong type", VALID + "seed: seven\n", "seed: Input should be a valid integer"),
    ("wrong nested type", VALID + "data: {families: maze}\n", "data.families: Input should be a valid list"),
    (
        "negative rate",
        VALID + "stages: {sft: {learning_rate: -1.0e-4}}\n",
        "stages.sft.learning_rate: Input should be greater than 0",
    ),
    ("zero batch", VALID + "stages: {sft: {batch_size: 0}}\n", "stages.sft.batch_size: Input should be greater than 0"),
    ("negative seed", VALID + "seed: -1\n", "seed: Input should be greater than or equal to 0"),
    (
        "fraction over 1",
        VALID + "data: {reflective_fraction: 1.5}\n",
        "data.reflective_fraction: Input should be less than or equal to 1",
    ),
    (
        "nan rate",
        VALID + "stages: {grpo: {learning_rate: .nan}}\n",
        "stages.grpo.learning_rate: Input should be a finite number",
    ),
    ("empty output", "name: x\noutput: ''\nmodel: {base: m}\n", "output: String should have at least 1 character"),
    ("unknown family", VALID + "data: {families: [sudoku]}\n", "data: Value error, unknown task family 'sudoku'"),
    ("level out of range", VALID + "eval: {levels: {maze: [99]}}\n", "eval: Value error, maze has levels 1-5, not 99"),
    ("binary", random.Random(0).randbytes(4096), "not a text file (not UTF-8)"),
    ("huge", VALID + "# padding\n" * 200_000, "is too big for a recipe"),
    ("deeply nested", "a: " + "[" * 50_000, "not valid YAML"),
    ("billion laughs", _laughs(60), "YAML aliases expand to over 100,000 values"),
    (
        "recursive alias",
        VALID + "stages: {sft: {lora: &loop {r: *loop}}}\n",
        "YAML aliases expand to over 100,000 values",
    ),
]


@pytest.mark.parametrize(("content", "fragment"), [r[1:] for r in RECIPES], ids=[r[0] for r in RECIPES])
def test_bad_recipe(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | str, fragment: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    if isinstance(content, bytes):
        recipe.write_bytes(content)
    else:
        recipe.write_text(content.replace("{out}", str(tmp_path / "run")), encoding="utf-8")
    line = usage_error(capsys, "train", recipe)
    assert line.startswith(f"sketchmind: error: {recipe}: ") and fragment in line, line
    assert not (tmp_path / "run").exists()  # refused before anything ran


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "laughs.yaml"
    recipe.write_text(_laughs(60), encoding="utf-8")  # 2**60 strings expanded: it cannot have been
    tracemalloc.start()
    try:
        usage_error(capsys, "train", recipe)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(("path", "fragment"), [("missing.yaml", "no such recipe file"), (".", "is a directory")])
def test_recipe_path_is_not_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, path: str, fragment: str
) -> None:
    assert fragment in usage_error(capsys, "train", tmp_path / path)


# ---------------------------------------------------------------------------------------------------
# Benchmark data: sketchmind bench vsp --data DIR
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def vsp(tmp_path: Path) -> Path:
    """A writable copy of VSP's level3 examples, as ``DIR/maps/level3``."""
    shutil.copytree(VSP_LEVEL3, tmp_path / "data" / "maps" / "level3")
    return tmp_path / "data"


def bench_vsp(data: Path, *extra: str) -> list[str]:
    """``bench vsp`` with the expert on ``data``, into a fresh run folder next to it."""
    out = data.parent / f"run-{len(list(data.parent.glob('run-*')))}"
    return ["bench", "vsp", "--model", "expert", "--data", str(data), "--out", str(out), *extra]


def test_bench_data_folder_missing_or_empty(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "no such VSP folder" in usage_error(capsys, *bench_vsp(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    assert "no levelN folders" in usage_error(capsys, *bench_vsp(tmp_path / "empty"))
    (tmp_path / "file").write_text("x")
    assert "no such VSP folder" in usage_error(capsys, *bench_vsp(tmp_path / "file"))


def test_bench_data_wrong_layout(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "data" / "maps" / "level3" / "images").mkdir(parents=True)
    assert "level3: no table/K.txt files" in usage_error(capsys, *bench_vsp(tmp_path / "data"))


def test_bench_data_without_the_asked_levels(capsys: pytest.CaptureFixture[str], vsp: Path) -> None:
    assert "no level9 folder (it has levels 3)" in usage_error(capsys, *bench_vsp(vsp, "--levels", "9"))


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("img/2.png", b"\x89PNG\r\n\x1a\n garbage", "img/2.png: "),
        ("img/2.png", None, "img/2.png: no such file"),
        ("table/2.txt", b"| Row 1 | ? | ? |\n", "table/2.txt: not a VSP map table"),
        ("table/2.txt", b"lorem ipsum\n", "table/2.txt: not a VSP map table"),
        ("table/2.txt", b"\xff\xfe\x00garbage", "table/2.txt: cannot read"),
        ("answer/2.txt", b"I do not know.\n", "answer/2.txt: no 'Action plan:' line"),
    ],
    ids=["corrupt image", "missing image", "bad symbols", "no rows", "binary table", "answer without plan"],
)
def test_bench_data_bad_file(
    capsys: pytest.CaptureFixture[str], vsp: Path, name: str, content: bytes | None, fragment: str
) -> None:
    target = vsp / "maps" / "level3" / name
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)
    line = usage_error(capsys, *bench_vsp(vsp))
    assert fragment in line, line
    assert not list(vsp.parent.glob("run-*/results.jsonl"))


def test_bench_data_without_answers(capsys: pytest.CaptureFixture[str], vsp: Path) -> None:
    """Answer files are optional (the shortest plan is the reference), unless the goal cannot be reached."""
    shutil.rmtree(vsp / "maps" / "level3" / "answer")
    assert main(bench_vsp(vsp, "--n", "1")) == 0
    assert "1 solved now" in capsys.readouterr().out
    (vsp / "maps" / "level3" / "table" / "0.txt").write_text(
        "| | Col 1 | Col 2 | Col 3 |\n| Row 1 | @ | # | _ |\n| Row 2 | # | _ | _ |\n| Row 3 | _ | _ | * |\n"
    )
    assert "table/0.txt: the goal cannot be reached" in usage_error(capsys, *bench_vsp(vsp))


# ---------------------------------------------------------------------------------------------------
# Command-line arguments
# ---------------------------------------------------------------------------------------------------

ARGUMENTS: list[tuple[str, list[str], str]] = [
    ("no subcommand", [], "the following arguments are required: command"),
    ("unknown subcommand", ["paint"], "invalid choice: 'paint'"),
    ("unknown flag", ["draw", "--blank", BOX, "--colour", "red"], "unrecognized arguments: --colour red"),
    ("missing positional", ["draw"], "the following arguments are required: calls"),
    ("bad choice", ["solve", "--blank", "q", "--protocol", "xml"], "argument --protocol: invalid choice: 'xml'"),
    ("n not a number", ["bench", "maze", "--n", "abc"], "argument --n: 'abc' is not a positive integer"),
    ("n zero", ["bench", "maze", "--n", "0"], "argument --n: '0' is not a positive integer"),
    (
        "negative turns",
        ["solve", "--blank", "q", "--max-turns", "-1"],
        "argument --max-turns: '-1' is not a positive integer",
    ),
    (
        "nan temperature",
        ["solve", "--blank", "q", "--temperature", "nan"],
        "argument --temperature: 'nan' is not a number >= 0",
    ),
    ("zero timeout", ["solve", "--blank", "q", "--timeout", "0"], "argument --timeout: '0' is not a positive number"),
    ("negative seed", ["bench", "maze", "--seed", "-3"], "argument --seed: '-3' is not an integer >= 0"),
    ("fraction over 1", ["data", "synth", "--out", "x", "--reflective", "2"], "'2' is not a fraction between 0 and 1"),
    ("port out of range", ["serve", "--model", "m", "--port", "70000"], "'70000' is not a port (0-65535)"),
    (
        "level out of range",
        ["bench", "frozenlake", "--model", "expert", "--levels", "9"],
        "frozenlake has levels 3-8, not 9",
    ),
    ("level not a number", ["bench", "maze", "--model", "expert", "--levels", "three"], "--levels 'three': use levels"),
    ("levels backwards", ["bench", "maze", "--model", "expert", "--levels", "5-3"], "--levels '5-3': use levels"),
    ("levels unbounded", ["bench", "maze", "--model", "expert", "--levels", "1-999999999"], "--levels '1-999999999'"),
    ("unknown family", ["bench", "sudoku", "--model", "expert"], "unknown task family 'sudoku'"),
    ("unknown data task", ["data", "synth", "--out", "x", "--tasks", "sudoku"], "--tasks: unknown sudoku"),
    ("unknown stage", ["train", str(ROOT / "policies" / "micro.yaml"), "--stage", "nap"], "--stage: unknown nap"),
    ("image and blank", ["solve", str(MAZE), "q", "--blank"], "give either an IMAGE or --blank"),
]


@pytest.mark.parametrize(("argv", "fragment"), [a[1:] for a in ARGUMENTS], ids=[a[0] for a in ARGUMENTS])
def test_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    line = usage_error(capsys, *argv)
    assert fragment in line, line


def test_help_is_still_argparse_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sketchmind bench") and "--levels" in out


@pytest.mark.parametrize("command", ["draw", "solve"])
def test_bad_image_paths(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str) -> None:
    second = BOX if command == "draw" else "what is shown?"
    extra = ["--model", "expert"] if command == "solve" else []
    assert "no such file" in usage_error(capsys, command, tmp_path / "missing.png", second, *extra)
    assert "is a directory, not an image" in usage_error(capsys, command, tmp_path, second, *extra)


def test_a_10_mb_question_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = usage_error(capsys, "solve", "--blank", "?" * 10_000_000, "--model", "expert")
    assert "the question is 10,000,000 characters, over the limit of 100,000" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["draw", "--blank", BOX, "--save", "{file}"],
        ["solve", "--blank", "q", "--model", "expert", "--save", "{file}"],
        ["bench", "maze", "--model", "expert", "--out", "{file}"],
        ["data", "synth", "--out", "{file}"],
    ],
    ids=["draw --save", "solve --save", "bench --out", "data --out"],
)
def test_output_directory_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    line = usage_error(capsys, *[a.replace("{file}", str(file)) for a in argv])
    assert f"{file}: is a file, not a directory" in line
    assert file.read_text() == "keep me"


# ---------------------------------------------------------------------------------------------------
# Real processes: nothing but the one line reaches stderr
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["bench", "maze", "--n", "abc"], "sketchmind bench: error: argument --n: 'abc' is not a positive integer"),
        (["train", "{binary}"], "not a text file"),
        (["bench", "vsp", "--model", "expert", "--data", "{tmp}"], "no levelN folders"),
    ],
    ids=["argparse", "recipe", "bench data"],
)
def test_in_a_real_process(tmp_path: Path, argv: list[str], fragment: str) -> None:
    binary = tmp_path / "recipe.yaml"
    binary.write_bytes(bytes(range(256)))
    args = [a.replace("{binary}", str(binary)).replace("{tmp}", str(tmp_path)) for a in argv]
    result = subprocess.run(
        [sys.executable, "-m", "sketchmind", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr


def test_a_bad_data_folder_leaves_the_run_folder_free(capsys: pytest.CaptureFixture[str], vsp: Path) -> None:
    """The typo is refused before the run folder is claimed, so the corrected command may use it."""
    out = vsp.parent / "run"
    usage_error(capsys, "bench", "vsp", "--model", "expert", "--data", str(vsp.parent / "typo"), "--out", str(out))
    assert not (out / "run.json").exists()
    assert main(["bench", "vsp", "--model", "expert", "--data", str(vsp), "--out", str(out), "--n", "1"]) == 0
    assert (out / "results.jsonl").read_text(encoding="utf-8").count("\n") == 1
