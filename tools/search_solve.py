"""Closed-loop solves for the search probe's models: greedy decoding, the answer checked by the verifier.

``search_probe.py`` scores its models teacher-forced. This runs them as a user would: the one-image model
writes its whole search and plan in one go; the draw model writes one line a turn, and each line is drawn
(from the model's own lines, not the expert's) into the next view, as the environment would. A line that
does not parse, or a ``Back to`` a cell the search does not stand next to, ends that map unsolved.

    python tools/search_solve.py runs/probe/search-draw --draw --view-side 168 --per-size 24
    python tools/search_solve.py runs/probe/search-text-cells --per-size 24
    python tools/search_solve.py runs/probe/markov-3-8 --markov --levels 3-8 --per-size 16

With ``--plan-from-branch`` the answer is not the plan the model writes but the branch its own search ends on
when a line says it reached G, read off as moves (``frozenlake_search.plan_of``): the text arm's lines parsed,
the draw arm's as the environment drew them. Both arms then answer with the same reading of their own search.
A line's step is then the cell it names (if next to where the search stands), whatever move letter it wrote:
the cell is what a view draws.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import draw_search
import planning_probe
import search_probe

from sketchmind.bench.report import wilson
from sketchmind.train.search_stage import SearchLimits

FIND = re.compile(r"Find P (\d+),(\d+), G (\d+),(\d+)\.")
FIND_P = re.compile(r"Find P (\d+),(\d+),")


def branch_plan(state: Any) -> str:
    """The plan along the branch a search ends on, as the verifier reads it."""
    from sketchmind.tasks.frozenlake import format_plan
    from sketchmind.tasks.frozenlake_search import plan_of

    return str(format_plan(plan_of(state)))


def text_branch(said: str, lake: Any) -> str:
    """The one-image search's own lines up to the first that reaches G, as a plan ("" if they do not follow)."""
    lines = said.strip().splitlines()
    found = FIND.match(lines[0]) if lines else None
    if not found:
        return ""
    start = (int(found[1]) - 1, int(found[2]) - 1)
    if not lake.inside(start):
        return ""
    search = []
    for line in lines[1:]:
        if line.startswith("Action plan:"):
            return ""
        search.append(line)
        if line.endswith(" G"):
            try:
                return branch_plan(draw_search.search_states(start, search, lake, by_cell=True)[-1])
            except ValueError:
                return ""
    return ""


class Solver:
    """Greedy turns of one probe model."""

    def __init__(self, model_dir: Path, side: int, view_side: int, from_branch: bool = False) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(str(model_dir))
        self.processor.image_processor.size = {"shortest_edge": min(side, view_side) ** 2, "longest_edge": side**2}
        self.model = AutoModelForImageTextToText.from_pretrained(str(model_dir), use_safetensors=True).eval()
        self.end = self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.side, self.view_side = side, view_side
        self.from_branch = from_branch
        torch.set_grad_enabled(False)

    def turn(self, messages: list[dict[str, Any]], images: list[Any], max_new_tokens: int) -> str:
        """The model's next assistant turn, greedy."""
        from sketchmind.models.chat import template_messages

        text = self.processor.apply_chat_template(
            template_messages(messages)[0], add_generation_prompt=True, tokenize=False
        )
        inputs = self.processor(text=[text], images=images, return_tensors="pt")
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=self.end)
        return str(self.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))

    def image(self, array: Any, side: int) -> Any:
        import numpy as np
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(array)).resize((side, side), Image.BICUBIC)

    def solve_text(self, puzzle: Any) -> str:
        """The one-image search: everything in one turn."""
        from sketchmind.tasks.frozenlake import Lake

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": search_probe.QUESTION}]}]
        said = self.turn(messages, [self.image(puzzle.image, self.side)], SearchLimits.of(puzzle.level).text_tokens)
        return text_branch(said, Lake.from_truth(puzzle.truth)) if self.from_branch else said

    def solve_draw(self, puzzle: Any) -> str:
        """One line a turn; the model's own lines drawn into each next view. Returns the last turn's text."""
        from sketchmind.tasks.frozenlake import Lake
        from sketchmind.tasks.frozenlake_search import search_view

        truth = Lake.from_truth(puzzle.truth)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": search_probe.QUESTION}]}]
        images = [self.image(puzzle.image, self.side)]
        lines: list[str] = []
        start = None
        limits = SearchLimits.of(puzzle.level)
        for _ in range(limits.turns):
            said = self.turn(messages, images, limits.turn_tokens).strip()
            messages.append({"role": "assistant", "content": [{"type": "text", "text": said}]})
            if said.startswith("Action plan:"):
                return said
            if start is None:  # the first turn says where the ends are, then its first line
                found = FIND.match(said)
                if not found:
                    return said
                start = (int(found[1]) - 1, int(found[2]) - 1)
                if not truth.inside(start):
                    return said
            lines.append(said.split("\n")[-1])
            try:  # the environment draws what the model wrote, from the player it found
                state = draw_search.search_states(start, lines, truth)[-1]
            except ValueError:
                return said
            view = search_view(puzzle, state)
            images.append(self.image(view, self.view_side))
            messages.append({"role": "user", "content": [{"type": "image"}]})
        return ""

    def solve_markov(self, puzzle: Any) -> str:
        """One line a turn from the latest view alone: no history, the model's own lines drawn into each view."""
        from sketchmind.tasks.frozenlake import Lake
        from sketchmind.tasks.frozenlake_search import search_view

        truth = Lake.from_truth(puzzle.truth)
        view, lines, start = puzzle.image, [], None
        limits = SearchLimits.of(puzzle.level)
        for _ in range(limits.turns):
            row = search_probe.markov_row(self.image(view, self.side), None)
            said = self.turn(row["messages"], row["images"], limits.turn_tokens).strip()
            line = said.split("\n")[-1]
            if line.startswith("Action plan:"):
                return line
            if start is None:  # the first turn says where P is
                found = FIND_P.match(said)
                if not found:
                    return said
                start = (int(found[1]) - 1, int(found[2]) - 1)
                if not truth.inside(start):
                    return said
            lines.append(line)
            try:
                state = draw_search.search_states(start, lines, truth, by_cell=self.from_branch)[-1]
            except ValueError:
                return said
            if self.from_branch and line.endswith(" G"):
                return branch_plan(state)
            view = search_view(puzzle, state)
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a search_probe --out folder (its final/ model is solved with)")
    parser.add_argument("--draw", action="store_true")
    parser.add_argument("--markov", action="store_true", help="draw turns that each see the latest view alone")
    parser.add_argument("--plan-from-branch", action="store_true", help="answer with the branch the search ends on")
    parser.add_argument("--side", type=int, default=336)
    parser.add_argument("--view-side", type=int, default=168)
    parser.add_argument("--levels", default="3-5")
    parser.add_argument("--per-size", type=int, default=24)
    parser.add_argument("--vsp", default="data/vsp-maze-examples", help="VSP's maps of those sizes too")
    args = parser.parse_args()
    planning_probe.CELLS["style"] = "coords"

    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import make_dataset
    from sketchmind.train.perception import PERCEPTION_FAMILY, vsp_puzzles

    family = get_family(PERCEPTION_FAMILY)
    lo, hi = (int(x) for x in args.levels.split("-"))
    sets = {
        "generated": make_dataset(family, list(range(lo, hi + 1)), args.per_size, seed=99),
        "vsp": [p for p in vsp_puzzles(Path(args.vsp)) if lo <= p.level <= hi],
    }
    solver = Solver(Path(args.run) / "final", args.side, args.view_side, args.plan_from_branch)
    report: dict[str, Any] = {
        "run": args.run,
        "draw": args.draw,
        "markov": args.markov,
        "branch": args.plan_from_branch,
    }
    for name, puzzles in sets.items():
        solved: dict[int, list[int]] = {}
        for puzzle in puzzles:
            if args.markov:
                said = solver.solve_markov(puzzle)
            else:
                said = solver.solve_draw(puzzle) if args.draw else solver.solve_text(puzzle)
            solved.setdefault(puzzle.level, []).append(int(family.verify(puzzle, said)))
        rows = {str(level): [sum(v), len(v)] for level, v in sorted(solved.items())}
        k, n = sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())
        report[name] = {"by_size": rows, "all": [k, n], "wilson": [round(x, 3) for x in wilson(k, n)]}
        print(name, json.dumps(report[name]), flush=True)
    arm = ("-markov" if args.markov else "-draw" if args.draw else "") + ("-branch" if args.plan_from_branch else "")
    out = Path(args.run) / f"solve{arm}-{args.levels}.json"
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
