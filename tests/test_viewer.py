"""``sketchmind show`` on traces the demo really saved: calls without the agent's bookkeeping, and a verdict.

The traces come from the demo's own session (a generated maze, solved by the expert or by a replayed
wrong answer), so they carry exactly the fields and ``meta`` a real run writes.
"""

from __future__ import annotations

import html as htmllib
import json
import re
from pathlib import Path

from sketchmind.cli import main
from sketchmind.demo.session import DemoSession
from sketchmind.models.expert import ExpertPolicy
from sketchmind.models.replay import ReplayPolicy
from sketchmind.trace import Trace


def demo_trace(policy_for: str, directory: Path) -> Path:
    """A maze solved in a demo session, its trace folder copied to ``directory``; returns that folder."""
    session = DemoSession(root=directory / "session")
    (directory / "session").mkdir(parents=True)
    made = session.generate("maze", 1, 0)
    policy = ExpertPolicy("sketchmind") if policy_for == "expert" else ReplayPolicy(["<answer>7</answer>"])
    run = session.new_run(
        policy,
        model=policy_for,
        mode="draw",
        question=made.puzzle.question,
        pixels=made.puzzle.image,
        step_by_step=False,
    )
    for _ in run.start(made.puzzle.image):
        pass
    assert run.trace is not None
    return run.directory


def show(trace_dir: Path) -> str:
    out = trace_dir / "page.html"
    assert main(["show", str(trace_dir), "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def status_cell(page: str) -> str:
    cell = re.search(r"<dt>status</dt><dd>(.*?)</dd>", page, re.S)
    assert cell is not None
    return cell.group(1)


def test_calls_are_shown_without_internal_fields(tmp_path: Path) -> None:
    trace_dir = demo_trace("expert", tmp_path)
    saved = Trace.load(trace_dir)
    recorded = [call for step in saved.steps for call in step.calls]
    assert recorded and all("id" in c and "group" in c for c in recorded)  # the trace does keep them

    page = show(trace_dir)
    blocks = [htmllib.unescape(b) for b in re.findall(r"<h3>Tool calls</h3><pre>(.*?)</pre>", page, re.S)]
    assert len(blocks) == sum(1 for s in saved.steps if s.calls)
    shown = [call for block in blocks for call in json.loads(block)]
    assert shown == [{"name": c["name"], "arguments": c["arguments"]} for c in recorded]
    assert '"id"' not in "".join(blocks) and '"group"' not in "".join(blocks)


def test_a_right_answer_says_correct(tmp_path: Path) -> None:
    page = show(demo_trace("expert", tmp_path))
    cell = status_cell(page)
    assert "correct" in cell and "wrong" not in cell and ">answered<" not in cell
    assert "<dt>expected</dt>" not in page  # the answer is the expected one


def test_a_wrong_answer_says_wrong_and_what_was_expected(tmp_path: Path) -> None:
    page = show(demo_trace("replay", tmp_path))
    cell = status_cell(page)
    assert "wrong" in cell and "correct" not in cell and ">answered<" not in cell
    assert "<dt>answer</dt><dd>7</dd>" in page and "<dt>expected</dt><dd>2</dd>" in page


def test_without_ground_truth_it_says_so(tmp_path: Path) -> None:
    trace_dir = demo_trace("expert", tmp_path)
    trace = Trace.load(trace_dir)
    for key in ("correct", "expected", "puzzle"):
        trace.meta.pop(key, None)  # as a solve of an uploaded image or `sketchmind solve` records it
    trace.save(trace_dir)
    cell = status_cell(show(trace_dir))
    assert ">answered<" in cell and "no ground truth" in cell
    assert "correct" not in cell and "wrong" not in cell
