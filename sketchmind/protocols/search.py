"""The written search: how a policy trained by the search stage (``stages.search``, arm ``text``) speaks.

Such a policy was trained with no system prompt and no tools. It sees the map and the question, and writes
where the player and the goal are, its search one tried move a line, and the plan::

    Find P 4,4, G 2,1.
    4,4 L: 4,3 F
    4,3 U: 3,3 F
    ...
    Action plan: L,U,U,L,L

So its protocol has no system prompt and no tools: the search is the thought, the last ``Action plan:``
line the answer (``tasks.frozenlake_search`` describes the search). A turn without a plan gets one line back
saying so, as any malformed turn does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sketchmind.protocols.base import Message, ModelOutput, ParsedTurn, Protocol, ToolResult, outcome_text, text_part

_PLAN = re.compile(r"^\s*Action plan:.*$", re.M | re.I)

NO_PLAN = 'no "Action plan:" line: end the search with the plan, e.g. "Action plan: R,D,D"'


class SearchProtocol(Protocol):
    """The search stage's format: no system prompt, no tools, the plan line as the answer."""

    name = "search"
    draws: ClassVar[bool] = False

    def system_prompt(self, tools: Sequence[Mapping[str, Any]], image_size: tuple[int, int] | None = None) -> str:
        return ""  # trained without one: any prompt would be text the policy never saw

    def parse(self, output: ModelOutput) -> ParsedTurn:
        text = output if isinstance(output, str) else str(output.get("content") or "")
        plans = list(_PLAN.finditer(text))
        if not plans:
            return ParsedTurn(thought=text.strip(), errors=[NO_PLAN])
        last = plans[-1]
        return ParsedTurn(thought=text[: last.start()].strip(), answer=last.group(0).strip())

    def format_turn(self, thought: str, calls: Sequence[Any] = (), answer: str | None = None) -> str:
        if calls:
            raise ValueError("the search protocol has no tools")
        return "\n".join(part for part in (thought.strip(), (answer or "").strip()) if part)

    def observation(
        self, results: Sequence[ToolResult], errors: Sequence[str] = (), final: bool = False
    ) -> list[Message]:
        lines = [f"error: {error}" for error in errors] + [outcome_text(result) for result in results]
        return [{"role": "user", "content": [text_part("\n".join(lines) or NO_PLAN)]}]
