"""The Gradio page: pick or upload an image, ask, and watch the model reason by drawing (or steer it).

Endpoints (``api_name``), for ``gradio_client`` as well as the page:

- ``/generate`` (family, level, seed) -> image, question, status: make a puzzle and show it.
- ``/check_image`` (image) -> image, status: refuse a corrupt or oversized upload with one line.
- ``/model_note`` (image, model) -> note: what to know before running the model on this image (the
  shipped policy on an upload: it is a grid-puzzle specialist, and how to pick a general VLM).
- ``/solve`` (image, question, model, mode, step_by_step) -> chat, gallery, answer, status, trace zip,
  pending calls, pause panel: stream a run; in step-by-step mode it stops at the first pause.
- ``/accept`` () -> the same outputs: continue a paused run with the model's calls.
- ``/apply_edits`` (pending JSON) -> the same: continue with the edited calls.
- ``/add_mark`` (kind, coordinates, label, pending JSON) -> the same: add a box or line, continue.

Per-visitor state (the puzzle, the run and its agent) lives in a ``gr.State``; only loaded policies
are shared between visitors (``sketchmind.demo.models``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gradio as gr

from sketchmind.agent import MODES, Mode
from sketchmind.demo.chat import chat_messages, gallery_items, status_line
from sketchmind.demo.edits import MARK_KINDS, check_on_latest, coordinate_hint, json_to_pending, make_mark
from sketchmind.demo.edits import pending_to_json as _pending_json
from sketchmind.demo.limits import MAX_QUESTION_CHARS, DemoInputError, check_question, one_line, read_upload
from sketchmind.demo.models import (
    CUSTOM_HINT,
    EXPERT,
    NOTE_TITLE,
    default_model_value,
    load_cached,
    model_choices,
    modes_for,
    policy_spec,
    upload_note,
)
from sketchmind.demo.session import ActiveRun, DemoSession
from sketchmind.models.base import Policy
from sketchmind.models.expert import ExpertPolicy
from sketchmind.tasks import FAMILY_NAMES, get_family

TITLE = "SketchMind: reasoning by drawing"
INTRO = (
    "# ✏ SketchMind\n"
    "A vision-language model that **reasons by drawing**: it marks the image (boxes, lines, paths, zooms), "
    "looks at its own drawing, and answers. Generate a puzzle or upload an image, ask a question, and watch "
    "every step. Tick **step by step** to check, edit or add to each drawing before it is made."
)
DEFAULT_FAMILY = "maze"
MODE_HELP: dict[str, str] = {
    "draw": "**draw**: the model marks the image with tools (boxes, lines, paths, zooms) and looks at each "
    "drawing before it answers.",
    "text": "**text**: plain step-by-step reasoning in words, no tools and no drawing (the baseline).",
    "latent": "**latent**: the model imagines its drawings as hidden latent tokens instead of rendering them: "
    "one turn, nothing drawn.",
    "auto": "**auto**: draws while it can, then imagines in latent tokens once the image budget is spent or a "
    "drawing fails.",
}
FAMILY_HELP: dict[str, str] = {
    "frozenlake": "**frozenlake**: a frozen lake seen from above: plan the moves (L, R, U, D) that take the "
    "player to the goal without falling into a hole.",
    "frozenlake-classic": "**frozenlake-classic**: the same lake puzzle in the classic game's look (an elf, a "
    "present, ice holes).",
    "maze": "**maze**: a wall maze from S to G: count the turns of the shortest path, or list its moves.",
    "pathtrace": "**pathtrace**: tangled lines from lettered starts to numbered ends: follow one line to the end "
    "it reaches.",
    "needle": "**needle**: one tiny object hidden in a large, busy image: find it and read its colour or number.",
}
# After each run event: once the views have loaded (they change the chat's height), scroll the chat to its
# last message (the answer, or the pause) and bring that message into sight on the page. gradio's own
# autoscroll gives up once the visitor has scrolled the chat, e.g. to look back at an earlier view.
SCROLL_TO_END = """
async () => {
  const wait = (ms) => new Promise((done) => setTimeout(done, ms));
  await wait(50);
  const box = document.querySelector("#chat .bubble-wrap");
  if (!box) return;
  for (let i = 0; i < 50 && [...box.querySelectorAll("img")].some((img) => !img.complete); i++) await wait(100);
  box.scrollTop = box.scrollHeight;
  const last = [...box.querySelectorAll(".message")].pop();
  if (last) last.scrollIntoView({ block: "nearest" });
}
"""
Outputs = tuple[Any, ...]  # chat, gallery, answer, status, trace zip, pending JSON, pause hint, pause panel
PENDING = 5  # the index of the pending JSON in ``Outputs``


def _levels(family: str) -> tuple[int, ...]:
    return get_family(family).levels


def _screen(session: DemoSession, status: str | None = None) -> Outputs:
    """Every run output, as the current run shows it (``status`` overrides the status line)."""
    run = session.run
    if run is None:
        return [], [], "", status or "", None, "", "", gr.Column(visible=False)
    paused = run.paused
    canvas = run.canvas
    hint = ""
    if paused and canvas is not None:
        hint = f"**Pending calls** (edit the JSON and click *Apply edits*). Coordinates are {coordinate_hint(canvas)}."
    return (
        chat_messages(run),
        gallery_items(run),
        (run.trace.answer or "") if run.trace else "",
        status or status_line(run),
        str(run.archive) if run.archive else None,
        _pending_json(run.pending) if paused else "",
        hint,
        gr.Column(visible=paused),
    )


def _refused(session: DemoSession, message: str) -> Outputs:
    """The outputs after a refused action: the page as it was, and the reason as the status line.

    The pending-calls editor keeps what the person typed, so a typo costs no work.
    """
    gr.Warning(message)
    screen = _screen(session, f"⚠ {message}")
    return (*screen[:PENDING], gr.skip(), *screen[PENDING + 1 :])


def _guard(handler: Callable[..., Iterator[Outputs]]) -> Callable[..., Iterator[Outputs]]:
    """Turn any failure inside a streaming handler into one status line (never a traceback on the page)."""

    def guarded(*args: Any) -> Iterator[Outputs]:
        session: DemoSession = args[-1]
        try:
            yield from handler(*args)
        except DemoInputError as error:
            yield _refused(session, str(error))
        except Exception as error:  # a bug or a backend crash: one line, like the CLI
            message = f"Internal error: {type(error).__name__}: {one_line(error)}"
            run = session.run
            if run is not None and run.trace is None and not run.paused:  # it broke mid-run: stop it
                run.fail(message)
            yield _refused(session, message)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def _policy_for(model: str, mode: Mode) -> Policy:
    if model == EXPERT:
        return ExpertPolicy("sketchmind", mode="text" if mode == "text" else "draw")
    return load_cached(policy_spec(model, mode))


# ---------------------------------------------------------------------- handlers


def generate(family: str, level: float | None, seed: float | None, session: DemoSession) -> tuple[Any, str, str]:
    """Make a puzzle: its image, its own question, and a status line."""
    try:
        made = session.generate(family, level, seed)
    except DemoInputError as error:
        gr.Warning(str(error))
        return gr.skip(), gr.skip(), f"⚠ {error}"
    puzzle = made.puzzle
    return str(made.path), puzzle.question, f"Generated {puzzle.id} (seed {made.seed}). Click **Solve**."


def model_note(image: Mapping[str, Any] | None, model: str, session: DemoSession) -> str:
    """A note on the model for the image shown: the shipped policy on an upload is a grid-puzzle specialist."""
    try:
        pixels = read_upload(image)
    except DemoInputError:
        return ""
    if pixels is None or (session.puzzle is not None and session.puzzle.matches(pixels)):
        return ""
    note = upload_note(model)
    return f"{NOTE_TITLE}: {note}" if note else ""


def check_image(image: Mapping[str, Any] | None, session: DemoSession) -> tuple[Any, str]:
    """Check an upload as soon as it arrives: a corrupt or oversized image is cleared with one line."""
    try:
        read_upload(image)
    except DemoInputError as error:
        gr.Warning(str(error))
        return None, f"⚠ {error}"
    return gr.skip(), ""


@_guard
def solve(
    image: Mapping[str, Any] | None, question: str, model: str, mode: str, step_by_step: bool, session: DemoSession
) -> Iterator[Outputs]:
    """Solve the question about the image, streaming every step (stopping at the first pause if asked)."""
    text = check_question(question)
    pixels = read_upload(image)
    if pixels is None:
        raise DemoInputError("Upload an image or generate a puzzle first.")
    model = (model or "").strip()
    if not model:
        raise DemoInputError("Pick a model.")
    if mode not in MODES:
        raise DemoInputError(f"Unknown mode {mode!r}; use one of {', '.join(MODES)}.")
    chosen: Mode = mode
    # The earlier run stays on the page until this one starts: a refused solve leaves it as it was.
    loading = _screen(session, f"⚙ Loading {model}…")
    yield (*loading[:PENDING], gr.skip(), "", gr.Column(visible=False))
    policy = _policy_for(model, chosen)
    source = image.get("orig_name") if isinstance(image, Mapping) else None
    run = session.new_run(
        policy,
        model=model,
        mode=chosen,
        question=text,
        pixels=pixels,
        step_by_step=bool(step_by_step),
        source=str(source) if source else None,
    )
    yield _screen(session)
    for _ in run.start(pixels):
        yield _screen(session)
    yield _screen(session)


def _paused_run(session: DemoSession) -> ActiveRun:
    run = session.run
    if run is None or not run.paused:
        raise DemoInputError("Nothing is waiting: tick 'step by step' and click Solve to steer a run.")
    return run


@_guard
def accept(session: DemoSession) -> Iterator[Outputs]:
    """Continue a paused run with the model's own calls."""
    run = _paused_run(session)
    for _ in run.proceed():
        yield _screen(session)
    yield _screen(session)


@_guard
def apply_edits(pending: str, session: DemoSession) -> Iterator[Outputs]:
    """Continue a paused run with the calls as edited in the JSON box."""
    run = _paused_run(session)
    groups = json_to_pending(pending, run.pending)
    for _ in run.proceed(groups):
        yield _screen(session)
    yield _screen(session)


@_guard
def add_mark(kind: str, coordinates: str, label: str, pending: str, session: DemoSession) -> Iterator[Outputs]:
    """Add the person's box or line after the (possibly edited) pending calls, and continue."""
    run = _paused_run(session)
    groups = json_to_pending(pending, run.pending)
    mark = make_mark(kind, coordinates, label)
    if run.canvas is not None:
        check_on_latest(mark, run.canvas, groups)
    groups.append([{**mark, "id": None, "group": len(groups)}])
    for _ in run.proceed(groups):
        yield _screen(session)
    yield _screen(session)


def on_family(family: str) -> Any:
    """The level slider for a family's levels."""
    levels = _levels(family)
    return gr.Slider(minimum=levels[0], maximum=levels[-1], value=levels[0], step=1)


def on_model(model: str, mode: str) -> Any:
    """The mode choices a model supports (keeping the current mode when it can)."""
    modes = modes_for((model or "").strip())
    return gr.Radio(choices=list(modes), value=mode if mode in modes else "draw")


def mode_help(mode: str) -> str:
    """The one-line explanation of a mode."""
    return MODE_HELP.get(mode, "")


def family_help(family: str) -> str:
    """The one-line explanation of a puzzle family."""
    return FAMILY_HELP.get(family, "")


# ---------------------------------------------------------------------- layout


def build_app(*, default_model: str | None = None) -> gr.Blocks:
    """The demo page as a ``gr.Blocks`` (call ``.queue(...).launch(...)`` on it, or use ``launch``).

    Args:
        default_model: the model selected at first (``default`` for the shipped policy, ``expert``, a
            checkpoint path or ``openai:NAME``); default: the shipped policy if installed, else the expert.
    """
    choices = model_choices()
    initial_model = default_model or default_model_value()
    if initial_model not in [value for _, value in choices]:
        choices.append((initial_model, initial_model))
    levels = _levels(DEFAULT_FAMILY)

    # Files gradio copies into its cache (views, zips) are deleted after a day, and when the server stops.
    app = gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 86400))
    with app:
        # gradio deep-copies the empty session for each visitor, and calls the callback when the visitor leaves.
        session = gr.State(DemoSession(), delete_callback=lambda s: s.close() if isinstance(s, DemoSession) else None)
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=340):
                image = gr.Image(
                    label="Image (upload, paste, or generate a puzzle below)",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    height=340,
                    elem_id="input-image",
                )
                note = gr.Markdown(elem_id="model-note")
                with gr.Accordion("Generate a puzzle", open=True):
                    with gr.Row():
                        family = gr.Dropdown(
                            list(FAMILY_NAMES), value=DEFAULT_FAMILY, label="Family", min_width=140, elem_id="family"
                        )
                        level = gr.Slider(levels[0], levels[-1], value=levels[0], step=1, label="Level")
                    family_line = gr.Markdown(family_help(DEFAULT_FAMILY), elem_id="family-help")
                    with gr.Row():
                        seed = gr.Number(0, precision=0, minimum=0, label="Seed", min_width=100)
                        generate_button = gr.Button("⚄ Generate", elem_id="generate")
                question = gr.Textbox(
                    label="Question",
                    lines=3,
                    max_length=MAX_QUESTION_CHARS,
                    placeholder="Ask about the image…",
                    elem_id="question",
                )
                model = gr.Dropdown(
                    choices,
                    value=initial_model,
                    label="Model",
                    info=CUSTOM_HINT,
                    allow_custom_value=True,
                    elem_id="model",
                )
                with gr.Row(equal_height=True):
                    mode = gr.Radio(list(modes_for(initial_model)), value="draw", label="Mode", scale=1, elem_id="mode")
                    step_by_step = gr.Checkbox(
                        False,
                        label="Step by step: pause before each drawing to check, edit or add marks",
                        scale=2,
                        elem_id="step-by-step",
                    )
                mode_line = gr.Markdown(mode_help("draw"), elem_id="mode-help")
                solve_button = gr.Button("✏ Solve", variant="primary", elem_id="solve")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=3, min_width=420):
                chat = gr.Chatbot(label="Reasoning", height=760, elem_id="chat", group_consecutive_messages=False)
                with gr.Column(visible=False, elem_id="pause-panel") as pause_panel:
                    hint = gr.Markdown()
                    pending = gr.Code(language="json", interactive=True, label="Pending calls", lines=6)
                    with gr.Row():
                        accept_button = gr.Button("✔ Accept", variant="primary", elem_id="accept")
                        apply_button = gr.Button("✎ Apply edits", elem_id="apply-edits")
                    with gr.Row(equal_height=True):
                        mark_kind = gr.Radio(list(MARK_KINDS), value="box", label="My mark", min_width=120)
                        mark_coordinates = gr.Textbox(label="x1, y1, x2, y2", placeholder="40, 40, 120, 120")
                        mark_label = gr.Textbox("mine", label="Label", min_width=80)
                        mark_button = gr.Button("✍ Add my mark", elem_id="add-mark")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                trace_file = gr.File(label="Trace (trace.json + views/*.png)", elem_id="trace-file", height=120)
        # fit_columns=False: a lone view keeps a thumbnail's width (else it fills the row as a huge crop).
        gallery = gr.Gallery(
            label="All views", columns=7, height=220, object_fit="contain", fit_columns=False, elem_id="gallery"
        )

        outputs = [chat, gallery, answer, status, trace_file, pending, hint, pause_panel]
        run_events: dict[str, Any] = {
            "outputs": outputs,
            "show_progress": "minimal",
            "concurrency_limit": 1,  # one model run at a time: loaded policies are shared
            "concurrency_id": "model",
        }
        family.change(on_family, family, level, api_visibility="private")
        family.change(family_help, family, family_line, api_visibility="private", show_progress="hidden")
        model.change(on_model, [model, mode], mode, api_visibility="private")
        model.change(
            model_note,
            [image, model, session],
            note,
            preprocess=False,
            api_name="note_on_model",
            api_visibility="private",
        )
        mode.change(mode_help, mode, mode_line, api_visibility="private", show_progress="hidden")
        generate_button.click(generate, [family, level, seed, session], [image, question, status], api_name="generate")
        image.upload(check_image, [image, session], [image, status], api_name="check_image", preprocess=False)
        # Any new image (an upload, a generated puzzle, none): the note on the model for it.
        image.change(model_note, [image, model, session], note, api_name="model_note", preprocess=False)
        solve_button.click(
            solve,
            [image, question, model, mode, step_by_step, session],
            api_name="solve",
            preprocess=False,
            **run_events,
        ).then(None, js=SCROLL_TO_END)
        accept_button.click(accept, [session], api_name="accept", **run_events).then(None, js=SCROLL_TO_END)
        apply_button.click(apply_edits, [pending, session], api_name="apply_edits", **run_events).then(
            None, js=SCROLL_TO_END
        )
        mark_button.click(
            add_mark, [mark_kind, mark_coordinates, mark_label, pending, session], api_name="add_mark", **run_events
        ).then(None, js=SCROLL_TO_END)
    return app


__all__ = ["build_app"]
