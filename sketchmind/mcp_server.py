"""An MCP server that lets any MCP client (Claude Desktop, Cursor, your own agent) draw on SketchMind boards.

A *board* is a ``Canvas``: view 1 is an image you open (or a blank whiteboard) and every drawing call
appends a new, immutable view. Tools:

- ``open_image(path)`` and ``new_board(width, height)`` open a board and return its id (``b1``, ``b2``, ...);
- one tool per drawing action (``box``, ``line``, ``point``, ``path``, ``grid``, ``text``, ``crop``,
  ``zoom``), each taking ``board`` plus exactly the action's own arguments; it returns the new view's
  description and the view as a PNG image;
- ``get_view(board, view)`` returns any earlier view, ``list_views(board)`` one line per view.

Coordinates are pixels of the view being drawn on. Bad input (unknown board, view out of range,
invalid arguments, unreadable image) comes back as a tool result with ``isError: true`` and one line of
text; the server never crashes on it and never sends a traceback.

Run it over stdio with ``sketchmind mcp`` or ``python -m sketchmind.mcp_server``. To add it to Claude
Desktop (``claude_desktop_config.json``) or Cursor (``~/.cursor/mcp.json``; same shape)::

    {
      "mcpServers": {
        "sketchmind": {
          "command": "/abs/path/to/.venv/bin/python",
          "args": ["-m", "sketchmind.mcp_server"]
        }
      }
    }

(or ``"command": "/abs/path/to/.venv/bin/sketchmind", "args": ["mcp"]``). Clients start the server in a
directory of their choosing, so give ``open_image`` absolute paths.

The server is built on the SDK's low-level ``Server`` rather than ``MCPServer`` (FastMCP in mcp 1.x):
``MCPServer`` derives each tool's input schema from a Python signature, while the drawing tools must
advertise the actions' own JSON Schemas (``sketchmind.actions.parameters_schema``) unchanged.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import cv2
import numpy as np

try:
    from mcp import types
    from mcp.server import Server, ServerRequestContext
    from mcp.server.stdio import stdio_server
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the MCP server needs the 'mcp' package: pip install 'sketchmind[mcp]'") from exc

from sketchmind import __version__
from sketchmind.actions import ACTIONS, ActionError, parameters_schema
from sketchmind.canvas import Canvas, View
from sketchmind.images import ImageInputError

logger = logging.getLogger(__name__)

MAX_BOARDS = 16  # least recently used boards are closed beyond this
MAX_VIEWS = 1000  # per board: the canvas is append-only, so a runaway loop must hit a wall
MAX_BYTES = 2 << 30  # pixels held by all boards together; LRU boards are closed to stay under it
MAX_IMAGE_SIDE = 2048  # views sent to clients are downscaled to this longest side
MAX_BOARD_SIDE = 4096  # new_board's largest width or height (the canvas's own view limit)

DRAWING_TOOLS = tuple(name for name in ACTIONS if name != "answer")  # answer ends an episode; nothing to draw

INSTRUCTIONS = (
    "Reason about an image by drawing on it. Open a board with open_image (an absolute path to a local "
    "image) or new_board (a blank whiteboard); each returns a board id. Every drawing tool (box, line, "
    "point, path, grid, text, crop, zoom) takes that board id, reads one view (the latest unless you pass "
    "`view`) and returns a NEW view: views are numbered from 1 and never change, so you can go back to any "
    "of them. Coordinates are pixels of the view you draw on. Drawing again with the same label replaces "
    "that mark."
)


class ToolFailure(Exception):
    """A tool call the caller got wrong; ``str(error)`` is the one line sent back with ``isError``."""


@dataclass
class Board:
    """One open canvas and the bytes its views hold (tracked, not recomputed per call)."""

    canvas: Canvas
    nbytes: int


class Boards:
    """Open boards by id, least recently used first; ids are never reused, so a closed id stays unknown."""

    def __init__(self, max_boards: int = MAX_BOARDS, max_bytes: int = MAX_BYTES) -> None:
        self.max_boards = max_boards
        self.max_bytes = max_bytes
        self._boards: OrderedDict[str, Board] = OrderedDict()
        self._opened = 0

    def __len__(self) -> int:
        return len(self._boards)

    @property
    def nbytes(self) -> int:
        """Bytes of pixels held by every open board."""
        return sum(board.nbytes for board in self._boards.values())

    def open(self, canvas: Canvas) -> tuple[str, list[str]]:
        """Add a board; returns its id and the ids closed to make room."""
        self._opened += 1
        board_id = f"b{self._opened}"
        self._boards[board_id] = Board(canvas, sum(v.image.nbytes for v in canvas.views))
        return board_id, self._make_room(keep=board_id)

    def get(self, board_id: Any) -> Board:
        """The board with this id, marked as most recently used. Raises ``ToolFailure``."""
        if not isinstance(board_id, str) or board_id not in self._boards:
            listed = ", ".join(self._boards) or "none"
            raise ToolFailure(
                f"unknown board {board_id!r} (open boards: {listed}); open one with open_image or new_board"
            )
        self._boards.move_to_end(board_id)
        return self._boards[board_id]

    def grew(self, board_id: str, view: View) -> list[str]:
        """Account for a new view on a board; returns the ids of other boards closed to make room."""
        self._boards[board_id].nbytes += view.image.nbytes
        return self._make_room(keep=board_id)

    def _make_room(self, keep: str) -> list[str]:
        closed = []
        while len(self._boards) > 1 and (len(self._boards) > self.max_boards or self.nbytes > self.max_bytes):
            oldest = next(iter(self._boards))
            if oldest == keep:  # pragma: no cover - keep is always the most recently used
                break
            del self._boards[oldest]
            closed.append(oldest)
        return closed


# --- tool schemas -----------------------------------------------------------------------------------------

_BOARD = {"type": "string", "description": "Board id returned by open_image or new_board, e.g. 'b1'."}


def _with_board(schema: dict[str, Any]) -> dict[str, Any]:
    """An action's own JSON Schema with a required ``board`` property in front."""
    return {
        **schema,
        "properties": {"board": _BOARD, **schema.get("properties", {})},
        "required": ["board", *schema.get("required", [])],
    }


def tool_list() -> list[types.Tool]:
    """Every tool the server offers, with its input schema."""
    read_only = types.ToolAnnotations(read_only_hint=True, open_world_hint=False)
    draws = types.ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    tools = [
        types.Tool(
            name="open_image",
            description="Open a local image file as view 1 of a new board. Returns the board id and the image.",
            input_schema={
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Absolute path of a PNG, JPEG, WebP, ... file."}
                },
                "required": ["path"],
                "additionalProperties": False,
            },
            annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False),
        ),
        types.Tool(
            name="new_board",
            description="Open a blank white board (a whiteboard to sketch on). Returns the board id.",
            input_schema={
                "type": "object",
                "properties": {
                    "width": {"type": "integer", "minimum": 1, "maximum": MAX_BOARD_SIDE, "default": 1024},
                    "height": {"type": "integer", "minimum": 1, "maximum": MAX_BOARD_SIDE, "default": 1024},
                },
                "additionalProperties": False,
            },
            annotations=draws,
        ),
        types.Tool(
            name="get_view",
            description="Return one view of a board as an image (view 1 is the original).",
            input_schema={
                "type": "object",
                "properties": {
                    "board": _BOARD,
                    "view": {"type": "integer", "minimum": 1, "description": "View index. Defaults to the latest."},
                },
                "required": ["board"],
                "additionalProperties": False,
            },
            annotations=read_only,
        ),
        types.Tool(
            name="list_views",
            description="List a board's views, one line each: the action that made it, its parent view and size.",
            input_schema={
                "type": "object",
                "properties": {"board": _BOARD},
                "required": ["board"],
                "additionalProperties": False,
            },
            annotations=read_only,
        ),
    ]
    for name in DRAWING_TOOLS:
        tools.append(
            types.Tool(
                name=name,
                description=f"{ACTIONS[name].summary} Makes a new view and returns it as an image.",
                input_schema=_with_board(parameters_schema(name)),
                annotations=draws,
            )
        )
    return tools


# --- results ----------------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 500) -> str:
    """Collapse whitespace so an error is always one line, and bound its length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=_one_line(text))], is_error=True)


def image_content(view: View, max_side: int = MAX_IMAGE_SIDE) -> tuple[types.ImageContent, str]:
    """The view as PNG image content, downscaled if its longest side is over ``max_side``.

    Returns the content and a note for the text ("" when sent at full size): coordinates always refer
    to the full-size view, so a client must know when the picture it sees is smaller.
    """
    if max(view.size) <= max_side:
        data, note = view.png(), ""
    else:
        scale = max_side / max(view.size)
        size = (max(1, round(view.width * scale)), max(1, round(view.height * scale)))
        small = cv2.resize(view.image, size, interpolation=cv2.INTER_AREA)  # area: no aliasing when shrinking
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(small[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
            raise RuntimeError("PNG encoding failed")
        data = encoded.tobytes()
        note = (
            f" [image sent downscaled to {size[0]}x{size[1]}; coordinates refer to the full "
            f"{view.width}x{view.height} view]"
        )
    return types.ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type="image/png"), note


def _view_result(board_id: str, view: View, *, extra: str = "") -> types.CallToolResult:
    image, note = image_content(view)
    text = f"board {board_id}: {view.describe()}{note}{extra}"
    structured = {"board": board_id, "view": view.index, "width": view.width, "height": view.height}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text), image], structured_content=structured
    )


def _closed_note(closed: list[str]) -> str:
    return f" (closed least recently used boards {', '.join(closed)} to make room)" if closed else ""


def view_lines(canvas: Canvas) -> list[str]:
    """One provenance line per view, e.g. ``view 2: box {"bbox": [...]} on view 1 (640x480)``."""
    lines = []
    for record in canvas.provenance():
        size = f"({record['width']}x{record['height']})"
        if not record["actions"]:
            lines.append(f"view {record['index']}: input {size}")
            continue
        made = "; ".join(f"{a['name']} {json.dumps(a['arguments'])}" for a in record["actions"])
        lines.append(f"view {record['index']}: {made} on view {record['parent']} {size}")
    return lines


# --- tools ------------------------------------------------------------------------------------------------


def _integer(arguments: Mapping[str, Any], name: str, default: int | None, low: int, high: int | None) -> int | None:
    """An integer argument in ``[low, high]``; JSON has no int type, so ``true`` and ``2.5`` are refused."""
    value = arguments.get(name, default)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ToolFailure(f"{name} must be an integer, got {json.dumps(value)[:40]}")
    if value < low or (high is not None and value > high):
        bound = f"{low} to {high}" if high is not None else f"at least {low}"
        raise ToolFailure(f"{name} must be {bound}, got {value}")
    return value


def _only(arguments: Mapping[str, Any], tool: str, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(arguments) - set(allowed))
    if extra:
        raise ToolFailure(f"{tool}: unexpected argument {extra[0]!r} (arguments: {', '.join(allowed)})")


class SketchTools:
    """The tool implementations over one set of boards. Every method returns a result or raises ``ToolFailure``."""

    def __init__(self, boards: Boards | None = None) -> None:
        self.boards = boards if boards is not None else Boards()

    def call(self, name: str, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """Run one tool call; bad input becomes an ``isError`` result, never an exception."""
        handlers: dict[str, Callable[[Mapping[str, Any]], types.CallToolResult]] = {
            "open_image": self.open_image,
            "new_board": self.new_board,
            "get_view": self.get_view,
            "list_views": self.list_views,
        }
        try:
            if name in handlers:
                return handlers[name](arguments)
            if name in DRAWING_TOOLS:
                return self.draw(name, arguments)
            raise ToolFailure(f"unknown tool {name!r}; tools: {', '.join([*handlers, *DRAWING_TOOLS])}")
        except (ToolFailure, ActionError, ImageInputError) as error:
            return _error(str(error))
        except Exception as error:  # a bug of ours: log it here, send the client one line, keep serving
            logger.exception("tool %r failed", name)
            return _error(f"{name}: internal error ({type(error).__name__}: {error})")

    def open_image(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """Load a local image file as view 1 of a new board."""
        _only(arguments, "open_image", ("path",))
        path = arguments.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ToolFailure("open_image: 'path' must be a non-empty string (an absolute path to an image file)")
        canvas = Canvas(Path(path).expanduser())  # load_image's limits apply (SKETCHMIND_MAX_PIXELS, 64 Mpx)
        board_id, closed = self.boards.open(canvas)
        return _view_result(board_id, canvas.latest, extra=_closed_note(closed))

    def new_board(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """Open a blank white board of the given size."""
        _only(arguments, "new_board", ("width", "height"))
        width = _integer(arguments, "width", 1024, 1, MAX_BOARD_SIDE)
        height = _integer(arguments, "height", 1024, 1, MAX_BOARD_SIDE)
        assert width is not None and height is not None  # both have defaults
        canvas = Canvas(None, whiteboard_size=(width, height))
        board_id, closed = self.boards.open(canvas)
        text = f"board {board_id}: view 1: blank whiteboard ({width}x{height}){_closed_note(closed)}"
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content={"board": board_id, "view": 1, "width": width, "height": height},
        )

    def get_view(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """One view of a board (the latest by default) as an image."""
        _only(arguments, "get_view", ("board", "view"))
        board_id = arguments.get("board")
        canvas = self.boards.get(board_id).canvas
        index = _integer(arguments, "view", None, 1, None)
        return _view_result(str(board_id), canvas[index] if index is not None else canvas.latest)

    def list_views(self, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """The board's provenance, one line per view."""
        _only(arguments, "list_views", ("board",))
        board_id = arguments.get("board")
        canvas = self.boards.get(board_id).canvas
        return types.CallToolResult(
            content=[types.TextContent(type="text", text="\n".join(view_lines(canvas)))],
            structured_content={"board": board_id, "views": canvas.provenance()},
        )

    def draw(self, name: str, arguments: Mapping[str, Any]) -> types.CallToolResult:
        """Run one drawing action on a board; the action's own validation (pydantic) checks the arguments."""
        board_id = arguments.get("board")
        board = self.boards.get(board_id)
        if len(board.canvas) >= MAX_VIEWS:
            raise ToolFailure(f"board {board_id} has {MAX_VIEWS} views, the limit; open a new board to go on")
        action_arguments = {k: v for k, v in arguments.items() if k != "board"}
        outcome = board.canvas.apply(name, action_arguments)
        if isinstance(outcome, ActionError):
            raise outcome
        closed = self.boards.grew(str(board_id), outcome)
        return _view_result(str(board_id), outcome, extra=_closed_note(closed))


# --- server -----------------------------------------------------------------------------------------------


def create_server(boards: Boards | None = None) -> Server[Any]:
    """The MCP server (not yet running) with the SketchMind tools over ``boards``."""
    tools = SketchTools(boards)
    listed = tool_list()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        # Synchronous on purpose: canvas calls take milliseconds, and running them on the event loop means two
        # concurrent requests can never interleave on one board (Canvas is not thread-safe).
        return tools.call(params.name, params.arguments or {})

    schemas = {tool.name: tool.input_schema for tool in listed}
    return Server(
        "sketchmind",
        version=__version__,
        title="SketchMind canvas",
        instructions=INSTRUCTIONS,
        get_tool_input_schema=schemas.get,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(server: Server[Any] | None = None) -> None:
    """Serve over stdin/stdout until the client closes the connection."""
    server = server if server is not None else create_server()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def main() -> int:
    """Run the stdio MCP server (``sketchmind mcp``); returns the exit status."""
    # stdout is the protocol channel: logs must go to stderr, which MCP clients show in their server logs.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        anyio.run(serve_stdio)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
