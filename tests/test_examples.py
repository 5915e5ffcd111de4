"""The runnable examples in ``examples/``, each run as a script the way a reader runs it.

Models are real and built offline: a tiny random Qwen2.5-VL checkpoint (its text is garbage, so only exit codes
and saved traces are checked), served over loopback HTTP by our own OpenAI-compatible server where an example
needs a server, and a ``ReplayPolicy`` behind that server where a test needs a fixed tool call.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loopback import Recording, Served, free_port

from sketchmind.models.default import shipped_policy
from sketchmind.models.replay import ReplayPolicy
from sketchmind.server import create_app
from sketchmind.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MAZE = ROOT / "data" / "vsp-maze-examples" / "maps" / "level4" / "img" / "0.png"  # 256x256, 4x4 cells
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def example(name: str, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLES / name), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


@pytest.fixture(scope="module")
def tiny_server(tiny_checkpoint: Callable[[str], Path]) -> Iterator[str]:
    """Our OpenAI-compatible server on a tiny Qwen2.5-VL checkpoint: its URL; the model is called ``tiny``."""
    from sketchmind.models.hf import HFPolicy

    with Served(create_app(HFPolicy(str(tiny_checkpoint("qwen2.5-vl"))), "tiny")) as served:
        yield served.url


def test_draw_tools_saves_every_view(tmp_path: Path) -> None:
    result = example("draw_tools.py", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "error for the model:" in result.stdout and "saved 5 views" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"view{i}.png" for i in range(1, 6)]


def test_solve_default_answers_or_says_it_has_no_policy(tmp_path: Path) -> None:
    result = example("solve_default.py", "--save", tmp_path / "trace")
    if shipped_policy("draw") is None:  # the default policy is still training in this source tree
        assert_one_line_error(result, 2, "no sketchmind-tiny policy")
        assert result.stdout == ""
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().splitlines()[-1].startswith("answer: ")
        assert Trace.load(tmp_path / "trace").answer is not None


def test_solve_default_bad_image_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(example("solve_default.py", tmp_path / "missing.png", "q"), 2, "no such file")


def test_solve_checkpoint_runs_a_tiny_checkpoint(tiny_checkpoint: Callable[[str], Path], tmp_path: Path) -> None:
    model = tiny_checkpoint("qwen2.5-vl")
    args = ("--model", model, "--max-turns", "2", "--max-new-tokens", "8", "--save", tmp_path / "trace")
    result = example("solve_checkpoint.py", MAZE, "Where is the goal?", *args)
    assert result.returncode in (0, 1), result.stdout + result.stderr  # answered or not: random weights
    assert "Traceback" not in result.stderr
    trace = Trace.load(tmp_path / "trace")
    assert 1 <= len(trace.steps) <= 2 and trace.status in ("answered", "no_answer")
    assert f"trace saved to {tmp_path / 'trace'}" in result.stdout


def test_solve_checkpoint_bad_input(tmp_path: Path) -> None:
    missing = example("solve_checkpoint.py", "--model", "x", tmp_path / "missing.png", "q")
    assert_one_line_error(missing, 2, "no such file")
    offline = example("solve_checkpoint.py", "--model", "nobody/no-such-model", MAZE, "q")  # HF_HUB_OFFLINE=1
    assert_one_line_error(offline, 3, "not found locally and the hub is offline")


def test_solve_openai_server_over_loopback(tiny_server: str, tmp_path: Path) -> None:
    args = ("--base-url", tiny_server, "--model", "tiny", "--max-turns", "2", "--max-new-tokens", "8")
    result = example("solve_openai_server.py", MAZE, "Where is the goal?", *args, "--save", tmp_path / "trace")
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    steps = Trace.load(tmp_path / "trace").steps
    assert steps and all(step.tokens_out for step in steps)  # real model turns came back over HTTP
    assert result.stdout.startswith("[1] ")


def test_solve_openai_server_unreachable_exits_3() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = example("solve_openai_server.py", "--base-url", url, "--model", "m", "--timeout", "5", MAZE, "q")
    assert_one_line_error(result, 3, f"cannot reach {url}")


def test_langgraph_agent_over_loopback(tiny_server: str) -> None:
    args = ("--base-url", tiny_server, "--model", "tiny", "--max-tokens", "8", "--max-turns", "2")
    result = example("langgraph_agent.py", MAZE, "Where is the goal?", *args)
    # The random model writes text, not tool calls: one model turn, then the graph ends with that reply.
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("[model 1]") and "answer (turns: 1, views drawn: 0): " in result.stdout


def test_langgraph_agent_runs_the_tool_node() -> None:
    """A served policy that replays a fixed tool-call turn drives the example's tool node for real."""
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "box", "arguments": '{"bbox": [64, 0, 128, 64]}'}},
        {"id": "c2", "type": "function", "function": {"name": "box", "arguments": '{"bbox": [0, 0, 900, 9]}'}},
    ]
    policy = Recording(ReplayPolicy([{"content": "Box the goal.", "tool_calls": calls}, "Row 1, column 2."]))
    with Served(create_app(policy, "replay")) as served:
        result = example("langgraph_agent.py", "--base-url", served.url, "--model", "replay", MAZE, "Where?")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> view 2: box on view 1 (256x256)" in result.stdout
    assert "-> error: " in result.stdout  # the off-image box: one line for the model, no view
    assert result.stdout.strip().endswith("answer (turns: 2, views drawn: 1): Row 1, column 2.")
    first, second = policy.seen
    assert first.tools and "answer" not in {tool["function"]["name"] for tool in first.tools}
    # The second request carries both tool results as text and the new view as an image in a user message.
    assert [m["role"] for m in second.messages[2:]] == ["assistant", "tool", "tool", "user"]
    assert second.messages[3]["content"][0]["text"].startswith("view 2: box") and len(second.images) == 2


def test_langgraph_agent_unreachable_exits_3() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = example("langgraph_agent.py", "--base-url", url, "--model", "m", MAZE, "q")
    assert_one_line_error(result, 3, f"cannot reach {url}")


def test_train_micro_trains_and_solves(tmp_path: Path) -> None:
    result = example("train_micro.py", tmp_path / "run", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "run" / "sft" / "final" / "config.json").is_file()
    assert f"trained draw policy: {tmp_path / 'run' / 'sft' / 'final'}" in result.stdout
    assert "maze-L1-0: " in result.stdout and Trace.load(tmp_path / "run" / "solve").steps
