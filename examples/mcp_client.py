"""Drive the SketchMind MCP server with the official MCP client, the way Claude Desktop or Cursor would.

    python examples/mcp_client.py [OUT.png]

Starts ``python -m sketchmind.mcp_server`` as a subprocess over stdio, opens a blank board, draws a box
and a line, lists the views and saves the last view as a PNG (default ``runs/mcp-example.png``).
"""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

from mcp import ClientSession, StdioServerParameters, stdio_client, types

ROOT = Path(__file__).resolve().parents[1]


def text_of(result: types.CallToolResult) -> str:
    """The text parts of a tool result; a failed call (``is_error``) carries one line saying why."""
    text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    if result.is_error:
        raise SystemExit(f"tool call failed: {text}")
    return text


async def main(out: Path) -> None:
    # The same command an MCP client config names; cwd=ROOT so the repo's package is importable uninstalled.
    server = StdioServerParameters(command=sys.executable, args=["-m", "sketchmind.mcp_server"], cwd=ROOT)
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        print("tools:", ", ".join(tool.name for tool in tools.tools))

        # Every board has an id; every drawing call names the board and makes a new view on it.
        opened = await session.call_tool("new_board", {"width": 400, "height": 300})
        print(text_of(opened))
        assert isinstance(opened.structured_content, dict)  # machine-readable twin of the text
        board = opened.structured_content["board"]

        print(text_of(await session.call_tool("box", {"board": board, "bbox": [50, 50, 200, 150], "label": "A"})))
        line = {"board": board, "start": [200, 150], "end": [350, 250], "arrow": True, "label": "to B"}
        print(text_of(await session.call_tool("line", line)))

        # A mistake comes back as a result with is_error set, not as an exception: the model can fix it.
        wrong = await session.call_tool("box", {"board": board, "bbox": [50, 50, 900, 150]})
        print("error for the model:", wrong.content[0].text if isinstance(wrong.content[0], types.TextContent) else "")

        print(text_of(await session.call_tool("list_views", {"board": board})))

        # get_view returns the view as base64 PNG image content (the latest view when `view` is left out).
        view = await session.call_tool("get_view", {"board": board})
        print(text_of(view))
        image = next(c for c in view.content if isinstance(c, types.ImageContent))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(image.data))
        print(f"saved the last view to {out}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/mcp-example.png")))
