"""The library API for other agents: JSON-schema specs, canvas.apply, LangChain tools, light import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from langchain_core.messages import ToolMessage

from sketchmind import ACTIONS, Canvas, View
from sketchmind.tools import langchain_tools, specs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "box": {"view": 1, "bbox": [1, 2, 30, 40], "label": "a"},
    "line": {"start": [0, 0], "end": [10, 10], "arrow": True},
    "point": {"point": [5, 5], "label": "p"},
    "path": {"points": [[0, 0], [5, 5], [9, 1]]},
    "grid": {"rows": 3, "cols": 4},
    "text": {"point": [10, 10], "text": "note"},
    "crop": {"bbox": [0, 0, 50, 50]},
    "zoom": {"factor": 2, "resample": "nearest"},
    "answer": {"answer": "42"},
}


def test_specs_are_valid_json_schema_for_function_calling() -> None:
    tools = specs()
    assert [t["function"]["name"] for t in tools] == list(ACTIONS)
    for tool in tools:
        assert tool["type"] == "function" and tool["function"]["description"]
        schema = tool["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert "title" not in str(schema) and "anyOf" not in str(schema)  # plain schemas every API accepts
        validator = jsonschema.Draft202012Validator(schema)
        validator.validate(EXAMPLES[tool["function"]["name"]])
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({**EXAMPLES[tool["function"]["name"]], "unexpected": 1})


def test_schema_examples_execute_on_a_canvas() -> None:
    canvas = Canvas(None, whiteboard_size=(100, 100))
    for name, arguments in EXAMPLES.items():
        if name == "answer":
            continue
        assert isinstance(canvas.apply(name, arguments), View), name


def test_langchain_tools_draw_and_report_errors() -> None:
    canvas = Canvas(None, whiteboard_size=(100, 80))
    tools = {tool.name: tool for tool in langchain_tools(canvas)}
    assert set(tools) == set(ACTIONS) - {"answer"}
    call = {"type": "tool_call", "id": "c1", "name": "box", "args": {"bbox": [10, 10, 50, 50], "label": "A"}}
    message = tools["box"].invoke(call)
    assert isinstance(message, ToolMessage)
    assert message.content == "view 2: box 'A' on view 1 (100x80)"
    assert isinstance(message.artifact, View) and message.artifact.index == 2
    bad = tools["box"].invoke({**call, "id": "c2", "args": {"bbox": [10, 10, 500, 50]}})
    assert bad.content == "error: box bbox: x=500 is outside view 2 (100x80)"
    assert bad.artifact is None and len(canvas) == 2


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, sketchmind, sketchmind.tools, sketchmind.protocols, sketchmind.cli;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_example_script_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "draw_tools.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "error for the model: box bbox: x=300 is outside view 4 (256x256)" in result.stdout
    assert len(list(tmp_path.glob("view*.png"))) == 5
