"""How much a search policy's solve rate depends on the wording of the question.

The search stage trains on four wordings of the request (``search_rows.search_question``): three short ones, one
of them with the map size, and the puzzle's own (VSP's prompt); users will word it their own way. This solves
the same held-out maps (the recipe's eval seed, 16 a size, and VSP's 48) once per wording, greedily in closed
loop, and prints the solve rate of each: the training wordings, then two the policy never saw, one without the
map size.

    python tools/search_wordings.py runs/train/sketchmind-tiny-v2/search/final --out runs/wordings.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

from sketchmind.bench.report import wilson
from sketchmind.tasks import get_family
from sketchmind.tasks.base import Puzzle, make_dataset
from sketchmind.train.perception import vsp_puzzles
from sketchmind.train.search_rows import ASKS, OWN_QUESTION, search_question
from sketchmind.train.search_stage import measure_solving

# Never used in training: how the policy does on a request worded as none of its rows were.
UNSEEN = (
    "Which moves take the elf to the present without falling through the ice? Reply as Action plan: <moves>.",
    "Route the player to the goal square, avoiding every hole.",
)


def _asked(text: str, puzzle: Puzzle) -> str:
    return text


def wordings() -> dict[str, Callable[[Puzzle], str]]:
    """Name -> the question for a puzzle: each training wording, the puzzle's own, then the unseen ones."""
    out: dict[str, Callable[[Puzzle], str]] = {
        f'"{ask}"': partial(search_question, wording=k) for k, ask in enumerate(ASKS)
    }
    out["the puzzle's own question (VSP's prompt)"] = partial(search_question, wording=OWN_QUESTION)
    for ask in UNSEEN:
        out[f'"{ask}" (never trained on)'] = partial(_asked, ask)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a search policy's checkpoint (text arm)")
    parser.add_argument("--per-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--vsp", default="data/vsp-maze-examples", help="VSP's maps too ('' to leave them out)")
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()

    from sketchmind.models.hf import HFPolicy

    family = get_family("frozenlake-classic")
    sets = {"generated": make_dataset(family, list(range(3, 9)), args.per_size, seed=args.seed)}
    if args.vsp:
        sets["vsp"] = vsp_puzzles(Path(args.vsp))
    policy = HFPolicy(args.model)
    report = {}
    print("| wording | " + " | ".join(sets) + " |\n|---|" + "---|" * len(sets))
    for name, question in wordings().items():
        table = measure_solving(policy, sets, "text", family, question=question)
        totals = {r["set"]: (r["solved"], r["n"]) for r in table.rows if r["level"] == "all"}
        report[name] = {"rows": table.rows}
        cells = []
        for k, n in totals.values():
            low, high = wilson(k, n)
            cells.append(f"{k}/{n} = {k / n:.2f} ({low:.2f}-{high:.2f})")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
