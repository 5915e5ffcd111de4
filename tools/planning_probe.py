"""Planning probe: can the tiny policy's language model plan once the map is read?

The perceive stage teaches the model to write a frozen-lake map down from pixels. This probe measures
the next gate on its own, with no image: given the map as the reader writes it (``Row k: P F H G``),
how well does the same 5 M-parameter model learn to answer with a safe plan, and which way of writing
the reasoning makes that learnable? Fresh maps at every step (no map seen twice); greedy answers on
held-out maps (another seed) are checked by the family's own verifier.

Formats (the target the model writes after the map):

- ``direct``: ``Action plan: R,D,D``.
- ``segments``: the expert's text today: "From row 1, column 2, go down 2 cells to row 3, column 2. ...".
- ``walk``: the expert's draw turns as text: "Down 2: row 2, column 3 F, row 3, column 3 G.", then the plan.
- ``search``: a greedy depth-first search written out: each line tries one move toward the goal and checks
  the cell it reaches ("D: row 3, column 2 F"; "R: row 2, column 4 H"), backs up out of dead ends, and
  the plan is the path it ends on. Every line is a local decision; the search is in the text.
- ``steps``: one move a line, each with the cell it reaches and what is there: "D: row 2, column 2, F".

    python tools/planning_probe.py --format steps --minutes 20 --out runs/probe/plan-steps
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

QUESTION = "Plan a path from P to G that steps on no H.\n"

# How cells are named. ``words``: "row 2, column 3", the map as "Row 2: F H F"; a look-up then means finding
# the row's line and counting along it. ``coords``: "2,3", and every cell of the map carries its name
# ("Row 2: 2,1 F 2,2 H 2,3 F"), so a look-up is matching the name just written and copying what follows.
# ``names``: every cell has a one-token name ("c2": column c, row 2; the tokenizer gets the 64 names as
# tokens of their own, as it splits digits from letters), so a look-up is a one-token match, the pattern
# small transformers learn first (an induction head).
CELLS = {"style": "words"}
CELL_NAMES = [f"{'abcdefgh'[c]}{r + 1}" for r in range(8) for c in range(8)]


def where(cell: tuple[int, int]) -> str:
    """A cell in the expert's words: "row 2, column 3" (1-based), or "2,3" in the ``coords`` style."""
    if CELLS["style"] == "coords":
        return f"{cell[0] + 1},{cell[1] + 1}"
    if CELLS["style"] == "names":
        return f"{'abcdefgh'[cell[1]]}{cell[0] + 1}"
    return f"row {cell[0] + 1}, column {cell[1] + 1}"


def map_text(lake: Any) -> str:
    """The map as the reader writes it, in the current cell style."""
    from sketchmind.tasks.frozenlake import transcribe

    if CELLS["style"] == "words":
        return str(transcribe(lake))
    return "\n".join(
        f"Row {r + 1}: " + " ".join(f"{where((r, c))} {lake.symbol((r, c))}" for c in range(lake.cols))
        for r in range(lake.rows)
    )


def target_text(lake: Any, plan: list[str], form: str) -> str:
    """What the model learns to write after the map, in format ``form``."""
    from sketchmind.tasks.frozenlake import MOVE_NAMES, format_plan, segments

    if form == "direct":
        return format_plan(plan)
    if form == "segments":  # the expert's words before the cell-by-cell check
        parts = []
        for k, run in enumerate(segments(lake.player, plan)):
            lead = f"From {where(run.start)}, go" if k == 0 else "Then go"
            cells = f"{run.length} cell" + ("s" if run.length > 1 else "")
            parts.append(f"{lead} {MOVE_NAMES[run.move]} {cells} to {where(run.end)}.")
        return " ".join(parts) + "\n" + format_plan(plan)
    if form == "walk":  # the expert's draw turns, as text: one segment a line, each cell checked on the map
        from sketchmind.tasks.frozenlake import _walk

        return "\n".join(_walk(lake, run) for run in segments(lake.player, plan)) + "\n" + format_plan(plan)
    if form == "search":
        return search_text(lake)
    if form == "steps":
        from sketchmind.tasks.frozenlake import MOVES

        lines, cell = [], lake.player
        for move in plan:
            dr, dc = MOVES[move]
            cell = (cell[0] + dr, cell[1] + dc)
            what = "G" if cell == lake.goal else "F"
            lines.append(f"{move}: row {cell[0] + 1}, column {cell[1] + 1}, {what}")
        return "\n".join(lines) + "\n" + format_plan(plan)
    raise ValueError(form)


def search(lake: Any) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    """The greedy depth-first search (``sketchmind.tasks.frozenlake_search``) in this probe's cell style: its
    lines ("D: 3,2 F", "Back to 3,2"), the cell each tried move reads, and the plan it ends on."""
    from sketchmind.tasks.frozenlake_search import plan_of, search, states

    steps = search(lake)
    lines = [f"Back to {where(s.cell)}" if s.is_back else f"{s.move}: {where(s.cell)} {s.symbol}" for s in steps]
    reads = [s.cell for s in steps if not s.is_back]
    return lines, reads, plan_of(states(lake.player, steps)[-1])


def search_text(lake: Any) -> str:
    """The search written out, then the plan."""
    from sketchmind.tasks.frozenlake import format_plan

    lines, _, path = search(lake)
    return "\n".join(lines) + "\n" + format_plan(path)


KINDS = ("move", "cell", "symbol", "plan")


def char_kinds(target: str) -> list[str]:
    """What each character of a target is, for per-decision accuracy: the ``move`` a line starts with, the
    ``cell`` it names (digits), the ``symbol`` it reads off the map, the final ``plan``; the rest ``other``."""
    import re

    kinds: list[str] = []
    for line in target.split("\n"):
        here = ["other"] * len(line)
        if line.startswith("Action plan:"):
            here[len("Action plan:") :] = ["plan"] * (len(line) - len("Action plan:"))
        else:
            first = re.match(r"[A-Za-z]+", line)  # the move's letters, not the colon after them
            if first:
                here[: first.end()] = ["move"] * first.end()
            for found in re.finditer(r"\d|(?<![A-Za-z])[a-h](?=\d)", line):  # digits, and a cell name's letter
                here[found.start()] = "cell"
            for found in re.finditer(r"(?<![A-Za-z])[FHGP](?![A-Za-z])", line):
                if found.start() >= (first.end() if first else 0):
                    here[found.start()] = "symbol"
        kinds += [*here, "other"]  # the newline
    return kinds[: len(target)]


def example(rng: Any, level: int, form: str) -> tuple[str, str, Any]:
    """(prompt, target, lake) for one fresh map."""
    from sketchmind.tasks.frozenlake import random_lake, solve

    lake = random_lake(rng, level)
    plan = solve(lake)
    assert plan is not None
    ends = f"The player is at {where(lake.player)}; the goal at {where(lake.goal)}.\n"  # as the expert writes it
    return QUESTION + map_text(lake) + "\n" + ends, target_text(lake, plan, form), lake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=["direct", "segments", "steps", "walk", "search"], default="segments")
    parser.add_argument("--cells", choices=["words", "coords", "names"], default="words", help="how cells are named")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--rope-theta", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--levels", default="3-8")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-n", type=int, default=16, help="held-out maps per level")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--guide",
        type=float,
        default=0.0,
        help="weight of a look-up guidance loss (names cells only): the token before a symbol attends to that "
        "cell's symbol in the written map (head 0 of layer 1), as reading from pixels was guided",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    CELLS["style"] = args.cells

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from sketchmind.files import append_jsonl
    from sketchmind.models.tiny import build_tiny
    from sketchmind.tasks.frozenlake import Lake, parse_plan, simulate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = (int(x) for x in args.levels.split("-"))
    levels = list(range(lo, hi + 1))
    corpus_rng = np.random.default_rng(7)
    corpus = [
        p + t
        for p, t, _ in (
            example(corpus_rng, levels[k % len(levels)], form)
            for k in range(600)
            for form in ("segments", "steps", "walk", "search", "direct")
        )
    ]
    model_dir = build_tiny(
        "qwen2.5-vl",
        out / "model",
        corpus=corpus,
        vocab_size=4000,
        hidden_size=args.hidden,
        layers=args.layers,
        init_std=0.02,
        rope_theta=args.rope_theta,
        max_pixels=224 * 224,
    )
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(
        str(model_dir), use_safetensors=True, attn_implementation="eager" if args.guide else None
    )
    if args.cells == "names":
        tokenizer.add_tokens(CELL_NAMES)
        model.resize_token_embeddings(len(tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    held_rng = np.random.default_rng(99)
    held = [(level, *example(held_rng, level, args.format)) for level in levels for _ in range(args.eval_n)]

    def batch_of(examples: list[tuple[str, str]]) -> dict[str, Any]:
        ids, labels = [], []
        for prompt, target in examples:
            p = tokenizer(prompt, add_special_tokens=False).input_ids
            t = [*tokenizer(target, add_special_tokens=False).input_ids, eos]
            ids.append(p + t)
            labels.append([-100] * len(p) + t)
        width = max(map(len, ids))
        return {
            "input_ids": torch.tensor([x + [pad] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
            "labels": torch.tensor([y + [-100] * (width - len(y)) for y in labels]),
        }

    names = set(tokenizer.convert_tokens_to_ids(CELL_NAMES)) if args.cells == "names" else set()
    symbols = set(tokenizer.convert_tokens_to_ids([f"Ġ{x}" for x in "PFGH"]))

    def lookups(ids: Any) -> Any:
        """Where each symbol after a cell name should be copied from: its first entry in the written map."""
        triples = []
        for row, seq in enumerate(ids.tolist()):
            entry: dict[int, int] = {}
            for k in range(len(seq) - 1):
                if seq[k] in names and seq[k + 1] in symbols:
                    if seq[k] in entry:
                        triples.append((row, k, entry[seq[k]]))  # a later mention: look the symbol up
                    else:
                        entry[seq[k]] = k + 1  # the map's own entry
        return torch.tensor(triples)

    @torch.no_grad()
    def evaluate() -> dict[str, Any]:
        model.eval()
        right: dict[int, list[bool]] = {level: [] for level in levels}
        for level, prompt, _, lake in held:
            ids = torch.tensor([tokenizer(prompt, add_special_tokens=False).input_ids])
            new = model.generate(input_ids=ids, max_new_tokens=200, do_sample=False, eos_token_id=eos, pad_token_id=pad)
            text = tokenizer.decode(new[0, ids.shape[1] :], skip_special_tokens=True)
            plan = parse_plan(text)
            right[level].append(plan is not None and simulate(Lake.from_truth(lake.truth()), plan) == "goal")
        model.train()
        per = {level: round(sum(v) / len(v), 3) for level, v in right.items()}
        return {
            "all": round(sum(sum(v) for v in right.values()) / len(held), 3),
            "levels": per,
            "teacher_forced": decisions(),
        }

    @torch.no_grad()
    def decisions() -> dict[str, float]:
        """Teacher-forced accuracy of each kind of token (``char_kinds``) on the held-out maps: which decision fails."""
        right = {k: 0 for k in KINDS}
        total = {k: 0 for k in KINDS}
        for _, prompt, target, _ in held:
            p = tokenizer(prompt, add_special_tokens=False).input_ids
            encoded = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
            kinds = char_kinds(target)
            ids = torch.tensor([p + encoded.input_ids])
            guess = model(input_ids=ids).logits[0, len(p) - 1 : -1].argmax(-1).tolist()
            for token, predicted, (lo, hi) in zip(encoded.input_ids, guess, encoded.offset_mapping, strict=True):
                chars = [kinds[i] for i in range(lo, hi) if not target[i].isspace()]
                kind = chars[0] if chars else "other"
                if kind in total:
                    total[kind] += 1
                    right[kind] += int(predicted == token)
        return {k: round(right[k] / total[k], 3) for k in KINDS if total[k]}

    (out / "log.jsonl").unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    start, step, seen = time.perf_counter(), 0, 0
    while time.perf_counter() - start < args.minutes * 60 and not (args.steps and step >= args.steps):
        examples = []
        for _ in range(args.batch):
            prompt, target, _ = example(rng, levels[seen % len(levels)], args.format)
            examples.append((prompt, target))
            seen += 1
        batch = batch_of(examples)
        if args.guide:
            output = model(**batch, output_attentions=True)
            pairs = lookups(batch["input_ids"])  # (row, query, key) triples
            attention = output.attentions[1][:, 0]  # layer 1, head 0: (batch, query, key)
            mass = attention[pairs[:, 0], pairs[:, 1], pairs[:, 2]].clamp_min(1e-6)
            loss = output.loss - args.guide * mass.log().mean()
        else:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        over = time.perf_counter() - start >= args.minutes * 60 or (args.steps and step >= args.steps)
        if step % args.eval_every == 0 or over:  # always measure the last step
            line = {
                "step": step,
                "maps": seen,
                "minutes": round((time.perf_counter() - start) / 60, 2),
                "loss": round(float(loss), 4),
                "held": evaluate(),
            }
            append_jsonl(out / "log.jsonl", [line])
            print(json.dumps(line), flush=True)
    model.save_pretrained(str(out / "final"))  # for later diagnosis
    tokenizer.save_pretrained(str(out / "final"))


if __name__ == "__main__":
    main()
