"""Search probe: does planning start when the search reads each cell from the image, not from the text?

The planning probe (``tools/planning_probe.py``) found that once the map is written down, the 5 M model
does not learn to look a cell up in the text: every search line's symbol stayed at the majority rate. Reading
the map from pixels had the same shape (find the cell, copy its symbol) and started once an attention
guidance loss told one head where to look. This probe puts the two together: the model sees the map image,
writes the greedy search (``D: 3,2 F``: the move tried, the cell it reaches, what is there), then the plan.
Every symbol the answer writes, the map rows' included with ``--with-map``, is guided to its cell's image
tokens, and the image tokens are classified by the symbols' tied embeddings, as the perceive stage does.

Scores, teacher-forced on held-out maps (seed 99, 8 a size): the symbols the search reads (``reads``), the
map rows' symbols (``map``), every answer token (``tokens``), and ``exact``, the maps whose whole answer is
the top prediction at every token: greedy decoding then writes the expert's search and plan word for word,
so ``exact`` is a floor on the solve rate.

``--draw`` writes the same lines as draw turns, one tried move a turn, each answered by a view with the
search so far drawn (``draw_search.py``); ``--guide-cells`` also guides the coordinates a line writes to
the cell it reaches, in the latest image.

    python tools/search_probe.py --minutes 30 --curriculum --out runs/probe/search-pixels
    python tools/search_probe.py --minutes 30 --curriculum --draw --guide-cells --out runs/probe/search-draw
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # the planning probe's search, beside this file

import draw_search
import planning_probe
from perception_probe import truth_classes

QUESTION = "Plan a path from P to G that steps on no H."


STYLE: dict[str, Any] = {
    "from_cell": False,
    "draw": False,
    "markov": False,
    "guide_cells": False,
    "side": 336,
    "view_side": 336,
}


def search_lines(lake: Any) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    """The planning probe's search (lines, the cell each line reads, the plan), in this probe's style.

    With ``STYLE["from_cell"]`` each tried move starts from the cell it leaves ("3,2 D: 4,2 F"), so the next
    cell is arithmetic on the same line instead of on a cell some lines above.
    """
    from sketchmind.tasks.frozenlake import MOVES

    lines, reads, path = planning_probe.search(lake)
    if STYLE["from_cell"]:
        tried = iter(reads)
        for k, line in enumerate(lines):
            if not line.startswith("Back"):
                reached, move = next(tried), line[0]
                left = (reached[0] - MOVES[move][0], reached[1] - MOVES[move][1])
                lines[k] = f"{planning_probe.where(left)} {line}"
    return lines, reads, path


def answer(lake: Any, with_map: bool) -> tuple[str, list[tuple[int, int]]]:
    """What the model writes ([map rows,] where P and G are, the search, the plan) and the cells it reads."""
    from sketchmind.tasks.frozenlake import format_plan

    lines, reads, path = search_lines(lake)
    # Where the search starts and heads: found in the image, never given in the text.
    ends = f"Find P {planning_probe.where(lake.player)}, G {planning_probe.where(lake.goal)}."
    text = "\n".join([ends, *lines, format_plan(path)])
    return (planning_probe.map_text(lake) + "\n" + text if with_map else text), reads


def search_row(
    puzzle: Any, with_map: bool, turn: int | None = None
) -> tuple[dict[str, Any], list[str], list[tuple[int, int]], int]:
    """One SFT row (image, question, [map rows,] ends, search, plan), its assistant texts, the cell of every
    symbol it writes, and how many of those the search reads (the last ones).

    With ``STYLE["markov"]`` the row is one turn that stands alone (``draw_search.markov_turns``): ``turn``,
    or one picked by the puzzle's index (the k-th of n turns, -1 the plan)."""
    import numpy as np
    from PIL import Image

    from sketchmind.tasks.frozenlake import Lake

    if STYLE["markov"]:
        turns = draw_search.markov_turns(puzzle)
        if turn is None:
            turn = int(np.random.default_rng([puzzle.level, puzzle.index]).integers(len(turns)))
        view, text, cells, reads = turns[turn]
        image = Image.fromarray(np.ascontiguousarray(view)).resize((STYLE["side"],) * 2, Image.BICUBIC)
        return markov_row(image, text), [text], cells, reads
    if STYLE["draw"]:
        row, *rest = draw_search.draw_row(puzzle, QUESTION, *search_lines(Lake.from_truth(puzzle.truth)))
        # The map at the probe's side like the one-image search; the views after it at --view-side, smaller
        # and cheaper (the processor then keeps each image's size, between the two).
        sides = [STYLE["side"]] + [STYLE["view_side"]] * (len(row["images"]) - 1)
        row["images"] = [
            image.resize((side, side), Image.BICUBIC) for image, side in zip(row["images"], sides, strict=True)
        ]
        return (row, *rest)
    lake = Lake.from_truth(puzzle.truth)
    text, reads = answer(lake, with_map)
    cells = [lake.player, lake.goal, *reads]
    if with_map:
        cells = [(r, c) for r in range(lake.rows) for c in range(lake.cols)] + cells
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": text}]},
        ],
        "images": [Image.fromarray(np.ascontiguousarray(puzzle.image))],
    }
    return row, [text], cells, len(reads)


def markov_row(image: Any, text: str | None) -> dict[str, Any]:
    """One stand-alone turn: the latest view and the question, [then what the model writes]."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    if text is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
    return {"messages": messages, "images": [image]}


def held_rows(puzzles: list[Any], with_map: bool) -> list[tuple[int, dict[str, Any]]]:
    """The held-out rows and their map sizes: one a map, or with ``STYLE["markov"]`` its first, middle and
    last (plan) turns."""
    from sketchmind.tasks.frozenlake import Lake

    if not STYLE["markov"]:
        return [(p.level, search_row(p, with_map)[0]) for p in puzzles]
    rows = []
    for puzzle in puzzles:
        n = len(planning_probe.search(Lake.from_truth(puzzle.truth))[0]) + 1  # the lines, then the plan
        rows += [(puzzle.level, search_row(puzzle, with_map, k)[0]) for k in sorted({0, n // 2, n - 1})]
    return rows


def corpus() -> Any:
    """The tokenizer's texts: the reading rows' and the search answers'."""
    import numpy as np

    from sketchmind.tasks.frozenlake import random_lake
    from sketchmind.train.perception import perception_corpus

    yield from perception_corpus()
    rng = np.random.default_rng(0)
    for k in range(400):
        lake = random_lake(rng, 3 + k % 6)
        yield answer(lake, with_map=True)[0]
        yield QUESTION


def image_spans(ids: Any, image_token: int) -> list[tuple[int, int]]:
    """(start, end) of each image's tokens in one row, in order."""
    import torch

    is_image = (ids == image_token).long()
    edges = torch.diff(torch.cat([torch.zeros(1, dtype=torch.long), is_image, torch.zeros(1, dtype=torch.long)]))
    return list(zip((edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist(), strict=True))


def cell_mask(span: tuple[int, int], grid_thw: Any, n: int, cell: tuple[int, int], length: int) -> Any:
    """1 on the image tokens of ``span`` (one image, of ``grid_thw``) inside ``cell`` of an n x n map."""
    import torch

    from sketchmind.train.perception import token_cells

    rows, cols = token_cells(grid_thw, n)
    mask = torch.zeros(length)
    mask[span[0] : span[1]] = ((rows == cell[0])[:, None] & (cols == cell[1])[None, :]).flatten().float()
    return mask


def coordinates_before(ids: Any, position: int, tokenizer: Any) -> int:
    """The position of the token just before the "r,c" that ends right before ``position``."""
    first = position - 1
    while tokenizer.decode([int(ids[first])]).strip(" ,0123456789") == "" and first > 0:
        first -= 1
    return first


def targets(
    batch: Any,
    cells: list[int],
    image_token: int,
    where: list[list[tuple[int, int]]],
    sizes: list[int],
    reads: list[int],
    tokenizer: Any,
) -> Any:
    """Guidance targets: (row, position) of the token before each written symbol, and its cell's image tokens
    in the latest image before it (with ``--draw``, the view with the search so far drawn).

    The tokens that write P's and G's coordinates look at their cells too; with ``STYLE["guide_cells"]`` so do
    the tokens that write the coordinates of the cell a search line reaches (from its colon on)."""
    import torch

    from sketchmind.tasks.frozenlake import MOVES

    labels, ids, grids = batch["labels"], batch["input_ids"], batch["image_grid_thw"]
    queries, masks, first_image = [], [], 0
    for b in range(len(ids)):
        spans = image_spans(ids[b], image_token)
        row_grids = grids[first_image : first_image + len(spans)]
        first_image += len(spans)
        positions = torch.isin(labels[b], torch.tensor(cells)).nonzero().flatten().tolist()
        if len(positions) != len(where[b]):  # a symbol token the tokenizer merged: no guidance for this row
            continue
        n = sizes[b]
        player = len(where[b]) - reads[b] - 2  # the map's cells (with --with-map), then P and G, then the reads
        for k, (position, (r, c)) in enumerate(zip(positions, where[b], strict=True)):
            latest = max(i for i, (start, _) in enumerate(spans) if start < position)
            mask = cell_mask(spans[latest], row_grids[latest], n, (r, c), ids.shape[1])
            if k in (player, player + 1):  # "P 2,1": its coordinates come after the symbol
                guided = range(position - 1, position + 4)
            elif k > player + 1 and STYLE["guide_cells"]:  # "L: 4,3 F": the coordinates come before it
                first = coordinates_before(ids[b], position, tokenizer)
                guided = range(first, position)
                if STYLE["from_cell"]:  # "4,4 L: 4,3 F": the cell it leaves, and the move, look at that cell
                    move = tokenizer.decode([int(ids[b, first - 1])]).strip()
                    left = (r - MOVES[move][0], c - MOVES[move][1])
                    before = coordinates_before(ids[b], first - 1, tokenizer)
                    for query in range(before, first - 1):
                        queries.append((b, query))
                        masks.append(cell_mask(spans[latest], row_grids[latest], n, left, ids.shape[1]))
            else:
                guided = range(position - 1, position)
            for query in guided:
                queries.append((b, query))
                masks.append(mask)
    return torch.tensor(queries), torch.stack(masks)


def token_kinds(tokenizer: Any, text: str, ids: list[int], ends: bool = True) -> list[str]:
    """The kind of each answer token: ``ends`` (the first line, where ``ends``), then the planning probe's
    ``move``, ``cell``, ``symbol`` and ``plan`` (by the first character the token writes); ``other`` past the
    text."""
    first_line = text.index("\n") if ends else 0
    chars = ["ends"] * first_line + planning_probe.char_kinds(text)[first_line:]
    chars = [{"plan": "plan"}.get(kind, kind) for kind in chars]
    kinds, at = [], 0
    for token in ids:
        piece = tokenizer.decode([token])
        inside = [chars[i] for i in range(at, min(at + len(piece), len(chars))) if not text[i].isspace()]
        kind = next((k for k in inside if k != "other"), "other") if inside else "other"
        kinds.append("move" if kind == "other" and piece.strip() in ("U", "D", "L", "R") else kind)
        at += len(piece)
    return kinds


def score(model: Any, collator: Any, rows: list[dict[str, Any]], cells: list[int]) -> dict:
    """Teacher-forced counts (right, of) per kind of answer token (``token_kinds``), every token, whole answers."""
    import torch

    tokenizer = collator.processor.tokenizer
    totals: dict[str, list[int]] = {kind: [0, 0] for kind in ("ends", "move", "cell", "symbol", "plan", "tokens")}
    totals["exact"] = [0, 0]
    model.eval()
    with torch.no_grad():
        for k in range(0, len(rows), 16):
            batch = collator(rows[k : k + 16])
            predicted = model(**batch).logits[:, :-1].argmax(-1)
            target = batch["labels"][:, 1:]
            for r in range(target.shape[0]):
                real = (target[r] != -100).nonzero().flatten()
                right = predicted[r][real] == target[r][real]
                texts = [m["content"][0]["text"] for m in rows[k + r]["messages"] if m["role"] == "assistant"]
                # Each assistant turn is one run of labelled tokens; its kinds come from its own text.
                turns = torch.tensor_split(real, (torch.diff(real) > 1).nonzero().flatten() + 1)
                kinds = [
                    kind
                    for t, (text, turn) in enumerate(zip(texts, turns, strict=True))
                    for kind in token_kinds(tokenizer, text, target[r][turn].tolist(), ends=t == 0)
                ]
                for kind, ok in zip(kinds, right.tolist(), strict=True):
                    if kind in totals:
                        totals[kind][0] += int(ok)
                        totals[kind][1] += 1
                totals["tokens"][0] += int(right.sum())
                totals["tokens"][1] += len(real)
                totals["exact"][0] += int(bool(right.all()))
                totals["exact"][1] += 1
    model.train()
    return totals


def rates(*counts: dict) -> dict:
    """The accuracies of one or more ``score`` results together."""
    return {
        name: round(sum(c[name][0] for c in counts) / total, 4) if (total := sum(c[name][1] for c in counts)) else None
        for name in counts[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rope-theta", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--levels", default="3-8")
    parser.add_argument("--curriculum", action="store_true", help="sizes open as the open ones pass --widen")
    parser.add_argument("--widen", type=float, default=0.9, help="teacher-forced token accuracy to open a size")
    parser.add_argument("--side", type=int, default=336, help="every image resized to side x side")
    parser.add_argument("--view-side", type=int, help="with --draw: the views after the map resized to this")
    parser.add_argument("--with-map", action="store_true", help="the answer writes the map rows before searching")
    parser.add_argument("--from-cell", action="store_true", help="each tried move starts with the cell it leaves")
    parser.add_argument("--draw", action="store_true", help="one tried move a turn, the search drawn in a view")
    parser.add_argument(
        "--markov", action="store_true", help="with --draw: each turn stands alone (the latest view, no history)"
    )
    parser.add_argument(
        "--guide-cells", action="store_true", help="guide the coordinates of the cell a line reaches to that cell"
    )
    parser.add_argument("--guide", type=float, default=1.0)
    parser.add_argument("--aux", type=float, default=1.0)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    planning_probe.CELLS["style"] = "coords"
    STYLE["from_cell"] = args.from_cell
    STYLE["draw"] = args.draw
    STYLE["markov"] = args.markov
    STYLE["guide_cells"] = args.guide_cells
    STYLE["side"], STYLE["view_side"] = args.side, args.view_side or args.side

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(args.threads)
    from sketchmind.files import append_jsonl
    from sketchmind.models.tiny import build_tiny
    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import make_dataset, puzzle_rng
    from sketchmind.train.collator import AssistantOnlyCollator
    from sketchmind.train.perception import PERCEPTION_FAMILY, cell_token_ids

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = (int(x) for x in args.levels.split("-"))
    levels = list(range(lo, hi + 1))
    family = get_family(PERCEPTION_FAMILY)
    model_dir = build_tiny(
        "qwen2.5-vl",
        out / "model",
        corpus=corpus(),
        vocab_size=4000,
        hidden_size=args.hidden,
        layers=args.layers,
        init_std=0.02,
        rope_theta=args.rope_theta,
        max_pixels=args.side * args.side,
    )
    processor = AutoProcessor.from_pretrained(str(model_dir))
    smallest = min(args.side, args.view_side or args.side)
    processor.image_processor.size = {"shortest_edge": smallest**2, "longest_edge": args.side**2}
    model = AutoModelForImageTextToText.from_pretrained(
        str(model_dir), use_safetensors=True, attn_implementation="eager"
    )
    collator = AssistantOnlyCollator(processor)
    cells = cell_token_ids(processor.tokenizer)
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    symbols = model.get_input_embeddings().weight  # classes F, H, P, G below index these rows
    order = torch.tensor([cells[3], cells[2], cells[0], cells[1]])
    captured: dict[str, Any] = {}
    model.model.visual.register_forward_hook(lambda m, i, o: captured.__setitem__("merged", o.pooler_output))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    held_puzzles = make_dataset(family, levels, 8, seed=99)
    held = held_rows(held_puzzles, args.with_map)
    (out / "log.jsonl").unlink(missing_ok=True)
    unlocked = levels[:1] if args.curriculum else levels
    start, step, seen = time.perf_counter(), 0, 0
    while time.perf_counter() - start < args.minutes * 60:
        puzzles = []
        for _ in range(args.batch):
            level = unlocked[seen % len(unlocked)]
            puzzles.append(family.generate(puzzle_rng("search-probe", 0, level, seen), level, seen))
            seen += 1
        built = [search_row(p, args.with_map) for p in puzzles]
        batch = collator([row for row, _, _, _ in built])
        output = model(**batch, output_attentions=args.guide > 0)
        loss = output.loss
        if args.guide:
            queries, mask = targets(
                batch,
                cells,
                image_token,
                [w for _, _, w, _ in built],
                [p.truth["rows"] for p in puzzles],
                [n for _, _, _, n in built],
                processor.tokenizer,
            )
            attention = output.attentions[1][:, 0]  # head 0 of layer 1, as the perceive stage guides
            mass = (attention[queries[:, 0], queries[:, 1]] * mask).sum(-1).clamp_min(1e-6)
            loss = loss - args.guide * mass.log().mean()
        if args.aux:
            logits = captured["merged"] @ symbols[order].T
            per_image = [p for (row, *_), p in zip(built, puzzles, strict=True) for _ in row["images"]]
            loss = loss + args.aux * torch.nn.functional.cross_entropy(
                logits,
                torch.cat([truth_classes(p.truth, g) for p, g in zip(per_image, batch["image_grid_thw"], strict=True)]),
            )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        if step % args.eval_every == 0:
            line: dict[str, Any] = {
                "step": step,
                "maps": seen,
                "minutes": round((time.perf_counter() - start) / 60, 2),
                "loss": round(float(loss.detach()), 4),
                "open": unlocked[-1],
            }
            by_level = {}
            for level in levels:
                by_level[level] = score(model, collator, [row for size, row in held if size == level], cells)
            line["held"] = rates(*by_level.values())
            line["open_sizes"] = rates(*(by_level[level] for level in unlocked))
            by_level = {level: rates(counts) for level, counts in by_level.items()}
            line["exact_by_size"] = {level: s["exact"] for level, s in by_level.items()}
            append_jsonl(out / "log.jsonl", [line])
            print(json.dumps(line), flush=True)
            now = [s["tokens"] for level, s in by_level.items() if level in unlocked]
            if args.curriculum and min(now) > args.widen and len(unlocked) < len(levels):
                unlocked = levels[: len(unlocked) + 1]
            save(model, processor, out / "final")  # the latest weights, kept at every evaluation
    save(model, processor, out / "final")


def save(model: Any, processor: Any, folder: Path) -> None:
    """The model and processor, as search_solve.py loads them."""
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))


if __name__ == "__main__":
    main()
