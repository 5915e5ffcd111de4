"""What a run looks like on the page: chat messages, the gallery of views, and the status line.

Everything is rendered from the run's recorded steps, so a refresh after any event (a graph step, a
pause, an edit) shows the same thing. Thoughts and tool calls are collapsible messages (gradio's
``metadata`` titles); each rendered view is an inline image.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from sketchmind.demo.limits import one_line
from sketchmind.demo.models import NOTE_TITLE, upload_note
from sketchmind.demo.session import ActiveRun

Message = dict[str, Any]
ICONS = {"zoom": "⊕", "crop": "✂"}  # every other tool is a drawn mark: ✏
# Symbols from the Dingbats and Misc Symbols blocks, which common fonts (DejaVu) have: no emoji font needed.


def call_title(call: dict[str, Any], *, yours: bool = False) -> str:
    """A tool call's one-line title, e.g. ``✏ box 'player'`` (``✍`` for a call the person made)."""
    arguments = call.get("arguments") or {}
    label = arguments.get("label") if isinstance(arguments, dict) else None
    title = f"{ICONS.get(call['name'], '✏')} {call['name']}"
    if label:
        title += f" '{label}'"
    if call["name"] == "zoom" and isinstance(arguments, dict) and "factor" in arguments:
        title += f" ×{arguments['factor']:g}" if isinstance(arguments["factor"], int | float) else ""
    return f"✍ {title[2:]} (yours)" if yours else title


def _same(call: dict[str, Any], other: dict[str, Any]) -> bool:
    return bool(call["name"] == other["name"] and call.get("arguments") == other.get("arguments"))


def chat_messages(run: ActiveRun) -> list[Message]:
    """The run as chat messages: question, thoughts, calls, views, errors, pause or answer."""
    messages: list[Message] = [{"role": "user", "content": run.question}]
    if run.puzzle is None and (note := upload_note(run.model)):
        messages.append({"role": "assistant", "content": note, "metadata": {"title": NOTE_TITLE}})
    canvas = run.canvas
    for step in run.steps:
        index = step["index"]
        if step.get("thought"):
            messages.append(
                {"role": "assistant", "content": step["thought"], "metadata": {"title": f"✦ Turn {index}: thinking"}}
            )
        proposed = run.proposed.get(index, [])
        for call in step.get("calls", []):
            yours = not any(_same(call, p) for p in proposed)
            arguments = json.dumps(call.get("arguments") or {})
            messages.append(
                {
                    "role": "assistant",
                    "content": f"```json\n{arguments}\n```",
                    "metadata": {"title": call_title(call, yours=yours), "status": "done"},
                }
            )
        for view_id in step.get("view_ids", []):
            path = run.view_path(view_id)
            if canvas is None or view_id > len(canvas) or not path.exists():
                continue
            # The caption is a line of its own above the view: as the image's label (the chat shows any
            # label, show_label or not) it would cover the top of a small view.
            caption = canvas[view_id].describe()
            picture = gr.Image(str(path), show_label=False, buttons=["download", "fullscreen"])
            messages.append({"role": "assistant", "content": [caption, picture]})
        for error in step.get("errors", []):
            messages.append(
                {"role": "assistant", "content": error, "metadata": {"title": "⚠ error shown to the model"}}
            )
    if run.paused:
        messages.append(
            {
                "role": "assistant",
                "content": "The model wants to draw the calls shown below the chat. Accept them, edit them, "
                "or add your own mark.",
                "metadata": {"title": "❚❚ Paused before drawing", "status": "pending"},
            }
        )
    elif run.failure is not None:
        messages.append({"role": "assistant", "content": f"**Stopped:** {run.failure}"})
    elif run.trace is None:
        messages.append(
            {
                "role": "assistant",
                "content": "The model is writing its next turn.",
                "metadata": {"title": "⚙ Thinking…", "status": "pending"},
            }
        )
    else:
        messages.append({"role": "assistant", "content": final_text(run)})
    return messages


def final_text(run: ActiveRun) -> str:
    """The closing message: the answer and, for a generated puzzle, whether it is right."""
    trace = run.trace
    if trace is None:
        return ""
    if trace.answer is None:
        return f"**No answer** ({trace.error or trace.status})."
    text = f"**Answer: {trace.answer}**"
    correct = run.correct()
    if correct is True:
        text += " ✔ correct"
    elif correct is False and run.puzzle is not None:
        text += f" ✘ wrong (the puzzle's answer is {run.puzzle.puzzle.answer})"
    return text


def gallery_items(run: ActiveRun) -> list[tuple[str, str]]:
    """Every view saved so far as (PNG path, caption), the input first."""
    canvas = run.canvas
    if canvas is None:
        return []
    return [
        (str(run.view_path(view.index)), view.describe()) for view in canvas.views if run.view_path(view.index).exists()
    ]


def status_line(run: ActiveRun) -> str:
    """One line on how the run stands."""
    name = run.puzzle.puzzle.id if run.puzzle else "your image"
    if run.paused:
        turn = run.steps[-1]["index"] if run.steps else 1
        return f"❚❚ Paused before drawing turn {turn} of {name}: accept, edit the calls, or add your mark."
    trace = run.trace
    if run.failure is not None:
        return f"⚠ {run.failure}"
    if trace is None:
        return f"⚙ Solving {name} with {run.model} ({run.agent.mode})…"
    if trace.status == "error":
        return f"⚠ Backend error: {one_line(trace.error)}"
    if trace.answer is None:
        return f"No answer: {one_line(trace.error or trace.status)}."
    correct = run.correct()
    if correct is True:
        return f"✔ Correct: {name}'s answer is {trace.answer}."
    if correct is False and run.puzzle is not None:
        return f"✘ Wrong: {name}'s answer is {run.puzzle.puzzle.answer}, the model said {trace.answer}."
    return f"Answered {trace.answer!r} (an uploaded image has no ground truth to check against)."
