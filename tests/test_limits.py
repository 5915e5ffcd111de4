"""Tool-call arguments are bounded at every entry point: a 10 MB label is refused in one line, quickly.

The entry points: ``Canvas.apply`` / ``apply_group`` (what every other path ends in), each protocol's
parser, the agent (the refusal goes back to the model as an observation), the MCP server (over stdio)
and ``sketchmind draw``. No timing thresholds: "quickly" is checked by what the refusal skips (the
error says the size limit was hit, so nothing was parsed, validated or rendered).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sketchmind.actions import (
    MAX_ANSWER_CHARS,
    MAX_ARGUMENT_DEPTH,
    MAX_ARGUMENT_ITEMS,
    MAX_ARGUMENTS_CHARS,
    MAX_CALLS_PER_GROUP,
    ActionError,
    check_size,
    parse_action,
)
from sketchmind.canvas import Canvas, View
from sketchmind.protocols import get_protocol

ROOT = Path(__file__).resolve().parents[1]
BIG = "x" * 10_000_000  # a 10 MB label
BOX = [10, 10, 50, 50]


def refused(outcome: View | ActionError, fragment: str) -> str:
    """The outcome is one short error line containing ``fragment``."""
    assert isinstance(outcome, ActionError), outcome
    text = str(outcome)
    assert fragment in text and "\n" not in text and len(text) < 300, text[:300]
    return text


# ---------------------------------------------------------------------------------------------- canvas


@pytest.mark.parametrize(
    ("name", "arguments", "fragment"),
    [
        ("box", {"bbox": BOX, "label": BIG}, "characters of text"),
        ("box", json.dumps({"bbox": BOX, "label": BIG}), f"over the {MAX_ARGUMENTS_CHARS} limit"),
        ("text", {"point": [5, 5], "text": BIG}, "characters of text"),
        ("box", {"bbox": BOX, BIG: 1}, "characters of text"),  # a 10 MB argument name
        ("path", {"points": [[1, 1]] * 1_000_000}, f"over {MAX_ARGUMENT_ITEMS} values"),
        ("path", {"points": BIG}, "characters of text"),  # "x, y, x, y, ..." spelled as one string
        ("box", {"bbox": BOX, "label": [[[[[[[[[["deep"]]]]]]]]]]}, f"deeper than {MAX_ARGUMENT_DEPTH}"),
        ("box", {"bbox": BOX, **{f"k{i}": i for i in range(100_000)}}, f"over {MAX_ARGUMENT_ITEMS} values"),
    ],
    ids=["label", "label-json", "text", "key", "points", "points-string", "depth", "keys"],
)
def test_oversized_arguments_are_refused_before_validation(name: str, arguments: Any, fragment: str) -> None:
    canvas = Canvas(None, whiteboard_size=(100, 100))
    refused(canvas.apply(name, arguments), fragment)
    assert len(canvas) == 1  # no view was made


@pytest.mark.parametrize(
    ("name", "arguments", "fragment"),
    [
        ("box", {"bbox": BOX, "label": "x" * 65}, "label: String should have at most 64 characters"),
        ("text", {"point": [5, 5], "text": "x" * 201}, "text: String should have at most 200 characters"),
        ("path", {"points": [[1, 1]] * 513}, "points: List should have at most 512 items"),
        ("grid", {"rows": 101, "cols": 2}, "rows: Input should be less than or equal to 100"),
        ("grid", {"rows": 2, "cols": 10**9}, "cols: Input should be less than or equal to 100"),
        ("zoom", {"factor": 17}, "factor: Input should be less than or equal to 16"),
        ("zoom", {"factor": 0}, "factor: Input should be greater than 0"),
        ("box", {"bbox": [0, 0, 1e300, 1e300]}, "is outside view 1"),
        ("point", {"point": [10**400, 1]}, "point"),  # an int no float can hold
        ("line", {"start": [1, 1], "end": [-1e9, 5]}, "is outside view 1"),
    ],
    ids=["label", "text", "points", "rows", "cols", "zoom-big", "zoom-zero", "huge-box", "huge-int", "negative"],
)
def test_each_argument_has_a_bound(name: str, arguments: dict[str, Any], fragment: str) -> None:
    canvas = Canvas(None, whiteboard_size=(100, 100))
    refused(canvas.apply(name, arguments), fragment)


def test_limits_admit_the_largest_legitimate_calls() -> None:
    """The bounds must not refuse what the tools allow: a full 512-point path, a 64-char label, a 100x100 grid."""
    canvas = Canvas(None, whiteboard_size=(600, 600))
    points = [{"x": i + 1, "y": (i * 7) % 500 + 1} for i in range(512)]  # the widest spelling of a point
    assert isinstance(canvas.apply("path", {"points": points, "label": "L" * 64}), View)
    assert isinstance(canvas.apply("grid", {"rows": 100, "cols": 100, "label": "g"}), View)
    assert isinstance(canvas.apply("text", {"point": [5, 5], "text": "t" * 200}), View)
    check_size({"points": [[1.0, 2.0]] * 512, "label": "x" * 64})
    parse_action("answer", {"answer": "a" * MAX_ANSWER_CHARS})


def test_long_answers_unknown_tools_and_many_errors_stay_one_short_line() -> None:
    canvas = Canvas(None, whiteboard_size=(100, 100))
    refused(canvas.apply(BIG, {}), "unknown tool 'xxxxxxxx")
    with pytest.raises(ActionError, match=f"at most {MAX_ANSWER_CHARS} characters"):
        parse_action("answer", {"answer": "a" * (MAX_ANSWER_CHARS + 1)})
    many = {f"bad{i}\n": i for i in range(50)}  # 50 unexpected (multi-line) names: the first few, then a count
    text = refused(canvas.apply("box", {"bbox": BOX, **many}), "and 46 more")
    assert text.count("unexpected argument") == 4


def test_a_group_is_bounded() -> None:
    canvas = Canvas(None, whiteboard_size=(100, 100))
    calls = [("box", {"bbox": BOX})] * (MAX_CALLS_PER_GROUP + 1)
    refused(canvas.apply_group(calls), f"over the limit of {MAX_CALLS_PER_GROUP}")
    assert isinstance(canvas.apply_group(calls[:MAX_CALLS_PER_GROUP]), View)
    refused(canvas.apply_group([("box", {"bbox": BOX, "label": BIG})]), "characters of text")


# ------------------------------------------------------------------------------------------- protocols


def _outputs(protocol: str, label: str, strict: bool) -> str | dict[str, Any]:
    """One model turn calling ``box`` with ``label``: strict JSON, or the single-quoted JSON models slip into."""
    call = {"name": "box", "arguments": {"bbox": BOX, "label": label}}
    loose = "{'name': 'box', 'arguments': {'bbox': [10, 10, 50, 50], 'label': '" + label + "'}}"
    if protocol == "sketchmind":
        return f"<think>t</think><tool_call>{json.dumps(call) if strict else loose}</tool_call>"
    if protocol == "vilasr":
        block = (
            json.dumps([{"bbox_2d": BOX, "label": label}])
            if strict
            else "[{'bbox_2d': [10, 10, 50, 50], 'label': '" + label + "'}]"
        )
        return f"<think>t</think> Action: Object Mapper\n```json\n{block}\n```"
    arguments = json.dumps(call["arguments"]) if strict else "{'bbox': [10, 10, 50, 50], 'label': '" + label + "'}"
    return {
        "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "box", "arguments": arguments}}],
    }


@pytest.mark.parametrize("protocol", ["sketchmind", "vilasr", "openai-tools"])
@pytest.mark.parametrize("strict", [True, False], ids=["json", "repaired"])
def test_a_10mb_label_through_each_parser_is_refused(protocol: str, strict: bool) -> None:
    """Strict JSON parses, then the canvas refuses it; broken JSON that size is not handed to json-repair."""
    turn = get_protocol(protocol).parse(_outputs(protocol, BIG, strict))
    canvas = Canvas(None, whiteboard_size=(100, 100))
    errors = list(turn.errors) + [str(canvas.apply(c.name, c.arguments)) for c in turn.calls]
    assert errors and all("\n" not in e and len(e) < 300 for e in errors), [e[:300] for e in errors]
    assert len(canvas) == 1
    # The same turn with a short label draws: the refusal is about size, not the spelling.
    small = get_protocol(protocol).parse(_outputs(protocol, "ok", strict))
    assert small.calls and all(isinstance(canvas.apply(c.name, c.arguments), View) for c in small.calls)


# ----------------------------------------------------------------------------------------------- agent


def test_the_agent_shows_the_refusal_to_the_model_and_goes_on() -> None:
    from sketchmind.agent import Agent, Budgets
    from sketchmind.models.replay import ReplayPolicy

    call = json.dumps({"name": "box", "arguments": {"bbox": BOX, "label": BIG}})
    policy = ReplayPolicy([f"<think>big</think><tool_call>{call}</tool_call>", "<answer>done</answer>"])
    trace = Agent(policy, budgets=Budgets(max_turns=3, timeout=None)).solve(None, "q")
    assert trace.status == "answered" and trace.answer == "done"
    first = trace.steps[0]
    assert not first.view_ids and len(first.errors) == 1 and "characters of text" in first.errors[0]


# ------------------------------------------------------------------------------------------ MCP server


def test_mcp_server_refuses_a_10mb_label_in_one_line(tmp_path: Path) -> None:
    """Over the real stdio transport: the schema (maxLength 64) or the canvas refuses; the server keeps serving."""
    pytest.importorskip("mcp")
    from test_mcp import ServerConnection, board_of, ok, text_of

    with (tmp_path / "stderr.log").open("w") as errlog:
        server = ServerConnection(errlog)
        try:
            board = board_of(ok(server.call("new_board", width=100, height=100)))
            result = server.call("box", board=board, bbox=BOX, label=BIG)
            assert result.is_error
            text = text_of(result)
            assert "\n" not in text and len(text) <= 500 and "x" * 100 not in text, text[:500]
            ok(server.call("box", board=board, bbox=BOX, label="fine"))
        finally:
            server.close()


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_draw_refuses_a_10mb_label_in_one_line(tmp_path: Path) -> None:
    calls = tmp_path / "calls.json"
    calls.write_text(
        json.dumps(
            [{"name": "box", "arguments": {"bbox": BOX, "label": BIG}}, {"name": "box", "arguments": {"bbox": BOX}}]
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "sketchmind", "draw", "--blank", str(calls)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr  # a failed call: the other call still drew
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("fail box:") and "characters of text" in lines[0], lines
    assert lines[1].startswith("ok") and len(result.stdout) < 1000 and not result.stderr
