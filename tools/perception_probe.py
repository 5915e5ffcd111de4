"""Perception probe: how fast does a tiny VLM learn to read a frozen-lake map from pixels?

Trains one tiny model on fresh maps at every step (no map seen twice) to transcribe the grid, and
logs teacher-forced per-cell accuracy and exact-grid rate on fixed held-out maps (another seed) and
on VSP's own examples. One run = one arm; arms differ by family, init std, lr, batch and format.

    python tools/perception_probe.py --family qwen3-vl --minutes 15 --out runs/probe/q3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def _reading_row(wording: str, size_first: bool, cells: str) -> Any:
    """``perception_row`` with the map size always, never or sometimes asked for, and optionally read first.

    ``cells="coords"`` names every cell as it is written ("Row 2: 2,1 F 2,2 H"), the planning probe's style.
    """
    from sketchmind.tasks.frozenlake import Lake
    from sketchmind.train.perception import default_wording, perception_row

    def row(puzzle: Any) -> dict[str, Any]:
        # Wording 0 names the size; 1 and 2 do not (see train/perception._ASKS).
        # Never ``index % 2``: levels are picked by index too, and a wording tied to a size is a shortcut.
        pick = {"mixed": None, "always": 0, "never": 1 + default_wording(puzzle) % 2}[wording]
        built = perception_row(puzzle, pick)
        answer = built["messages"][1]["content"][0]
        if cells == "coords":
            lake = Lake.from_truth(puzzle.truth)
            answer["text"] = "\n".join(
                f"Row {r + 1}: " + " ".join(f"{r + 1},{c + 1} {lake.symbol((r, c))}" for c in range(lake.cols))
                for r in range(lake.rows)
            )
        if size_first:
            answer["text"] = f"A {puzzle.truth['rows']}x{puzzle.truth['cols']} map.\n" + answer["text"]
        return built

    return row


def truth_classes(truth: dict[str, Any], grid_thw: Any) -> Any:
    """The symbol under each merged image token of a frozen-lake map (0 F, 1 H, 2 P, 3 G), from its truth."""
    import torch

    from sketchmind.train.perception import token_cells

    n = truth["rows"]
    kinds = torch.zeros(n, n, dtype=torch.long)
    for r, c in truth["holes"]:
        kinds[r, c] = 1
    kinds[tuple(truth["player"])] = 2
    kinds[tuple(truth["goal"])] = 3
    rows, cols = token_cells(grid_thw, n)
    return kinds[rows][:, cols].flatten()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="qwen2.5-vl")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rope-theta", type=float, default=None)
    parser.add_argument("--init-std", type=float, default=0.02)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: only --minutes)")
    parser.add_argument("--levels", default="3-8")
    parser.add_argument("--curriculum", action="store_true", help="levels unlock as the reader improves")
    parser.add_argument("--max-pixels", type=int, default=224 * 224)
    parser.add_argument(
        "--fixed-pixels", action="store_true", help="every image resized to --max-pixels (one token grid for all maps)"
    )
    parser.add_argument("--eval-every", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--guide", type=float, default=0.0, help="weight of the attention-guidance loss (0: off)")
    parser.add_argument("--aux", type=float, default=0.0, help="weight of a per-token cell loss on the vision output")
    parser.add_argument("--aux-tied", action="store_true", help="classify tokens with the cell symbols' embeddings")
    parser.add_argument("--guide-layer", type=int, default=1)
    parser.add_argument("--format", choices=["grid", "rows"], default="grid")
    parser.add_argument(
        "--wording",
        choices=["mixed", "always", "never"],
        default="mixed",
        help="the map size in the request: in one wording of three (mixed), in every request, or in none",
    )
    parser.add_argument("--size-first", action="store_true", help="the reader writes 'A 5x5 map.' before the rows")
    parser.add_argument(
        "--cells", choices=["words", "coords"], default="words", help="coords: each cell written with its name, '2,3 F'"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sketchmind.files import append_jsonl
    from sketchmind.models.tiny import build_tiny
    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import make_dataset, puzzle_rng
    from sketchmind.train.collator import AssistantOnlyCollator
    from sketchmind.train.perception import (
        PERCEPTION_FAMILY,
        cell_token_ids,
        perception_corpus,
        row_crop_row,
        summarise_reading,
        teacher_forced,
        vsp_puzzles,
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = (int(x) for x in args.levels.split("-"))
    levels = list(range(lo, hi + 1))
    family = get_family(PERCEPTION_FAMILY)
    model_dir = build_tiny(
        args.family,
        out / "model",
        corpus=perception_corpus(),
        vocab_size=4000,
        hidden_size=args.hidden,
        layers=args.layers,
        init_std=args.init_std,
        rope_theta=args.rope_theta,
        max_pixels=args.max_pixels,
    )
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model_dir))
    if args.fixed_pixels:  # min = max: smaller maps are scaled up, so every square map gets the same token grid
        processor.image_processor.size = {"shortest_edge": args.max_pixels, "longest_edge": args.max_pixels}
    model = AutoModelForImageTextToText.from_pretrained(
        str(model_dir), use_safetensors=True, attn_implementation="eager" if args.guide else None
    )
    collator = AssistantOnlyCollator(processor)
    cells = cell_token_ids(processor.tokenizer)
    perception_row = row_crop_row if args.format == "rows" else _reading_row(args.wording, args.size_first, args.cells)
    held_puzzles = make_dataset(family, levels, 8, seed=99)
    held = [perception_row(p) for p in held_puzzles]
    vsp = [perception_row(p) for p in vsp_puzzles(Path("data/vsp-maze-examples"))]
    captured: dict[str, Any] = {}
    head = torch.nn.Linear(args.hidden, 4)
    if args.aux:
        model.model.visual.register_forward_hook(lambda m, i, o: captured.__setitem__("merged", o.pooler_output))
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.0)

    def token_classes(puzzles: list[Any], grids: Any) -> Any:
        return torch.cat([truth_classes(p.truth, grid) for p, grid in zip(puzzles, grids, strict=True)])

    params = sum(p.numel() for p in model.parameters())
    (out / "log.jsonl").unlink(missing_ok=True)
    start = time.perf_counter()
    step, seen = 0, 0
    unlocked = levels[:1] if args.curriculum else levels

    def evaluate(rows: list[dict[str, Any]]) -> dict[str, float]:
        score = summarise_reading(teacher_forced(model, collator, rows))
        return {"cell": score["cell"], "exact": score["exact"]}

    while time.perf_counter() - start < args.minutes * 60 and not (args.steps and step >= args.steps):
        rows, sizes, puzzles = [], [], []
        for _ in range(args.batch):
            level = unlocked[seen % len(unlocked)]
            puzzles.append(family.generate(puzzle_rng("probe", 0, level, seen), level, seen))
            rows.append(perception_row(puzzles[-1]))
            sizes.append(level)
            seen += 1
        batch = collator(rows)
        if args.guide:
            from sketchmind.train.perception import reading_targets

            output = model(**batch, output_attentions=True)
            attention = output.attentions[args.guide_layer][:, 0]  # (batch, query, key) of head 0
            targets = reading_targets(batch, cells, processor.tokenizer.convert_tokens_to_ids(processor.image_token))
            queries, mask = targets.queries, targets.mask
            mass = (attention[queries[:, 0], queries[:, 1]] * mask).sum(-1).clamp_min(1e-6)
            loss = output.loss - args.guide * mass.log().mean()
        else:
            loss = model(**batch).loss
        if args.aux:
            if args.aux_tied:  # the symbols' own embeddings as the classifier: no extra weights
                symbols = model.get_input_embeddings().weight[torch.tensor([cells[3], cells[2], cells[0], cells[1]])]
                logits = captured["merged"] @ symbols.T
            else:
                logits = head(captured["merged"])
            aux = torch.nn.functional.cross_entropy(logits, token_classes(puzzles, batch["image_grid_thw"]))
            loss = loss + args.aux * aux
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        if step % args.eval_every == 0:
            held_score, vsp_score = evaluate(held), evaluate(vsp)
            # Fresh maps drawn the way training draws them (another rng stream): a gap to ``held`` means the
            # held-out maps differ from the training ones, not that reading is poor.
            fresh = [
                perception_row(family.generate(puzzle_rng("probe-check", step, level, k), level, k))
                for k, level in enumerate(unlocked * (args.batch // len(unlocked)))
            ]
            held_score["fresh_train_like"] = evaluate(fresh)["cell"]
            if args.curriculum:
                now = [r for r, p in zip(held, held_puzzles, strict=True) if p.level <= unlocked[-1]]
                held_score["unlocked"] = evaluate(now)["cell"]
            line = {
                "step": step,
                "maps": seen,
                "minutes": round((time.perf_counter() - start) / 60, 2),
                "loss": round(float(loss), 4),
                "held": held_score,
                "vsp": vsp_score,
                "unlocked": unlocked[-1],
            }
            append_jsonl(out / "log.jsonl", [line])
            print(json.dumps(line), flush=True)
            if args.curriculum and held_score["unlocked"] > 0.97 and len(unlocked) < len(levels):
                unlocked = levels[: len(unlocked) + 1]
    print(json.dumps({"parameters": params, "steps": step, "maps": seen}))
    model.save_pretrained(str(out / "final"))  # for later diagnosis
    processor.save_pretrained(str(out / "final"))


if __name__ == "__main__":
    main()
