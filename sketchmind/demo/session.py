"""One visitor's state: the puzzle they generated and the run they are watching or steering.

A run is driven segment by segment. Without step-by-step there is one segment (``Agent.stream``). In
step-by-step mode the agent pauses before each drawing step (``interrupt_before_act``); the person's
edits go in with ``Agent.edit`` and the next segment streams the checkpointed graph on from the pause.
``Agent.stream`` releases the policy's per-run state when a segment ends, so each later segment arms
the policy again (a latent policy's switch) before it continues; the puzzle travels in the run's state.
"""

from __future__ import annotations

import atexit
import copy
import io
import re
import shutil
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.runnables import RunnableConfig
from PIL import Image

from sketchmind.agent import Agent, AgentState, Budgets, Mode
from sketchmind.canvas import Canvas
from sketchmind.demo.limits import DemoInputError
from sketchmind.files import safe_child, write_atomic
from sketchmind.models.base import Policy
from sketchmind.tasks import Puzzle, TaskFamily, get_family, puzzle_rng
from sketchmind.trace import TRACE_FILE, VIEWS_DIR, Trace, view_filename

MAX_SEED = 2**32 - 1
_PROCESS_FOLDER: list[Path] = []  # one temporary folder per process, holding every session's; gone at exit
_PROCESS_LOCK = threading.Lock()
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")  # characters a download name drops
MODEL_TURNS = 10  # turn budget for neural models; the expert gets as many as its trajectory has


def _process_folder() -> Path:
    """The folder all sessions of this process keep their files in, deleted when the process exits
    (a session's own folder goes earlier, when gradio deletes the session)."""
    with _PROCESS_LOCK:
        if not _PROCESS_FOLDER:
            folder = Path(tempfile.mkdtemp(prefix="sketchmind-demo-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _PROCESS_FOLDER.append(folder)
        return _PROCESS_FOLDER[0]


@dataclass(frozen=True)
class GeneratedPuzzle:
    """A puzzle made in this session, with the PNG shown on the page."""

    family: TaskFamily
    puzzle: Puzzle
    seed: int
    path: Path

    def matches(self, pixels: np.ndarray | None) -> bool:
        """Whether ``pixels`` are this puzzle's image (so its ground truth applies to them)."""
        image = self.puzzle.image
        return pixels is not None and image is not None and np.array_equal(pixels, image)


@dataclass
class ActiveRun:
    """One solve: the agent, what it has done so far, and, once over, its trace and zip archive."""

    agent: Agent
    policy: Policy
    run_id: str
    question: str
    model: str
    directory: Path
    puzzle: GeneratedPuzzle | None = None
    step_by_step: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    proposed: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # calls as the model wrote them
    pending: list[list[dict[str, Any]]] = field(default_factory=list)  # calls waiting at a pause
    busy: bool = False
    failure: str | None = None  # why the run stopped without a trace (an unexpected error)
    trace: Trace | None = None
    archive: Path | None = None
    download_name: str = "sketchmind-trace.zip"  # the zip's file name, as the visitor downloads it

    @property
    def paused(self) -> bool:
        """Waiting for the person at a step-by-step pause."""
        return self.trace is None and self.failure is None and not self.busy and bool(self.pending)

    @property
    def canvas(self) -> Canvas | None:
        """The run's views so far."""
        return self.agent.canvas(self.run_id)

    def view_path(self, index: int) -> Path:
        """Where view ``index`` is saved as PNG (written as soon as the view exists)."""
        return self.directory / VIEWS_DIR / view_filename(index)

    def fail(self, message: str) -> None:
        """Stop the run after an unexpected error; the page shows ``message`` instead of an answer."""
        self.busy = False
        self.pending = []
        if self.trace is None:
            self.failure = message
            self.policy.release(self.run_id)

    def correct(self) -> bool | None:
        """Whether the answer solves the generated puzzle; ``None`` without a puzzle or an answer."""
        if self.puzzle is None or self.trace is None or self.trace.answer is None:
            return None
        return self.puzzle.family.verify(self.puzzle.puzzle, self.trace.answer)

    # ------------------------------------------------------------------ driving

    def start(self, image: np.ndarray | None) -> Iterator[None]:
        """Run the first segment, yielding after every graph step."""
        self.busy = True
        try:
            puzzle = self.puzzle.puzzle if self.puzzle is not None else None
            for event in self.agent.stream(image, self.question, run_id=self.run_id, puzzle=puzzle):
                self._record(event)
                yield
        finally:
            self.busy = False
        self._after_segment()

    def proceed(self, pending: list[list[dict[str, Any]]] | None = None) -> Iterator[None]:
        """Continue from a pause, with the person's calls if given, yielding after every graph step."""
        if not self.paused:
            raise DemoInputError("Nothing is waiting: tick 'step by step' and click Solve to steer a run.")
        if pending is not None:
            self.agent.edit(self.run_id, pending)
        self.pending = []
        self.busy = True
        config: RunnableConfig = {
            "configurable": {"thread_id": self.run_id},
            "recursion_limit": 4 * self.agent.budgets.max_turns + 10,
        }
        current = self.agent.state(self.run_id)
        self._arm(current)
        try:
            for update in self.agent.graph.stream(None, config, stream_mode="updates"):
                for node, change in update.items():
                    if node.startswith("__") or not change:
                        continue
                    current.update(change)
                    steps = current.get("steps") or []
                    self._record({"node": node, "step": steps[-1] if steps else None})
                    yield
        finally:
            self.busy = False
            self.policy.release(self.run_id)
        if current.get("status") != "running":
            self._finish(self.agent.trace(current))
        self._after_segment()

    def _arm(self, state: AgentState) -> None:
        """Give the policy back the per-run state ``release`` dropped at the end of the last segment.

        The puzzle needs no arming: it is in the checkpointed state, and every turn hands it on.
        """
        set_latent = getattr(self.policy, "set_latent", None)
        if self.agent.mode in ("latent", "auto") and callable(set_latent):
            set_latent(self.run_id, self.agent.mode == "latent" or bool(state.get("imagining")))

    def _record(self, event: dict[str, Any]) -> None:
        if event["node"] == "end":
            self._finish(event["trace"])
            return
        step = event.get("step")
        if step is not None:
            step = copy.deepcopy(step)
            if self.steps and self.steps[-1]["index"] == step["index"]:
                self.steps[-1] = step
            else:
                self.steps.append(step)
            if event["node"] == "think":
                self.proposed[step["index"]] = copy.deepcopy(step.get("calls", []))
        self._write_views()

    def _after_segment(self) -> None:
        if self.trace is not None or not self.step_by_step:
            return
        state = self.agent.state(self.run_id)
        if state.get("status") == "running" and state.get("pending"):
            self.pending = copy.deepcopy(state["pending"])
        else:  # pragma: no cover - a segment ends either at a pause or at the end
            self._finish(self.agent.trace(state))

    def _write_views(self) -> None:
        canvas = self.canvas
        if canvas is None:
            return
        (self.directory / VIEWS_DIR).mkdir(parents=True, exist_ok=True)
        for view in list(canvas.views):
            path = self.view_path(view.index)
            if not path.exists():
                write_atomic(path, view.png())

    def _finish(self, trace: Trace) -> None:
        if self.trace is not None:
            return
        self.pending = []
        trace.meta.update(model_spec=self.model, demo=True)
        if self.puzzle is not None:
            trace.meta.update(puzzle=self.puzzle.puzzle.id, seed=self.puzzle.seed, expected=self.puzzle.puzzle.answer)
            trace.meta["correct"] = (
                self.puzzle.family.verify(self.puzzle.puzzle, trace.answer) if trace.answer is not None else False
            )
        self.trace = trace
        trace.save(self.directory, self.canvas)
        # A folder per run keeps the readable name unique; gradio serves the file under its own name.
        self.archive = self.directory.parent / "zips" / self.run_id / self.download_name
        self.archive.parent.mkdir(parents=True, exist_ok=True)
        packed = io.BytesIO()  # built in memory, then written atomically: a download is never half a zip
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(self.directory / TRACE_FILE, f"{self.run_id}/{TRACE_FILE}")
            for png in sorted((self.directory / VIEWS_DIR).glob("*.png")):
                archive.write(png, f"{self.run_id}/{VIEWS_DIR}/{png.name}")
        write_atomic(self.archive, packed.getvalue())
        self.policy.release(self.run_id)


def archive_name(puzzle: GeneratedPuzzle | None, source: str | None, mode: str) -> str:
    """The trace zip's file name: what was solved and how, e.g. ``sketchmind-trace-maze-L1-0-seed0-draw.zip``."""
    if puzzle is not None:
        what = f"{puzzle.puzzle.id}-seed{puzzle.seed}"
    else:
        stem = _UNSAFE_NAME.sub("-", Path(source or "").stem).strip("-.")[:40]
        what = stem or "upload"
    return f"sketchmind-trace-{what}-{mode}.zip"


@dataclass
class DemoSession:
    """Everything one browser session owns; kept in a ``gr.State`` and deleted with it."""

    root: Path | None = None
    puzzle: GeneratedPuzzle | None = None
    run: ActiveRun | None = None

    def folder(self) -> Path:
        """This session's private temporary folder (made on first use)."""
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="session-", dir=_process_folder()))
        return self.root

    def generate(self, family_name: str, level: int | float | None, seed: int | float | None) -> GeneratedPuzzle:
        """Make a puzzle and remember it; ``DemoInputError`` for an unknown family, level or seed."""
        try:
            family = get_family(str(family_name))
        except ValueError as error:
            raise DemoInputError(str(error)) from None
        if level is None or seed is None or int(level) != level or int(seed) != seed:
            raise DemoInputError("Level and seed must be whole numbers.")
        if not 0 <= int(seed) <= MAX_SEED:
            raise DemoInputError(f"The seed must be between 0 and {MAX_SEED}.")
        try:
            family.check_level(int(level))
        except ValueError as error:
            raise DemoInputError(str(error)) from None
        puzzle = family.generate(puzzle_rng(family.name, int(seed), int(level), 0), int(level), 0)
        if puzzle.image is None:  # pragma: no cover - every family draws its puzzle
            raise DemoInputError(f"{family.name} puzzles have no image.")
        # The name comes from the puzzle: it must still land inside this session's folder.
        path = safe_child(self.folder(), f"puzzles/{puzzle.id}-seed{int(seed)}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        png = io.BytesIO()
        Image.fromarray(puzzle.image, "RGB").save(png, format="PNG")
        write_atomic(path, png.getvalue())
        self.puzzle = GeneratedPuzzle(family, puzzle, int(seed), path)
        return self.puzzle

    def new_run(
        self,
        policy: Policy,
        *,
        model: str,
        mode: Mode,
        question: str,
        pixels: np.ndarray | None,
        step_by_step: bool,
        source: str | None = None,
    ) -> ActiveRun:
        """Set up a run, replacing any earlier one; ``DemoInputError`` for a mode the model cannot run.

        A refused run leaves the earlier one as it was (on the page too). ``source`` names the image (an
        upload's file name) in the trace download's name.
        """
        puzzle = self.puzzle if self.puzzle is not None and self.puzzle.matches(pixels) else None
        run_id = f"{puzzle.puzzle.id}-{uuid.uuid4().hex[:6]}" if puzzle else uuid.uuid4().hex[:12]
        if policy.needs_puzzle and puzzle is None:
            raise DemoInputError("The expert only plays generated puzzles: click Generate (and keep its image) first.")
        planned = policy.planned_turns(puzzle.puzzle) if puzzle is not None else None
        turns = MODEL_TURNS if planned is None else planned + 1  # a known trajectory, and its answer
        directory = safe_child(self.folder(), f"runs/{run_id}")
        directory.mkdir(parents=True, exist_ok=True)
        try:
            agent = Agent(
                policy,
                None,  # the protocol the policy was trained to speak
                Budgets(max_turns=turns),
                mode=mode,
                checkpoint=directory.parent / f"{run_id}.sqlite" if step_by_step else None,
                interrupt_before_act=step_by_step,
            )
        except ValueError as error:  # a mode the policy does not support
            policy.release(run_id)
            raise DemoInputError(str(error)) from None
        self.close_run()
        self.run = ActiveRun(agent, policy, run_id, question, model, directory, puzzle, step_by_step)
        self.run.download_name = archive_name(puzzle, source, mode)
        return self.run

    def close_run(self) -> None:
        """Forget the current run (its files stay until the session ends)."""
        if self.run is not None and self.run.trace is None:
            self.run.policy.release(self.run.run_id)
        self.run = None

    def close(self) -> None:
        """Delete the session's files (``gr.State``'s delete callback)."""
        self.close_run()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
