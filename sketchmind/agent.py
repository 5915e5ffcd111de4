"""The agent: a LangGraph loop in which a policy thinks, draws, looks at its drawing, and answers.

    think --answer--> END
      |--calls--> act --> observe --> think ...
      |--only errors--> observe
      `--budget spent or backend failure--> END

The graph state is plain data (messages, steps, pending calls, the input image, the puzzle if the
caller has one), so the optional SQLite checkpointer can store it and a run can be resumed or
inspected later. The canvas is a cache of that state: rendering is deterministic, so a resumed run
rebuilds it by replaying the recorded calls. The edges are one table (``EDGES``): the LangGraph graph
is compiled from it, and ``solve_batch`` walks the same table with the same node functions in lockstep
outside the graph, so a backend can batch one turn of many puzzles into one forward pass.

A run given ``puzzle=`` carries it in its state, and every turn hands it to the policy in
``Conversation.puzzle``: the one way a puzzle's ground truth reaches a policy (the expert plays it).
"""

from __future__ import annotations

import concurrent.futures
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar
from typing import Protocol as Interface  # `Protocol` here is the prompt format

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from sketchmind.canvas import Canvas, View
from sketchmind.images import ImageSource, load_image, smart_resize
from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling
from sketchmind.protocols import DEFAULT_PROTOCOL, Protocol, ToolCall, ToolResult, get_protocol
from sketchmind.protocols.base import Message, image_budget_error, text_part
from sketchmind.selection import Select, select
from sketchmind.tasks.base import Puzzle
from sketchmind.tools import specs
from sketchmind.trace import Step, Trace

log = logging.getLogger(__name__)
T = TypeVar("T")

Mode = Literal["draw", "text", "latent", "auto"]
Route = Literal["think", "act", "observe", "end"]  # a node, or the end of the run
MODES: tuple[Mode, ...] = ("draw", "text", "latent", "auto")

TEXT_PROMPT = (
    "You are a careful visual reasoner. Think step by step inside <think> </think>, then give the final "
    "answer inside <answer> </answer>. You cannot draw in this mode."
)
TIMEOUT_GRACE = 1.0  # seconds a policy told the budget gets past it to fail with its own (clearer) error
MAX_CACHED_CANVASES = 64  # canvases of recent runs kept for trace(), saving and resume; rebuilt on demand
TEXT_MODE_ERROR = "tools are disabled in text mode: reason in words and give <answer>...</answer>"


@dataclass(frozen=True)
class Budgets:
    """Limits on one run. A run that hits one ends as "no_answer" with its trace kept."""

    max_turns: int = 10
    max_images: int = 45  # views shown to the model, the input included
    max_context_tokens: int | None = None
    timeout: float | None = 120.0  # seconds per backend call (retries included); the policy is told it


class AgentState(TypedDict, total=False):
    """Everything a run needs to continue, as plain data (checkpointable)."""

    run_id: str
    question: str
    image: np.ndarray | None
    messages: list[Message]
    turn: int
    images_shown: int
    pending: list[list[dict[str, Any]]]
    errors: list[str]
    results: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    answer: str | None
    status: str
    error: str | None
    imagining: bool  # latent blocks allowed: the next turn is the last, and its calls are not drawn
    puzzle: Puzzle | None  # what the run solves, when the caller knows (handed to the policy every turn)


class NodeFunction(Interface):
    """A graph node: the update it makes to a run's state (LangGraph merges it; ``_merge`` outside)."""

    def __call__(self, state: AgentState) -> dict[str, Any]: ...


def _call_record(call: ToolCall, group: int) -> dict[str, Any]:
    return {"name": call.name, "arguments": call.arguments, "id": call.id, "group": group}


class Agent:
    """Runs a policy on a question about an image (or a blank whiteboard), drawing as it reasons.

    Args:
        policy: the model backend.
        protocol: prompt format name (``sketchmind``, ``vilasr``, ``openai-tools``, ``search``) or a ``Protocol``;
            None: the one the policy was trained to speak (``policy.protocol_name``), else ``sketchmind``. A
            name speaks the coordinate convention the policy declares (``policy.coords``), else its default.
        budgets: turn, image, context and timeout limits.
        mode: ``draw`` renders tool calls; ``text`` is the chain-of-thought baseline with no tools;
            ``latent`` renders nothing: the policy (a ``LatentPolicy``) imagines in latent blocks, and its one
            turn holds the whole trajectory (calls recorded, never drawn, then the answer); ``auto`` draws
            while it can and switches to ``latent`` once the image budget is spent or a tool fails.
        sampling: decoding settings for every turn.
        checkpoint: path of a SQLite file to checkpoint runs into (resume with ``resume``).
        interrupt_before_act: pause before drawing so a person can edit the calls (``edit``, ``resume``).
    """

    def __init__(
        self,
        policy: Policy,
        protocol: str | Protocol | None = None,
        budgets: Budgets = Budgets(),
        *,
        mode: Mode = "draw",
        sampling: Sampling = Sampling(),
        checkpoint: str | Path | None = None,
        interrupt_before_act: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if mode in ("latent", "auto"):
            from sketchmind.models.latent import LatentPolicy  # no torch at import: the check stays cheap

            if not isinstance(policy, LatentPolicy):
                raise ValueError(
                    f"mode {mode!r} needs a latent-token policy (sketchmind.models.latent.LatentPolicy on a "
                    f"latent checkpoint), got {type(policy).__name__}; use mode 'draw' or 'text'"
                )
        self.policy = policy
        # A protocol named by string speaks the convention the policy was trained on, if it says.
        if protocol is None:
            protocol = policy.protocol_name or DEFAULT_PROTOCOL
        self.protocol = get_protocol(protocol, policy.coords) if isinstance(protocol, str) else protocol
        self.budgets = budgets
        self.mode = mode
        # The policy gets the per-call budget (unless the caller set its own), so its retries fit inside
        # it and a failure reads as the backend's reason ("answered 503 after 3 retries"), not a timeout.
        self.sampling = self._budgeted(sampling, budgets)
        self._canvases: dict[str, Canvas] = {}
        # One model call at a time per agent (policies need not be thread-safe); released at the timeout.
        self._calls = threading.Lock()
        checkpointer = None
        if checkpoint is not None:
            from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
            from langgraph.checkpoint.sqlite import SqliteSaver

            # The state's one class of ours is the puzzle: allowed by name, so reading it back is not
            # an "unregistered type" (which LangGraph warns about now and will refuse later).
            serde = JsonPlusSerializer(allowed_msgpack_modules=[(Puzzle.__module__, Puzzle.__name__)])
            checkpointer = SqliteSaver(sqlite3.connect(str(checkpoint), check_same_thread=False), serde=serde)
        self.graph = self._build_graph().compile(
            checkpointer=checkpointer, interrupt_before=["act"] if interrupt_before_act else None
        )

    # ------------------------------------------------------------------ public API

    def solve(
        self,
        image: ImageSource | None,
        question: str,
        *,
        samples: int = 1,
        select_by: Select = "vote",
        run_id: str | None = None,
        save: str | Path | None = None,
        puzzle: Puzzle | None = None,
    ) -> Trace:
        """Solve one question. With ``samples > 1``, sample that many trajectories and pick one.

        ``puzzle``: the puzzle the question comes from, if known; the policy receives it every turn in
        ``Conversation.puzzle`` (the expert needs it; models ignore it).
        """
        if samples > 1:
            return self._solve_sampled(image, question, samples, select_by, save, puzzle)
        final: AgentState = {}
        for _event, state in self._run(image, question, run_id, save, puzzle):
            final = state
        return self.trace(final)

    def stream(
        self,
        image: ImageSource | None,
        question: str,
        *,
        run_id: str | None = None,
        save: str | Path | None = None,
        puzzle: Puzzle | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield one event per graph step, ``{"node": ..., "step": {...}, "status": ...}``, then
        ``{"node": "end", "trace": Trace}`` (unless the run paused at an interrupt). ``puzzle`` as in ``solve``."""
        final: AgentState = {}
        for event, state in self._run(image, question, run_id, save, puzzle):
            final = state
            yield event
        if final and final.get("status") != "running":
            yield {"node": "end", "trace": self.trace(final), "status": final.get("status")}

    def solve_batch(
        self,
        items: Sequence[tuple[ImageSource | None, str]],
        *,
        sampling: Sampling | None = None,
        run_ids: Sequence[str] | None = None,
        puzzles: Sequence[Puzzle | None] | None = None,
    ) -> list[Trace]:
        """Solve many questions in lockstep: each turn is one ``generate_batch`` call for all live runs.

        ``puzzles[i]`` (if given) is the puzzle of ``items[i]``, handed to the policy as in ``solve``.
        """
        return [trace for trace, _canvas in self._lockstep(items, sampling, run_ids, puzzles)]

    def _lockstep(
        self,
        items: Sequence[tuple[ImageSource | None, str]],
        sampling: Sampling | None,
        run_ids: Sequence[str] | None,
        puzzles: Sequence[Puzzle | None] | None = None,
    ) -> list[tuple[Trace, Canvas]]:
        """``solve_batch``, with each run's canvas: the cache drops them, and a saved trace needs its views.

        Each round is the graph's ``think`` node split around one batched model call (the same checks
        before it, the same update after it), then each run walks ``EDGES`` to its next ``think``.
        """
        for name, given in (("run ids", run_ids), ("puzzles", puzzles)):
            if given is not None and len(given) != len(items):
                raise ValueError(f"got {len(given)} {name} for {len(items)} items")
        ids: Sequence[str | None] = run_ids or [None] * len(items)
        known: Sequence[Puzzle | None] = puzzles or [None] * len(items)
        turn = self.sampling if sampling is None else self._budgeted(sampling, self.budgets)
        states = [
            self._start(image, question, run_id, puzzle)
            for (image, question), run_id, puzzle in zip(items, ids, known, strict=True)
        ]
        while True:
            for state in [s for s in states if s["status"] == "running"]:
                spent = self._before_generation(state)
                if spent is not None:
                    _merge(state, spent)
            live = [s for s in states if s["status"] == "running"]
            if not live:
                break
            conversations = [self._conversation(s) for s in live]
            try:
                generations = self._with_timeout(partial(self.policy.generate_batch, conversations, turn))
            except BackendError as error:
                log.debug("a batched model call failed", exc_info=error)
                for state in live:
                    _merge(state, _failed(error))
                break
            for state, generation in zip(live, generations, strict=True):
                _merge(state, self._after_generation(state, generation))
                self._advance(state)
        for state in states:
            self.policy.release(state["run_id"])
        done = [(self.trace(s), self._canvas(s)) for s in states]
        for state in states:
            self._canvases.pop(state["run_id"], None)  # a long benchmark must not keep every run's views
        return done

    def resume(self, run_id: str) -> Trace:
        """Continue a checkpointed (or interrupted) run to the end."""
        config = self._config(run_id)
        if not self.graph.get_state(config).values:
            raise ValueError(f"no checkpointed run {run_id!r}")
        self.graph.invoke(None, config)
        return self.trace(self.state(run_id))

    def state(self, run_id: str) -> AgentState:
        """The latest checkpointed state of a run."""
        values: AgentState = dict(self.graph.get_state(self._config(run_id)).values)  # type: ignore[assignment]
        return values

    def edit(self, run_id: str, pending: list[list[dict[str, Any]]]) -> None:
        """Replace the calls waiting at an interrupt (a person's edits or added marks)."""
        self.graph.update_state(self._config(run_id), {"pending": pending})

    def canvas(self, run_id: str) -> Canvas | None:
        """The views of a recent run (``None`` once it has left the cache; ``solve_batch`` drops its own)."""
        return self._canvases.get(run_id)

    def trace(self, state: AgentState) -> Trace:
        """The trace of a run's state."""
        canvas = self._canvas(state) if state else None
        return Trace(
            question=state.get("question", ""),
            protocol=self.protocol.name,
            model=getattr(self.policy, "name", type(self.policy).__name__),
            mode=self.mode,
            steps=[
                Step(**{k: v for k, v in s.items() if k in Step.__dataclass_fields__}) for s in state.get("steps", [])
            ],
            answer=state.get("answer"),
            status=state.get("status", "running"),  # type: ignore[arg-type]
            error=state.get("error"),
            meta={"run_id": state.get("run_id"), "turns": state.get("turn", 0)},
            views=canvas.provenance() if canvas else [],
        )

    # ------------------------------------------------------------------ running

    def _config(self, run_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": run_id}, "recursion_limit": 4 * self.budgets.max_turns + 10}

    def _run(
        self,
        image: ImageSource | None,
        question: str,
        run_id: str | None,
        save: str | Path | None,
        puzzle: Puzzle | None = None,
    ) -> Iterator[tuple[dict[str, Any], AgentState]]:
        state = self._start(image, question, run_id, puzzle)
        config = self._config(state["run_id"])
        current: AgentState = dict(state)  # type: ignore[assignment]
        # PNG encoding runs beside the next model call; one worker keeps the saves in order.
        writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sketchmind-save")
        saved: list[concurrent.futures.Future[Path]] = []
        try:
            for update in self.graph.stream(state, config, stream_mode="updates"):
                for node, change in update.items():
                    if node.startswith("__") or not change:
                        continue
                    _merge(current, change)
                    if save is not None:
                        for future in [f for f in saved if f.done()]:
                            saved.remove(future)
                            future.result()  # a failed save (disk full) stops the run here, not at the end
                        saved.append(writer.submit(self.trace(current).save, save, self._canvas(current)))
                    step = current["steps"][-1] if current.get("steps") else None
                    yield {"node": node, "step": step, "status": current.get("status")}, current
        finally:
            writer.shutdown(wait=True)  # a run ends only once its trace is on disk
            self.policy.release(state["run_id"])
        for future in saved:
            future.result()

    def _start(
        self, image: ImageSource | None, question: str, run_id: str | None, puzzle: Puzzle | None = None
    ) -> AgentState:
        pixels = None if image is None else load_image(image)
        if pixels is not None and self.protocol.image_max_pixels is not None:
            pixels = smart_resize(pixels, max_pixels=self.protocol.image_max_pixels)
        run_id = run_id or uuid.uuid4().hex[:12]
        self._allow_latent(run_id, self.mode == "latent")
        canvas = Canvas(pixels, coords=self.protocol.convention, style=self.protocol.style)
        self._keep_canvas(run_id, canvas)
        if self.mode == "text" and self.protocol.draws:
            system = TEXT_PROMPT
        else:
            system = self.protocol.system_prompt(specs(), image_size=canvas.source.size)
        messages: list[Message] = [{"role": "system", "content": [text_part(system)]}] if system else []
        messages.append(self.protocol.first_message(question, has_image=pixels is not None))
        return {
            "run_id": run_id,
            "question": question,
            "image": pixels,
            "messages": messages,
            "turn": 0,
            "images_shown": 0 if pixels is None else 1,
            "pending": [],
            "errors": [],
            "results": [],
            "steps": [],
            "answer": None,
            "status": "running",
            "error": None,
            "imagining": self.mode == "latent",
            "puzzle": puzzle,
        }

    def _allow_latent(self, run_id: str, allowed: bool) -> None:
        """Tell a latent policy whether this run may imagine (only ``latent``/``auto`` have such a policy)."""
        if self.mode in ("latent", "auto"):
            self.policy.set_latent(run_id, allowed)  # type: ignore[attr-defined]

    def _canvas(self, state: AgentState) -> Canvas:
        """The run's canvas; rebuilt by replaying the recorded calls after a resume."""
        run_id = state["run_id"]
        if run_id not in self._canvases:
            canvas = Canvas(state.get("image"), coords=self.protocol.convention, style=self.protocol.style)
            steps = state.get("steps", [])
            if state.get("pending"):
                steps = steps[:-1]  # the last turn's calls wait for `act`: not drawn yet
            for step in steps:
                if step.get("imagined"):
                    continue  # calls made while imagining were never drawn
                for group in _groups(step.get("calls", [])):
                    _execute(canvas, group)
            self._keep_canvas(run_id, canvas)
        return self._canvases[run_id]

    def _keep_canvas(self, run_id: str, canvas: Canvas) -> None:
        """Cache a run's canvas; the oldest go first, so a long benchmark does not hold every image."""
        self._canvases[run_id] = canvas
        while len(self._canvases) > MAX_CACHED_CANVASES:
            del self._canvases[next(iter(self._canvases))]

    def _conversation(self, state: AgentState) -> Conversation:
        canvas = self._canvas(state)
        return Conversation(
            id=state["run_id"],
            messages=state["messages"],
            images={v.index: v.image for v in canvas.views},
            tools=specs() if self.protocol.name == "openai-tools" and self.mode == "draw" else None,
            puzzle=state.get("puzzle"),
        )

    @staticmethod
    def _budgeted(sampling: Sampling, budgets: Budgets) -> Sampling:
        """``sampling`` with the per-call budget as its timeout, unless it has its own."""
        if sampling.timeout is None and budgets.timeout is not None:
            return replace(sampling, timeout=budgets.timeout)
        return sampling

    def _with_timeout(self, call: Callable[[], T]) -> T:
        """Run a backend call with the per-call timeout (a hung call is abandoned, not killed)."""
        if self.budgets.timeout is None:
            with self._calls:
                return call()
        with self._calls:
            try:
                return _call_within(call, self.budgets.timeout + TIMEOUT_GRACE)
            except concurrent.futures.TimeoutError:
                raise BackendError(f"the model did not answer within {self.budgets.timeout:g} s") from None

    # ------------------------------------------------------------------ nodes

    def _think(self, state: AgentState) -> dict[str, Any]:
        """One model turn: the checks before the call, the call, the update after it.

        ``_lockstep`` runs the same two halves around a batched call, so both paths end runs alike.
        """
        spent = self._before_generation(state)
        if spent is not None:
            return spent
        try:
            generation = self._with_timeout(lambda: self.policy.generate(self._conversation(state), self.sampling))
        except BackendError as error:
            log.debug("run %s: the model call failed", state["run_id"], exc_info=error)  # the cause, on request
            return _failed(error)
        return self._after_generation(state, generation)

    def _before_generation(self, state: AgentState) -> dict[str, Any] | None:
        """The update that ends a run before its next model call (context budget spent), else ``None``."""
        if self.budgets.max_context_tokens is not None:
            used = self.policy.count_tokens(self._conversation(state))
            if used is not None and used > self.budgets.max_context_tokens:
                return {
                    "status": "no_answer",
                    "error": f"context budget spent ({used} > {self.budgets.max_context_tokens} tokens)",
                }
        return None

    def _after_generation(self, state: AgentState, generation: Generation) -> dict[str, Any]:
        parsed = self.protocol.parse(generation.message or generation.text)
        assistant: Message = {"role": "assistant", "content": [text_part(generation.text)]}
        if generation.message and generation.message.get("tool_calls"):
            assistant["tool_calls"] = generation.message["tool_calls"]
        calls, errors = parsed.calls, list(parsed.errors)
        imagining = bool(state.get("imagining"))
        if imagining and parsed.answer is not None:
            calls, errors = self._calls_before_answer(generation.text)
        if self.mode == "text" and calls:
            calls, errors = [], [*errors, TEXT_MODE_ERROR]
        groups = self.protocol.group(calls)
        step = Step(
            index=state["turn"] + 1,
            thought=parsed.thought,
            calls=[_call_record(c, g) for g, group in enumerate(groups) for c in group],
            errors=list(errors),
            raw=generation.text,
            tokens_in=generation.tokens_in,
            tokens_out=generation.tokens_out,
            context=generation.context,
            logprob=generation.logprob,
            seconds=generation.seconds,
        )
        update: dict[str, Any] = {
            "messages": [*state["messages"], assistant],
            "steps": [*state["steps"], asdict(step)],
            "pending": [[_call_record(c, g) for c in group] for g, group in enumerate(groups)],
            "errors": errors,
            "results": [],
        }
        if parsed.answer is not None:
            update.update(answer=parsed.answer, status="answered", pending=[])
        elif imagining:  # the latent turn was the whole trajectory: nothing to draw, no next turn
            update.update(status="no_answer", pending=[], error="the latent turn ended without an answer")
        if imagining:
            update["steps"][-1]["imagined"] = True
        return update

    def _calls_before_answer(self, text: str) -> tuple[list[ToolCall], list[str]]:
        """The calls of a latent turn that also answers (``parse`` drops calls beside an answer)."""
        cut = text.lower().find("<answer>")
        if cut < 0:
            return [], []
        before = self.protocol.parse(text[:cut])
        # Without calls, the prefix's only error is "no call or answer found": not the model's mistake.
        return list(before.calls), list(before.errors) if before.calls else []

    def _act(self, state: AgentState) -> dict[str, Any]:
        canvas = self._canvas(state)
        started = time.perf_counter()
        results: list[dict[str, Any]] = []
        shown = state["images_shown"]
        for group in state["pending"]:
            if shown >= self.budgets.max_images:
                error = image_budget_error(self.budgets.max_images)
                results.append({"calls": group, "view": None, "error": error})
                continue
            outcome = _execute(canvas, group)
            if isinstance(outcome, View):
                shown += 1
                results.append({"calls": group, "view": outcome.index, "error": None})
            else:
                results.append({"calls": group, "view": None, "error": str(outcome)})
        update: dict[str, Any] = {}
        if self.mode == "auto" and any(r["error"] for r in results):
            # Drawing is no longer possible (budget spent) or went wrong: the next turn imagines instead.
            self._allow_latent(state["run_id"], True)
            update["imagining"] = True
        steps = list(state["steps"])
        last = dict(steps[-1])
        executed = [call for group in state["pending"] for call in group]
        last.update(
            calls=executed,
            view_ids=[r["view"] for r in results if r["view"] is not None],
            errors=[*last["errors"], *(r["error"] for r in results if r["error"])],
            render_seconds=time.perf_counter() - started,
        )
        steps[-1] = last
        return {**update, "results": results, "pending": [], "images_shown": shown, "steps": steps}

    def _observe(self, state: AgentState) -> dict[str, Any]:
        canvas = self._canvas(state)
        results = [
            ToolResult(
                tuple(ToolCall(c["name"], c["arguments"], c.get("id")) for c in r["calls"]),
                canvas[r["view"]] if r["view"] is not None else r["error"],
            )
            for r in state.get("results", [])
        ]
        turn = state["turn"] + 1
        final = turn >= self.budgets.max_turns - 1 or state["images_shown"] >= self.budgets.max_images
        final = final and not state.get("imagining")  # an imagining model may still "draw", in latents
        observation = self.protocol.observation(results, state.get("errors", []), final=final)
        update: dict[str, Any] = {"messages": [*state["messages"], *observation], "turn": turn, "results": []}
        if turn >= self.budgets.max_turns:
            update.update(status="no_answer", error=f"turn budget spent ({self.budgets.max_turns} turns)")
        return update

    def _nodes(self) -> dict[str, NodeFunction]:
        """The node functions, by name: the graph's and the lockstep batch's alike."""
        return {"think": self._think, "act": self._act, "observe": self._observe}

    def _advance(self, state: AgentState) -> None:
        """Walk ``EDGES`` from a finished ``think`` to the next ``think`` or the end (lockstep batches)."""
        nodes = self._nodes()
        node = EDGES["think"][0](state)
        while node not in ("think", "end"):
            _merge(state, nodes[node](state))
            node = EDGES[node][0](state)

    def _build_graph(self) -> StateGraph[AgentState]:
        graph: StateGraph[AgentState] = StateGraph(AgentState)
        for name, function in self._nodes().items():
            graph.add_node(name, function)
        graph.add_edge(START, "think")
        for name, (route, targets) in EDGES.items():
            graph.add_conditional_edges(name, route, {t: END if t == "end" else t for t in targets})
        return graph

    def _solve_sampled(
        self,
        image: ImageSource | None,
        question: str,
        samples: int,
        select_by: Select,
        save: str | Path | None,
        puzzle: Puzzle | None,
    ) -> Trace:
        sampling = self.sampling
        if sampling.temperature == 0:
            sampling = Sampling(**{**asdict(sampling), "temperature": 0.7})
        runs = self._lockstep([(image, question)] * samples, sampling, None, [puzzle] * samples)
        traces = [trace for trace, _canvas in runs]
        chosen = select(traces, select_by)
        trace, canvas = runs[chosen]
        trace.meta.update(samples=[t.answer for t in traces], selected=chosen, select=select_by)
        if save is not None:
            trace.save(save, canvas)  # with its canvas: the views the trace names are written beside it
        return trace


def _call_within(call: Callable[[], T], limit: float) -> T:
    """``call()`` on a fresh daemon thread, waited for at most ``limit`` seconds (``TimeoutError`` past it).

    Python cannot kill a thread, so a call still running at the limit is abandoned: its thread ends or
    hangs on its own, and as a daemon it never holds up the process's exit. A thread per call, not a
    shared one-worker pool, so an abandoned call never queues every later call behind it.
    """
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(call())
        except BaseException as error:  # handed to the waiting caller, who re-raises it
            future.set_exception(error)

    threading.Thread(target=run, name="sketchmind-model", daemon=True).start()
    return future.result(timeout=limit)


def _merge(state: AgentState, update: dict[str, Any]) -> None:
    """Apply a node's update to a state outside the graph (LangGraph does this inside it)."""
    state.update(update)  # type: ignore[typeddict-item]


def _failed(error: BackendError) -> dict[str, Any]:
    """The update that ends a run whose model call failed (one call or a batched one)."""
    return {"status": "error", "error": str(error)}


def _after_think(state: AgentState) -> Route:
    if state.get("status") != "running":
        return "end"
    return "act" if state.get("pending") else "observe"


def _after_act(state: AgentState) -> Route:
    return "observe"  # drawn or refused, the results go back to the model


def _after_observe(state: AgentState) -> Route:
    return "think" if state.get("status") == "running" else "end"


# The graph's edges, defined once: after each node, the function that picks the next one and every node it
# may pick. ``Agent._build_graph`` compiles them into the LangGraph graph; ``Agent._advance`` walks them
# for lockstep batches, so a single and a batched run cannot take different routes.
EDGES: dict[str, tuple[Callable[[AgentState], Route], tuple[Route, ...]]] = {
    "think": (_after_think, ("act", "observe", "end")),
    "act": (_after_act, ("observe",)),
    "observe": (_after_observe, ("think", "end")),
}


def _groups(calls: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[int, list[dict[str, Any]]] = {}
    for call in calls:
        groups.setdefault(int(call.get("group", len(groups))), []).append(call)
    return list(groups.values())


def _execute(canvas: Canvas, group: Sequence[dict[str, Any]]) -> Any:
    if len(group) == 1:
        return canvas.apply(group[0]["name"], group[0]["arguments"])
    return canvas.apply_group([(c["name"], c["arguments"]) for c in group])
