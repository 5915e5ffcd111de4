"""The ``sketchmind`` command.

Exit codes: 0 success (answered); 1 ran but got no answer within budget, or a call failed (the trace is
still saved); 2 bad input or usage; 3 a failure that is not the input's: the model backend, or a save
(disk full). Bad input is always one line on stderr, never a traceback; ``SKETCHMIND_DEBUG=1`` adds the
traceback (with its cause) to a backend or internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.markup import escape

from sketchmind.actions import ActionError
from sketchmind.canvas import Canvas, View
from sketchmind.files import SaveError
from sketchmind.images import ImageInputError, load_image
from sketchmind.memory import reuse_freed_memory
from sketchmind.models.default import DEFAULT_POLICY, NOTICE, is_shipped, resolve_model
from sketchmind.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from sketchmind.quiet import quiet_progress_bars
from sketchmind.trace import TraceError

if TYPE_CHECKING:  # loaded only by the commands that use them: `sketchmind --help` stays quick
    from sketchmind.models.base import Policy
    from sketchmind.models.expert import ExpertPolicy
    from sketchmind.tasks import Puzzle

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


MAX_QUESTION_CHARS = 100_000  # a question is a prompt, not a document: longer ones are a mistake
PROTOCOL_NAMES = list(PROTOCOLS)
PROTOCOL_HELP = "prompt format (default: the one the model was trained to speak, else sketchmind)"
MAX_LEVEL = 1000  # no family has more levels; bounds ``--levels 3-999999999``


class UsageError(ValueError):
    """Bad command-line input; the message is printed as one line and the exit code is 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the error and where to look), not the usage block too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _number(kind: type[int] | type[float], low: float, what: str) -> Callable[[str], Any]:
    """An argparse ``type`` for a finite number of ``kind`` at least ``low``, refusing others in one line."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (value >= low and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


positive_int = _number(int, 1, "a positive integer")
natural_int = _number(int, 0, "an integer >= 0")
positive_float = _number(float, sys.float_info.min, "a positive number")
natural_float = _number(float, 0, "a number >= 0")


def _fraction(text: str) -> float:
    value = natural_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1")
    return float(value)


def _port(text: str) -> int:
    value = int(natural_int(text))
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return value


def _debugging() -> bool:
    return bool(os.environ.get("SKETCHMIND_DEBUG"))


def _backend_failure(error: BaseException) -> int:
    """Report a backend failure in one line (with its traceback and cause under SKETCHMIND_DEBUG); exit 3."""
    err.print(f"sketchmind: backend error: {error}", soft_wrap=True, markup=False)
    if _debugging():
        traceback.print_exception(error, file=sys.stderr)
    return EXIT_BACKEND


def _check_question(question: str) -> None:
    if len(question) > MAX_QUESTION_CHARS:
        raise UsageError(f"the question is {len(question):,} characters, over the limit of {MAX_QUESTION_CHARS:,}")


def _check_output_dir(path: str | None, flag: str) -> None:
    """An output directory must be a directory (or not exist yet), never an existing file."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a directory")


def _read_calls(source: str) -> list[dict[str, Any]]:
    """Tool calls from a JSON file or an inline JSON string: a list of {"name", "arguments"} (or one)."""
    path = Path(source)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise UsageError(f"{source}: no such calls file")
        text = path.read_text(encoding="utf-8")
    else:
        text = source
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    calls = value if isinstance(value, list) else [value]
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        raise UsageError(f'{source}: expected a list of {{"name": ..., "arguments": {{...}}}} objects')
    return calls


def _clear_old_trace(directory: Path) -> None:
    """A new run into an old trace directory replaces it (saves skip PNGs that already exist).

    Only a directory that holds a trace is cleared, so a mistyped path never deletes user files.
    """
    from sketchmind.trace import TRACE_FILE, VIEWS_DIR

    if (directory / TRACE_FILE).is_file():
        shutil.rmtree(directory / VIEWS_DIR, ignore_errors=True)
        (directory / TRACE_FILE).unlink()


def cmd_tools(args: argparse.Namespace) -> int:
    from sketchmind.tools import specs

    print(json.dumps(specs(args.names or None), indent=2))
    return EXIT_OK


def cmd_draw(args: argparse.Namespace) -> int:
    """Apply tool calls to an image (or a whiteboard), print each result, save a trace."""
    from sketchmind.trace import Step, Trace

    if args.image is None and not args.blank:
        raise UsageError("give an IMAGE, or --blank for a whiteboard")
    _check_question(args.question)
    _check_output_dir(args.save, "--save")
    calls = _read_calls(args.calls)
    if args.save:
        _clear_old_trace(Path(args.save))
    canvas = Canvas(None if args.blank else args.image, coords=args.coords, style=args.style)
    trace = Trace(question=args.question, protocol="calls", model="none", mode="draw")
    failed = 0
    for index, call in enumerate(calls, start=1):
        started = time.perf_counter()
        if call["name"] == "answer":
            trace.answer = str((call.get("arguments") or {}).get("answer", ""))
            outcome: View | ActionError | None = None
        else:
            outcome = canvas.apply(call["name"], call.get("arguments"))
        record = {"name": call["name"], "arguments": call.get("arguments") or {}}
        step = Step(index=index, thought=str(call.get("thought", "")), calls=[record], view_ids=[], errors=[], raw="")
        step.render_seconds = time.perf_counter() - started
        if isinstance(outcome, View):
            step.view_ids.append(outcome.index)
            out.print(f"[green]ok[/]   {outcome.describe()}")
        elif isinstance(outcome, ActionError):
            failed += 1
            step.errors.append(str(outcome))
            out.print(f"[red]fail[/] {call['name']}: {escape(str(outcome))}", soft_wrap=True)
        else:
            out.print(f"[bold]answer[/] {trace.answer}")
        trace.add_step(step)
        if args.save:
            trace.save(args.save, canvas)  # after every call, so an interrupted run keeps its work
    trace.status = "answered" if trace.answer is not None else "no_answer"
    if args.save:
        directory = trace.save(args.save, canvas)
        out.print(f"saved {len(canvas)} views and the trace to {directory}")
    return EXIT_FAILED if failed else EXIT_OK


def _default_model(mode: str) -> str:
    """The shipped policy's name, checked first: a usage error when this install has none for ``mode``."""
    resolve_model(DEFAULT_POLICY, mode)  # raises ShippedPolicyMissing (one line, exit 2) before anything loads
    return DEFAULT_POLICY


def cmd_solve(args: argparse.Namespace) -> int:
    """Solve one question with a model, printing each step as it happens; the answer is the last line."""
    from sketchmind.agent import Agent, Budgets
    from sketchmind.models.base import BackendError, Sampling
    from sketchmind.models.loading import load_policy

    if args.image is None and not args.blank:
        raise UsageError("give an IMAGE, or --blank for a whiteboard")
    if args.image is not None and args.blank:
        raise UsageError("give either an IMAGE or --blank, not both")
    _check_question(args.question)
    _check_output_dir(args.save, "--save")
    # Read the image before loading a model: a bad one is refused in a moment, not after minutes.
    image = None if args.image is None else load_image(args.image)
    if args.model is None:
        args.model = _default_model(args.mode)
        err.print(NOTICE, soft_wrap=True, markup=False)
    run_id: str | None = None
    puzzle: Puzzle | None = None
    policy: Policy
    try:
        if args.model == "expert":
            policy, puzzle = _expert_for_image(args)
            run_id = puzzle.id
        else:
            policy = load_policy(args.model, base_url=args.base_url, mode=args.mode)
        sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
        budgets = Budgets(max_turns=args.max_turns, max_images=args.max_images, timeout=args.timeout)
        try:
            agent = Agent(policy, args.protocol, budgets, mode=args.mode, sampling=sampling)
        except ValueError as error:  # an unsupported mode or protocol: the user's choice, not a bug
            raise UsageError(str(error)) from None
        if args.samples > 1:
            trace = agent.solve(
                image, args.question, samples=args.samples, select_by=args.select, save=args.save, puzzle=puzzle
            )
        else:
            trace = None
            for event in agent.stream(image, args.question, save=args.save, run_id=run_id, puzzle=puzzle):
                if event["node"] == "end":
                    trace = event["trace"]
                elif not args.json:
                    _print_event(event)
    except BackendError as error:
        return _backend_failure(error)
    if trace is None:  # pragma: no cover - a run without an interrupt always ends
        return EXIT_FAILED
    if args.json:
        print(json.dumps(trace.to_dict(), indent=2))
    elif args.save:
        out.print(f"trace saved to {args.save}")
    if trace.status == "error":
        err.print(f"sketchmind: backend error: {trace.error}", soft_wrap=True, markup=False)
        return EXIT_BACKEND
    if not args.json:
        out.print(trace.answer if trace.answer is not None else f"no answer ({trace.error or trace.status})")
    return EXIT_OK if trace.answer is not None else EXIT_FAILED


def _expert_for_image(args: argparse.Namespace) -> tuple[ExpertPolicy, Puzzle]:
    """The expert policy and the VSP benchmark puzzle of the image (the run carries its ground truth)."""
    from sketchmind.models.expert import ExpertPolicy
    from sketchmind.tasks.vsp import vsp_puzzle_for_image

    puzzle = vsp_puzzle_for_image(args.image) if args.image else None
    if puzzle is None:
        raise UsageError(
            "--model expert needs a puzzle's ground truth: give an image inside a VSP maps/levelN/img folder, "
            "or run `sketchmind bench FAMILY --model expert`"
        )
    return ExpertPolicy(args.protocol or DEFAULT_PROTOCOL, mode="text" if args.mode == "text" else "draw"), puzzle


def _levels(text: str | None) -> tuple[int, ...] | None:
    """``3,4,5`` or ``3-5`` (or a mix) -> (3, 4, 5)."""
    if not text:
        return None
    levels: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high or low)
            if not 1 <= first <= last <= MAX_LEVEL:
                raise ValueError
            levels.extend(range(first, last + 1))
    except ValueError:
        raise UsageError(f"--levels {text!r}: use levels from 1 to {MAX_LEVEL} like 3,4,5 or 3-5") from None
    return tuple(dict.fromkeys(levels))


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a model on a puzzle family or VSP (resumable), or compare finished runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sketchmind.bench import BenchConfig, compare_runs, run_bench
    from sketchmind.bench.report import markdown_table, summarise
    from sketchmind.models.base import BackendError

    if args.target == "compare":
        if not args.runs:
            raise UsageError("bench compare needs one or more run directories")
        try:
            table = compare_runs(args.runs, args.plot)
        except ValueError as error:
            raise UsageError(str(error)) from None
        print(table)
        out.print(f"plot written to {args.plot}")
        return EXIT_OK
    if args.runs:
        raise UsageError(f"unexpected arguments {args.runs}: give one TARGET (a family or vsp)")
    _check_output_dir(args.out, "--out")
    if args.model is None:
        args.model = _default_model(args.mode)
    config = BenchConfig(
        target=args.target,
        model=args.model,
        mode=args.mode,
        protocol=args.protocol,
        levels=_levels(args.levels),
        n=args.n if args.n is not None else (None if args.target == "vsp" else 20),
        seed=args.seed,
        samples=args.samples,
        data=args.data,
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        base_url=args.base_url,
    )
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in args.model.strip("/").split("/")[-1])
    directory = Path(args.out or f"runs/bench/{args.target}-{slug}-{args.mode}")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        # No bar when stderr is a pipe or a log: there it would only leave blank lines around the messages.
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task(f"{args.target} · {args.model}", total=None)
            run = run_bench(
                config, directory, on_batch=lambda done, total: progress.update(task, completed=done, total=total)
            )
    except BackendError as error:
        return _backend_failure(error)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if run.records:
        print(markdown_table(summarise(run.records)))
    out.print(f"{run.solved_now} solved now, {len(run.records)} in {directory} (report.md, accuracy.png)")
    if run.failed:
        err.print(f"sketchmind: {len(run.failed)} puzzles hit backend errors (re-run to retry): {run.failed[0]}")
        return EXIT_BACKEND
    return EXIT_OK


def cmd_data(args: argparse.Namespace) -> int:
    """Synthesize cold-start SFT data from expert trajectories (optionally as LLaMA-Factory ShareGPT)."""
    from sketchmind.tasks import FAMILY_NAMES
    from sketchmind.train.synth import synthesize
    from sketchmind.train.synth_storage import save_dataset

    _check_output_dir(args.out, "--out")
    families = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = [name for name in families if name not in FAMILY_NAMES]
    if unknown or not families:
        raise UsageError(f"--tasks: unknown {', '.join(unknown) or 'nothing'}; use some of {', '.join(FAMILY_NAMES)}")
    try:
        rows, stats = synthesize(
            families,
            args.n,
            levels=_levels(args.levels),
            seed=args.seed,
            reflective_fraction=args.reflective,
            min_rounds=args.min_rounds,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.format == "llamafactory":
        from sketchmind.train.export import export_llamafactory

        export_llamafactory(rows, args.out)
    else:
        save_dataset(rows, args.out, stats=stats)
    print(stats.table())
    out.print(f"{len(rows)} trajectories written to {args.out} ({args.format})")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    """``train RECIPE --plan``: parameters and memory per GPU of each trainer stage, nothing trained (train/plan.py)."""
    from sketchmind.train.plan import PlanError, plan_command
    from sketchmind.train.recipe import RecipeError

    try:
        return plan_command(args.recipe, out, gpu_memory=args.gpu_memory, accelerate_config=args.accelerate_config)
    except (RecipeError, PlanError) as error:
        raise UsageError(str(error)) from None


def cmd_train(args: argparse.Namespace) -> int:
    """Run a training recipe's stages (resumable: finished stages are skipped, trainers resume)."""
    if args.plan:
        return cmd_plan(args)
    if args.gpu_memory is not None or args.accelerate_config is not None:
        raise UsageError("--gpu-memory and --accelerate-config size a run: use them with --plan")
    from sketchmind.train.pipeline import STAGES, Pipeline, StageError
    from sketchmind.train.ranks import is_main
    from sketchmind.train.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as error:
        raise UsageError(str(error)) from None
    stages = [s.strip() for s in args.stage.split(",")] if args.stage else None
    if stages and set(stages) - set(STAGES):
        raise UsageError(f"--stage: unknown {', '.join(sorted(set(stages) - set(STAGES)))}; use {', '.join(STAGES)}")
    pipeline = Pipeline(recipe, report=lambda line: out.print(escape(line), soft_wrap=True), rich_progress=True)
    try:
        pipeline.run(stages)
    except StageError as error:  # the recipe's settings left a stage nothing to train on: say so, in one line
        raise UsageError(str(error)) from None
    if not is_main():  # under torchrun / accelerate launch, the main process speaks for the launch
        return EXIT_OK
    out.print(f"{recipe.name}: model at {pipeline.latest_model()}")
    latent = pipeline.latent_model()
    if latent is not None and Path(latent).is_dir():
        out.print(f"{recipe.name}: latent model at {latent} (solve with --mode latent or auto)")
    return EXIT_OK


def _print_event(event: dict[str, Any]) -> None:
    step = event.get("step") or {}
    if event["node"] == "think":
        if step.get("thought"):
            out.print(f"[dim]think[/] {escape(step['thought'])}", soft_wrap=True)
        for call in step.get("calls", []):
            out.print(f"[cyan]call[/]  {call['name']} {escape(json.dumps(call['arguments']))}", soft_wrap=True)
    elif event["node"] == "act":
        for view in step.get("view_ids", []):
            out.print(f"[green]view[/]  {view}")
        for error in step.get("errors", []):
            out.print(f"[red]error[/] {escape(error)}", soft_wrap=True)


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the drawing tools to MCP clients (Claude Desktop, Cursor, ...) over stdio."""
    try:
        from sketchmind.mcp_server import main as serve_mcp
    except ImportError as error:  # the mcp SDK is the optional "mcp" extra
        raise UsageError(f"sketchmind mcp needs the mcp SDK: pip install 'sketchmind[mcp]' ({error})") from None
    return serve_mcp()


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the Gradio puzzle demo on this machine (loopback only unless told otherwise)."""
    try:
        from sketchmind.demo import launch
    except ImportError as error:  # gradio is the optional "demo" extra
        raise UsageError(f"sketchmind demo needs gradio: pip install 'sketchmind[demo]' ({error})") from None
    from sketchmind.demo.models import DEFAULT

    model = DEFAULT if args.model == DEFAULT_POLICY else args.model  # the dropdown's own entry for it
    launch(host=args.host, port=args.port, share=args.share, default_model=model)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a policy behind an OpenAI-compatible API on this machine."""
    from sketchmind.models.base import BackendError
    from sketchmind.models.loading import load_policy
    from sketchmind.server import Limits, serve

    limits = Limits(**{k: v for k, v in vars(args).items() if k in Limits.__dataclass_fields__ and v is not None})
    if args.model is None:
        args.model = _default_model("draw")
        err.print(NOTICE, soft_wrap=True, markup=False)
    try:
        policy = load_policy(args.model)
    except BackendError as error:
        return _backend_failure(error)
    shipped = is_shipped(resolve_model(args.model))
    name = args.name or (DEFAULT_POLICY if shipped else Path(args.model.rstrip("/")).name)
    out.print(f"serving {args.model} as {name!r} at http://{args.host}:{args.port}/v1")
    serve(policy, name, host=args.host, port=args.port, sessions=args.sessions, limits=limits, max_batch=args.max_batch)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from sketchmind.viewer import write_html

    page = write_html(Path(args.trace_dir), Path(args.out) if args.out else None)
    out.print(f"wrote {page}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sketchmind", description="Vision-language models that reason by drawing.")
    sub = parser.add_subparsers(dest="command", required=True)

    tools = sub.add_parser("tools", help="print the drawing tools as JSON Schema (OpenAI function-calling specs)")
    tools.add_argument("names", nargs="*", help="only these tools")
    tools.set_defaults(run=cmd_tools)

    draw = sub.add_parser("draw", help="apply tool calls to an image and save the views and a trace")
    draw.add_argument("image", nargs="?", help="input image (omit with --blank)")
    draw.add_argument("calls", help='JSON file or inline JSON: [{"name": "box", "arguments": {...}}, ...]')
    draw.add_argument("--blank", action="store_true", help="draw on a blank whiteboard instead of an image")
    draw.add_argument("--coords", default="pixels", choices=["pixels", "norm1000", "unit"])
    draw.add_argument("--style", default="sketchmind", choices=["sketchmind", "vilasr"])
    draw.add_argument("--question", default="", help="recorded in the trace")
    draw.add_argument("--save", metavar="DIR", help="write trace.json and views/*.png here")
    draw.set_defaults(run=cmd_draw)

    solve = sub.add_parser("solve", help="answer a question about an image by reasoning and drawing")
    solve.add_argument("image", nargs="?", help="input image (omit with --blank)")
    solve.add_argument("question")
    solve.add_argument(
        "--model",
        help=f"checkpoint path or hub id, openai:NAME, replay:TRACE_DIR or expert (default: {DEFAULT_POLICY})",
    )
    solve.add_argument("--base-url", help="OpenAI-compatible server URL (default $OPENAI_BASE_URL)")
    solve.add_argument("--protocol", choices=PROTOCOL_NAMES, help=PROTOCOL_HELP)
    solve.add_argument("--mode", default="draw", choices=["draw", "text", "latent", "auto"])
    solve.add_argument("--max-turns", type=positive_int, default=10)
    solve.add_argument("--max-images", type=positive_int, default=45)
    # 768: the default policy's search in words on an 8x8 map takes up to about 600
    solve.add_argument("--max-new-tokens", type=positive_int, default=768, help="per model turn")
    solve.add_argument("--timeout", type=positive_float, default=120.0, help="seconds per model call")
    solve.add_argument("--temperature", type=natural_float, default=0.0)
    solve.add_argument("--samples", type=positive_int, default=1, help="sample N trajectories and select one")
    solve.add_argument("--select", default="vote", choices=["vote", "likelihood"])
    solve.add_argument("--seed", type=natural_int)
    solve.add_argument("--blank", action="store_true", help="reason on a blank whiteboard")
    solve.add_argument("--save", metavar="DIR", help="save trace.json and views/*.png here")
    solve.add_argument("--json", action="store_true", help="print the trace as JSON instead of the steps")
    solve.set_defaults(run=cmd_solve)

    bench = sub.add_parser("bench", help="run a model on a puzzle family or VSP; `bench compare RUN...` plots runs")
    bench.add_argument("target", help="frozenlake, maze, pathtrace, needle, vsp, or compare")
    bench.add_argument("runs", nargs="*", help="run directories (bench compare only)")
    bench.add_argument(
        "--model",
        help=f"expert, a checkpoint path or hub id, openai:NAME, or replay:TRACE_DIR (default: {DEFAULT_POLICY})",
    )
    bench.add_argument("--base-url", help="OpenAI-compatible server URL (default $OPENAI_BASE_URL)")
    bench.add_argument("--protocol", choices=PROTOCOL_NAMES, help=PROTOCOL_HELP)
    bench.add_argument("--mode", default="draw", choices=["draw", "text", "latent", "auto"])
    bench.add_argument("--levels", help="e.g. 3,4,5 or 3-5 (default: all)")
    bench.add_argument("--n", type=positive_int, help="puzzles per level (default 20; VSP: all)")
    bench.add_argument("--seed", type=natural_int, default=0, help="dataset seed (datasets are deterministic)")
    bench.add_argument("--samples", type=positive_int, default=1, help="sample N trajectories per puzzle and vote")
    bench.add_argument("--data", help="VSP folder holding maps/ (default: the examples bundled with sketchmind)")
    bench.add_argument("--max-turns", type=positive_int, default=10)
    bench.add_argument("--max-new-tokens", type=positive_int, default=768, help="per model turn")
    bench.add_argument("--batch-size", type=positive_int, default=8, help="puzzles solved in lockstep per batch")
    bench.add_argument("--out", help="run directory (default runs/bench/TARGET-MODEL-MODE); re-runs resume")
    bench.add_argument("--plot", default="compare.png", help="bench compare: output plot")
    bench.set_defaults(run=cmd_bench)

    data = sub.add_parser("data", help="make training data: `data synth --tasks maze,frozenlake --n 50 --out DIR`")
    data.add_argument("action", choices=["synth"])
    data.add_argument("--tasks", default="frozenlake,maze", help="comma-separated families")
    data.add_argument("--n", type=positive_int, default=20, help="puzzles per level and family")
    data.add_argument("--levels", help="e.g. 3-5 (default: every level)")
    data.add_argument("--seed", type=natural_int, default=0)
    data.add_argument("--reflective", type=_fraction, default=0.3, help="share of reflective trajectories")
    data.add_argument("--min-rounds", type=natural_int, default=2, help="fewest drawing rounds a kept trajectory has")
    data.add_argument("--format", default="hf", choices=["hf", "llamafactory"], help="parquet dataset or ShareGPT")
    data.add_argument("--out", required=True, help="output directory")
    data.set_defaults(run=cmd_data)

    train = sub.add_parser("train", help="run a training recipe (policies/NAME.yaml); re-runs resume")
    train.add_argument("recipe")
    train.add_argument("--stage", help="only these stages, comma-separated (synth, base, sft, rejection, ...)")
    from sketchmind.train.plan import parse_gpu_memory

    train.add_argument("--plan", action="store_true", help="print parameters and memory per GPU; train nothing")
    train.add_argument("--gpu-memory", type=parse_gpu_memory, help="with --plan: does it fit this card (e.g. 80GB)")
    train.add_argument(
        "--accelerate-config",
        help="with --plan: the accelerate config to size for (default: configs/accelerate/zero3.yaml)",
    )
    train.set_defaults(run=cmd_train)

    served = sub.add_parser("serve", help="serve a checkpoint behind an OpenAI-compatible /v1/chat/completions")
    served.add_argument(
        "--model",
        help=f"checkpoint path or hub id, openai:NAME or replay:TRACE_DIR (default: {DEFAULT_POLICY})",
    )
    served.add_argument(
        "--name", help=f"model name clients use (default: {DEFAULT_POLICY} for it, else the checkpoint's folder name)"
    )
    served.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    served.add_argument("--port", type=_port, default=8000)
    served.add_argument(
        "--sessions",
        type=natural_int,
        default=8,
        help="finished conversations that keep their KV cache for a next turn",
    )
    served.add_argument(
        "--max-batch",
        type=positive_int,
        default=16,
        help="most completions decoded together (local checkpoints: rows of the running batch; 1: one at a time)",
    )
    for flag, meaning in (  # per-request limits (sketchmind.server.Limits); over one: a one-line 4xx error
        ("--max-body-bytes", "bytes in one request body (default 33554432)"),
        ("--max-messages", "messages in one request (default 512)"),
        ("--max-images", "images in one request (default 64)"),
        ("--max-image-pixels", "pixels of one image (default 16777216)"),
        ("--max-total-pixels", "pixels of all images of one request (default 67108864)"),
        ("--max-text-chars", "characters of text in one request (default 1000000)"),
        ("--max-tokens", "largest max_tokens a request may ask for (default 4096)"),
        ("--max-n", "completions one request may sample, n (default 8)"),
    ):
        served.add_argument(flag, type=positive_int, help=meaning)
    served.set_defaults(run=cmd_serve)

    demo = sub.add_parser("demo", help="the Gradio puzzle demo: watch a model reason by drawing, and draw along")
    demo.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    demo.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    demo.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    demo.add_argument(
        "--model", help=f"preselect this model ({DEFAULT_POLICY}, a checkpoint path, hub id or openai:NAME)"
    )
    demo.set_defaults(run=cmd_demo)

    mcp = sub.add_parser("mcp", help="serve the drawing tools to MCP clients over stdio (Claude Desktop, Cursor)")
    mcp.set_defaults(run=cmd_mcp)

    show = sub.add_parser("show", help="write a self-contained HTML page to step through a saved trace")
    show.add_argument("trace_dir")
    show.add_argument("-o", "--out", help="output HTML path (default TRACE_DIR/trace.html)")
    show.set_defaults(run=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sketchmind`` console script; returns the exit code (``--help`` included)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (2), already printed
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    reuse_freed_memory()
    quiet_progress_bars()  # solve, serve and demo print what the user reads, not a weight-loading bar
    if _debugging():  # the agent logs the cause of a failed model call that it turns into an "error" trace
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("sketchmind").setLevel(logging.DEBUG)
    try:
        return int(args.run(args))
    except SaveError as exc:  # the disk, not the user's input (SaveError is an OSError: caught first)
        err.print(f"sketchmind: error: {exc}", soft_wrap=True, markup=False)
        return EXIT_BACKEND
    except (UsageError, ImageInputError, TraceError, OSError) as exc:
        err.print(f"sketchmind: error: {exc}", soft_wrap=True, markup=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("sketchmind: interrupted", markup=False)
        return 130
    except Exception as exc:  # a bug, not the user's input: one line, the traceback on request
        if _debugging():
            raise
        err.print(
            f"sketchmind: internal error: {type(exc).__name__}: {exc} (SKETCHMIND_DEBUG=1 shows the traceback)",
            soft_wrap=True,
            markup=False,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
