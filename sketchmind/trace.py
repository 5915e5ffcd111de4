"""The record of one solve: every model turn, the calls it made, the views they drew, and the outcome.

A trace directory holds ``trace.json`` and ``views/NNN.png`` (one PNG per canvas view, numbered from
001 like the views). ``Trace.save`` is meant to be called after every step: it only encodes views it
has not written yet, and every file is replaced atomically, so a run killed at any moment leaves a
directory that ``Trace.load`` (and the HTML viewer) can read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

from sketchmind.files import write_atomic, write_json_atomic

if TYPE_CHECKING:
    from sketchmind.canvas import Canvas

Status = Literal["running", "answered", "no_answer", "error"]
STATUSES: tuple[Status, ...] = get_args(Status)

TRACE_FILE = "trace.json"
VIEWS_DIR = "views"

_T = TypeVar("_T")


class TraceError(ValueError):
    """A directory that is not a readable trace. The message is one line naming the path."""


def view_filename(index: int) -> str:
    """The PNG name of a view inside ``views/``, e.g. ``001.png`` for view 1."""
    return f"{index:03d}.png"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Step:
    """One model turn.

    Attributes:
        index: the 1-based turn number.
        thought: the model's reasoning text for this turn.
        calls: the tool calls as ``{"name": ..., "arguments": {...}}`` dicts, as the model wrote them.
        view_ids: the views this step created.
        errors: parse and tool errors shown to the model.
        raw: the raw model output.
        tokens_in, tokens_out: token counts reported by the backend, if any.
        context: the tokens in the model's context after this step (prompt + output), if reported.
        logprob: summed log-probability of the output tokens, if the backend reports it.
        seconds: time spent in the model; render_seconds: time spent drawing views.
    """

    index: int
    thought: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    view_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    raw: str = ""
    tokens_in: int | None = None
    tokens_out: int | None = None
    context: int | None = None
    logprob: float | None = None
    seconds: float | None = None
    render_seconds: float | None = None


@dataclass
class Trace:
    """The record of one solve, saved as a directory by ``save`` and read back by ``load``.

    ``views`` holds ``Canvas.provenance()`` records (how each view was made); the pixels live in
    ``views/NNN.png`` next to ``trace.json``.
    """

    question: str
    protocol: str
    model: str
    mode: str = "draw"
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    status: Status = "running"
    error: str | None = None
    created: str = field(default_factory=_now)
    meta: dict[str, Any] = field(default_factory=dict)
    views: list[dict[str, Any]] = field(default_factory=list)

    def add_step(self, step: Step) -> Step:
        """Append a step and return it (so callers can keep filling it in)."""
        self.steps.append(step)
        return step

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens over all steps; unreported counts are taken as zero."""
        return sum((s.tokens_in or 0) + (s.tokens_out or 0) for s in self.steps)

    @property
    def n_images(self) -> int:
        """Number of views recorded (the input image included), i.e. the PNGs under ``views/``."""
        return len(self.views)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, exactly what ``trace.json`` holds."""
        return asdict(self)

    def save(self, directory: str | os.PathLike[str], canvas: Canvas | None = None) -> Path:
        """Write ``trace.json`` and one PNG per canvas view into ``directory``; return its path.

        Safe to call after every step: views already on disk are not re-encoded (views never change),
        and each file is written to a temporary name and renamed, so readers never see a partial file.
        With a canvas, ``views`` is refreshed from ``canvas.provenance()``. A failed write (disk full)
        raises ``sketchmind.files.SaveError`` (one line) and leaves the previous ``trace.json`` intact.
        """
        root = Path(directory)
        views_dir = root / VIEWS_DIR
        views_dir.mkdir(parents=True, exist_ok=True)
        if canvas is not None:
            # One snapshot of the views: the agent may append more while a background writer saves.
            count = len(canvas.views)
            # PNGs before trace.json, so the JSON never names a view whose image is not yet written.
            for view in canvas.views[:count]:
                path = views_dir / view_filename(view.index)
                if not path.exists():
                    write_atomic(path, view.png())
            self.views = canvas.provenance()[:count]
        write_json_atomic(root / TRACE_FILE, self.to_dict())
        return root

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Trace:
        """Read a trace written by ``save``. Raises ``TraceError`` if it is missing or malformed."""
        root = Path(directory)
        path = root / TRACE_FILE
        if not root.is_dir():
            raise TraceError(f"{root}: no such directory")
        if not path.is_file():
            raise TraceError(f"{root}: no {TRACE_FILE} (not a trace directory)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise TraceError(f"{path}: not valid JSON (line {error.lineno})") from None
        except UnicodeDecodeError:
            raise TraceError(f"{path}: not UTF-8 text") from None
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: object, where: str = "trace") -> Trace:
        """Build a trace from ``to_dict`` output, checking types. Raises ``TraceError``."""
        record = _expect(data, dict, where, "the top level")
        steps = [
            _step(_expect(s, dict, where, f"steps[{i}]"), where, f"steps[{i}]")
            for i, s in enumerate(_field(record, "steps", list, where, []))
        ]
        status = _field(record, "status", str, where, "running")
        if status not in STATUSES:
            raise TraceError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
        return cls(
            question=_field(record, "question", str, where),
            protocol=_field(record, "protocol", str, where),
            model=_field(record, "model", str, where),
            mode=_field(record, "mode", str, where, "draw"),
            steps=steps,
            answer=_optional(record, "answer", str, where),
            status=status,
            error=_optional(record, "error", str, where),
            created=_field(record, "created", str, where, ""),
            meta=_field(record, "meta", dict, where, {}),
            views=[
                _expect(v, dict, where, f"views[{i}]") for i, v in enumerate(_field(record, "views", list, where, []))
            ],
        )


def _step(record: dict[str, Any], where: str, name: str) -> Step:
    def number(key: str) -> float | None:
        value = record.get(key)
        # bool is an int subclass; a true/false count is corruption, not a number.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TraceError(f"{where}: {name}.{key} must be a number or null, got {type(value).__name__}")
        return value

    def count(key: str) -> int | None:
        value = number(key)
        if value is not None and not isinstance(value, int):
            raise TraceError(f"{where}: {name}.{key} must be an integer or null")
        return value

    index = _field(record, "index", int, where, prefix=name)
    return Step(
        index=index,
        thought=_field(record, "thought", str, where, "", prefix=name),
        calls=[
            _expect(c, dict, where, f"{name}.calls[{i}]")
            for i, c in enumerate(_field(record, "calls", list, where, [], prefix=name))
        ],
        view_ids=[
            _expect(v, int, where, f"{name}.view_ids[{i}]")
            for i, v in enumerate(_field(record, "view_ids", list, where, [], prefix=name))
        ],
        errors=[
            _expect(e, str, where, f"{name}.errors[{i}]")
            for i, e in enumerate(_field(record, "errors", list, where, [], prefix=name))
        ],
        raw=_field(record, "raw", str, where, "", prefix=name),
        tokens_in=count("tokens_in"),
        tokens_out=count("tokens_out"),
        context=count("context"),
        logprob=number("logprob"),
        seconds=number("seconds"),
        render_seconds=number("render_seconds"),
    )


_MISSING: Any = object()


def _expect(value: object, kind: type[_T], where: str, name: str) -> _T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TraceError(f"{where}: {name} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _field(
    record: dict[str, Any], key: str, kind: type[_T], where: str, default: _T = _MISSING, prefix: str = ""
) -> _T:
    name = f"{prefix}.{key}" if prefix else key
    if key not in record:
        if default is _MISSING:
            raise TraceError(f"{where}: missing field {name!r}")
        return default
    return _expect(record[key], kind, where, name)


def _optional(record: dict[str, Any], key: str, kind: type[_T], where: str) -> _T | None:
    value = record.get(key)
    return None if value is None else _expect(value, kind, where, key)
