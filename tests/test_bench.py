"""`sketchmind bench`: Wilson intervals, resumable runs, reports and the compare plot, end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sketchmind.bench import BenchConfig, run_bench, summarise, wilson
from sketchmind.bench.report import markdown_table, read_results
from sketchmind.cli import main
from sketchmind.models.replay import ReplayPolicy


def test_wilson_matches_known_values() -> None:
    # Reference values from the closed form (e.g. statsmodels proportion_confint(method="wilson")).
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson(0, 20)
    assert low == 0.0
    assert high == pytest.approx(0.1611, abs=1e-4)
    low, high = wilson(20, 20)
    assert high == 1.0
    assert low == pytest.approx(0.8389, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_interval_contains_the_estimate_and_narrows_with_n() -> None:
    for n in (5, 50, 500):
        for k in (0, n // 3, n):
            low, high = wilson(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
    assert wilson(30, 100)[1] - wilson(30, 100)[0] < wilson(3, 10)[1] - wilson(3, 10)[0]


def test_summaries_per_level_and_overall() -> None:
    records = [
        {"id": "a", "level": 1, "correct": True, "turns": 3, "images": 3, "tokens": 100, "seconds": 1.0},
        {"id": "b", "level": 1, "correct": False, "turns": 5, "images": 5, "tokens": None, "seconds": 3.0},
        {"id": "c", "level": 2, "correct": True, "turns": 4, "images": 2, "tokens": 50, "seconds": 2.0},
    ]
    first, second, overall = summarise(records)
    assert (first.level, first.n, first.correct, first.turns, first.tokens) == (1, 2, 1, 4.0, 100.0)
    assert (second.level, second.accuracy) == (2, 1.0)
    assert (overall.level, overall.n, overall.correct) == (None, 3, 2)
    table = markdown_table([first, second, overall])
    assert "| all | 3 | 66.7% |" in table
    assert table.count("\n") == 4


def test_expert_run_is_perfect_and_resumes(tmp_path: Path) -> None:
    config = BenchConfig(target="maze", model="expert", levels=(1, 2), n=3, seed=7, batch_size=4)
    run = run_bench(config, tmp_path / "run")
    assert run.solved_now == 6
    assert [r["correct"] for r in run.records] == [True] * 6
    assert all(r["status"] == "answered" and r["turns"] >= 2 and r["images"] >= 2 for r in run.records)
    assert (tmp_path / "run" / "report.md").read_text().count("| 100.0% |") == 3
    assert (tmp_path / "run" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"

    # A run killed mid-write leaves a cut line; a larger re-run keeps what is done and adds the rest.
    results = tmp_path / "run" / "results.jsonl"
    with results.open("a") as file:
        file.write('{"id": "maze-L1-3", "lev')
    bigger = BenchConfig(target="maze", model="expert", levels=(1, 2), n=4, seed=7, batch_size=4)
    again = run_bench(bigger, tmp_path / "run")
    assert again.solved_now == 2
    ids = [r["id"] for r in read_results(results)]
    assert sorted(ids) == sorted({f"maze-L{level}-{i}" for level in (1, 2) for i in range(4)})


def test_a_run_directory_refuses_another_model(tmp_path: Path) -> None:
    run_bench(BenchConfig(target="maze", model="expert", levels=(1,), n=1), tmp_path)
    with pytest.raises(ValueError, match="holds another run"):
        run_bench(BenchConfig(target="maze", model="replay:x", levels=(1,), n=1), tmp_path)


def test_a_run_folder_records_the_protocol_the_policy_speaks_and_resumes_with_it(tmp_path: Path) -> None:
    config = BenchConfig(target="maze", model="replayed", levels=(1,), n=1, max_turns=1)
    searching = ReplayPolicy(["Find P 1,1, G 1,2.\n1,1 R: 1,2 G\nAction plan: R"] * 3)
    searching.protocol_name = "search"
    run_bench(config, tmp_path, policy=searching)
    assert json.loads((tmp_path / "run.json").read_text())["protocol"] == "search"  # resolved, not null
    run_bench(replace(config, n=2), tmp_path, policy=searching)  # resumes: the same protocol
    with pytest.raises(ValueError, match="protocol='search'"):  # the same folder for another protocol
        run_bench(replace(config, n=3, protocol="sketchmind"), tmp_path, policy=searching)
    # a folder written before runs recorded null (protocol "sketchmind") resumes with a sketchmind policy
    old = tmp_path / "old"
    run_bench(replace(config, protocol="sketchmind"), old, policy=ReplayPolicy(["<answer>Moves: L</answer>"] * 2))
    run_bench(replace(config, n=2), old, policy=ReplayPolicy(["<answer>Moves: L</answer>"] * 2))
    assert json.loads((old / "run.json").read_text())["protocol"] == "sketchmind"


def test_wrong_answers_score_zero_and_backend_errors_are_retried(tmp_path: Path) -> None:
    config = BenchConfig(target="maze", model="wrong", levels=(1,), n=2, max_turns=2)
    wrong = ReplayPolicy(["<think>guess</think><answer>Moves: L</answer>"])
    run = run_bench(config, tmp_path, policy=wrong)
    assert [r["correct"] for r in run.records] == [False, False]
    assert [r["answer"] for r in run.records] == ["Moves: L", "Moves: L"]

    failing = ReplayPolicy([])  # raises BackendError on the first turn
    other = BenchConfig(target="maze", model="wrong", levels=(1,), n=3, max_turns=2)
    run = run_bench(other, tmp_path, policy=failing)
    assert run.solved_now == 0 and len(run.failed) == 1 and "maze-L1-2" in run.failed[0]
    assert len(read_results(tmp_path / "results.jsonl")) == 2  # the failed puzzle is not recorded


def test_cli_bench_text_mode_then_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    draw, text = tmp_path / "draw", tmp_path / "text"
    common = ["bench", "maze", "--model", "expert", "--levels", "1-2", "--n", "2"]
    assert main([*common, "--out", str(draw)]) == 0
    assert main([*common, "--mode", "text", "--out", str(text)]) == 0
    printed = capsys.readouterr().out
    assert "| all | 4 | 100.0% |" in printed
    text_records = read_results(text / "results.jsonl")
    assert all(r["turns"] == 1 and r["images"] == 1 and r["correct"] for r in text_records)
    assert main(["bench", "compare", str(draw), str(text), "--plot", str(tmp_path / "cmp.png")]) == 0
    table = capsys.readouterr().out
    assert "| draw | 4 | 100.0% |" in table and "| text | 4 | 100.0% |" in table
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((draw / "run.json").read_text())["model"] == "expert"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "nosuch", "--model", "expert"], "unknown task family"),
        (["bench", "maze", "--model", "expert", "--levels", "9"], "maze has levels"),
        (["bench", "maze", "--model", "expert", "--levels", "x"], "--levels"),
        (["bench", "compare"], "run directories"),
        (["bench", "maze", "--model", "expert", "--samples", "3"], "deterministic"),
    ],
)
def test_cli_bench_bad_input_is_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path / "run")] if argv[1] != "compare" else argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error
