"""The MCP server end to end: the real ``mcp`` client talks to ``python -m sketchmind.mcp_server`` over stdio.

One server subprocess serves the whole module (starting it costs about a second). Its client session lives
on an asyncio loop in a background thread, so the tests stay plain synchronous functions (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

import jsonschema
import numpy as np
import pytest
from conftest import photo
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from PIL import Image

from sketchmind.actions import ACTIONS, parameters_schema

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class ServerConnection:
    """A client session to one server subprocess, driven from synchronous code."""

    def __init__(self, errlog: TextIO) -> None:
        self._errlog = errlog
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.session: ClientSession | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(60) or self._failure is not None:
            raise RuntimeError(f"MCP server did not start: {self._failure!r}")

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "sketchmind.cli", "mcp"], cwd=ROOT, env={"OMP_NUM_THREADS": "1"}
        )
        try:
            async with (
                stdio_client(params, errlog=self._errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                self.session = session
                self._ready.set()
                await self._stop.wait()
        except BaseException as error:
            self._failure = error
            self._ready.set()
            raise

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def call(self, name: str, **arguments: Any) -> types.CallToolResult:
        assert self.session is not None
        return self.run(self.session.call_tool(name, arguments))

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp") / "server-stderr.log"


@pytest.fixture(scope="module")
def server(server_log: Path) -> Iterator[ServerConnection]:
    with server_log.open("w") as errlog:
        connection = ServerConnection(errlog)
        yield connection
        connection.close()


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def image_of(result: types.CallToolResult) -> np.ndarray:
    images = [c for c in result.content if isinstance(c, types.ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    with Image.open(io.BytesIO(base64.b64decode(images[0].data))) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def ok(result: types.CallToolResult) -> types.CallToolResult:
    assert not result.is_error, text_of(result)
    return result


def board_of(result: types.CallToolResult) -> str:
    assert isinstance(result.structured_content, dict)
    board = result.structured_content["board"]
    assert isinstance(board, str) and text_of(result).startswith(f"board {board}:")
    return board


@pytest.fixture
def image_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    pixels = photo(64, 48)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def test_lists_every_drawing_action_with_its_real_schema(server: ServerConnection) -> None:
    assert server.session is not None
    tools = {tool.name: tool for tool in server.run(server.session.list_tools()).tools}
    drawing = set(ACTIONS) - {"answer"}
    assert set(tools) == drawing | {"open_image", "new_board", "get_view", "list_views"}
    for name in drawing:
        schema = tools[name].input_schema
        jsonschema.Draft202012Validator.check_schema(schema)
        own = parameters_schema(name)
        # Exactly the action's schema, plus a required board id.
        assert schema["properties"]["board"]["type"] == "string"
        assert schema["required"] == ["board", *own["required"]]
        assert {k: v for k, v in schema["properties"].items() if k != "board"} == own["properties"]
        assert {k: v for k, v in schema.items() if k not in ("properties", "required")} == {
            k: v for k, v in own.items() if k not in ("properties", "required")
        }
        assert tools[name].description == f"{ACTIONS[name].summary} Makes a new view and returns it as an image."
    assert "bbox" in tools["box"].input_schema["required"]
    assert tools["box"].input_schema["additionalProperties"] is False
    assert tools["open_image"].input_schema["required"] == ["path"]


def test_open_draw_list_and_revisit(server: ServerConnection, image_file: tuple[Path, np.ndarray]) -> None:
    path, pixels = image_file
    opened = ok(server.call("open_image", path=str(path)))
    board = board_of(opened)
    assert "view 1: input (64x48)" in text_of(opened)
    assert np.array_equal(image_of(opened), pixels)

    drawn = ok(server.call("box", board=board, bbox=[8, 8, 40, 30], label="A"))
    assert text_of(drawn) == f"board {board}: view 2: box 'A' on view 1 (64x48)"
    image = image_of(drawn)
    assert image.shape == (48, 64, 3)
    changed = np.any(image != pixels, axis=2)
    assert changed[8, 8:40].mean() > 0.8  # the top edge of the box
    assert not changed[44:, :4].any()  # a far corner is untouched

    views = text_of(ok(server.call("list_views", board=board))).splitlines()
    assert len(views) == 2
    assert views[0] == "view 1: input (64x48)"
    assert views[1].startswith("view 2: box ") and '"bbox": [8.0, 8.0, 40.0, 30.0]' in views[1]

    first = ok(server.call("get_view", board=board, view=1))
    assert np.array_equal(image_of(first), pixels)
    assert np.array_equal(image_of(ok(server.call("get_view", board=board))), image)  # latest by default


def test_crop_and_zoom_make_views_of_the_expected_size(
    server: ServerConnection, image_file: tuple[Path, np.ndarray]
) -> None:
    path, pixels = image_file
    board = board_of(ok(server.call("open_image", path=str(path))))
    crop = ok(server.call("crop", board=board, bbox=[10, 5, 40, 25]))
    assert "(30x20)" in text_of(crop)
    assert np.array_equal(image_of(crop), pixels[5:25, 10:40])
    zoom = ok(server.call("zoom", board=board, view=2, factor=3, resample="nearest"))
    assert text_of(zoom) == f"board {board}: view 3: zoom on view 2 (90x60)"
    assert np.array_equal(image_of(zoom), np.repeat(np.repeat(pixels[5:25, 10:40], 3, axis=0), 3, axis=1))


def test_blank_board_draws_and_huge_views_are_downscaled(server: ServerConnection) -> None:
    board = board_of(ok(server.call("new_board", width=120, height=80)))
    ok(server.call("line", board=board, start=[0, 0], end=[119, 79], arrow=True))
    image = image_of(ok(server.call("grid", board=board, rows=2, cols=3)))
    assert image.shape == (80, 120, 3) and (image < 250).any()

    big = board_of(ok(server.call("new_board", width=1024, height=512)))
    zoom = ok(server.call("zoom", board=big, factor=4, resample="nearest"))
    assert "zoom on view 1 (4096x2048)" in text_of(zoom)
    assert "downscaled to 2048x1024" in text_of(zoom)
    assert image_of(zoom).shape == (1024, 2048, 3)


def test_bad_input_is_one_error_line_and_the_server_keeps_working(
    server: ServerConnection, image_file: tuple[Path, np.ndarray], tmp_path: Path, server_log: Path
) -> None:
    path, _ = image_file
    board = board_of(ok(server.call("open_image", path=str(path))))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(path.read_bytes()[:200])
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("box", {"board": "b999", "bbox": [1, 1, 5, 5]}, "unknown board 'b999'"),
        ("get_view", {"board": "nope"}, "unknown board 'nope'"),
        ("box", {"board": board, "bbox": [10, 10, 500, 20]}, "box bbox: x=500 is outside view 1 (64x48)"),
        ("box", {"board": board}, "missing argument 'bbox'"),
        ("box", {"board": board, "bbox": [1, 1, 5, 5], "colour": "red"}, "unexpected argument 'colour'"),
        ("line", {"board": board, "start": "__import__('os')", "end": [1, 1]}, "line: start"),
        ("zoom", {"board": board, "factor": 100}, "factor"),
        ("get_view", {"board": board, "view": 99}, "view 99 does not exist; views are numbered 1 to 1"),
        ("get_view", {"board": board, "view": "1"}, "view must be an integer"),
        ("open_image", {"path": str(corrupt)}, "corrupt.png: "),
        ("open_image", {"path": str(truncated)}, "truncated.png: "),
        ("open_image", {"path": str(tmp_path / "missing.png")}, "missing.png: no such file"),
        ("open_image", {"path": str(tmp_path)}, "is a directory"),
        ("open_image", {}, "'path' must be a non-empty string"),
        ("new_board", {"width": 0}, "width must be 1 to 4096, got 0"),
        ("answer", {"answer": "42"}, "unknown tool 'answer'"),
    ]
    for name, arguments, expected in cases:
        result = server.call(name, **arguments)
        assert result.is_error, (name, arguments)
        assert len(result.content) == 1 and isinstance(result.content[0], types.TextContent)
        message = result.content[0].text
        assert expected in message and "\n" not in message and "Traceback" not in message, message
    # Still serving, and the failed calls made no views.
    assert ok(server.call("point", board=board, point=[3, 3])).structured_content == {
        "board": board,
        "view": 2,
        "width": 64,
        "height": 48,
    }
    assert "Traceback" not in server_log.read_text()  # every failure above was an expected one, not a bug


def test_boards_are_capped_and_the_oldest_is_closed(server: ServerConnection) -> None:
    first = board_of(ok(server.call("new_board", width=8, height=8)))
    ok(server.call("point", board=first, point=[1, 1]))
    boards = [board_of(ok(server.call("new_board", width=8, height=8))) for _ in range(16)]
    closed = server.call("list_views", board=first)
    assert closed.is_error and f"unknown board '{first}'" in text_of(closed)
    assert len(text_of(ok(server.call("list_views", board=boards[0]))).splitlines()) == 1
    assert len(set(boards)) == 16 and first not in boards  # ids are never reused


def test_the_example_client_draws_and_saves_a_view(tmp_path: Path) -> None:
    out = tmp_path / "view.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mcp_client.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(out) as image:
        assert image.size == (400, 300)
