"""The search stage: teach the frozen-lake search (``search_rows``) on fresh maps, then solve held-out maps.

Training mirrors the perceive stage: every row is a new map made when the trainer asks for it, sizes open
from the smallest as the open ones are learnt (``Curriculum``), and the guidance losses point each cell the
model names at that cell's image tokens (``cell_guidance``). The gate is teacher-forced: the share of answer
tokens that are the model's top prediction on validation maps of the open sizes.

The measure that counts is the closed loop (``solve``): the model runs greedily as a user would run it, the
draw arm one turn at a time with **its own** lines drawn into each next view, and the family's verifier
checks the plan. A line that does not follow from the drawn state ends that map unsolved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sketchmind.tasks.base import Puzzle
from sketchmind.tasks.frozenlake import Lake
from sketchmind.tasks.frozenlake_search import SearchState, parse_step
from sketchmind.train.cell_guidance import cell_targets
from sketchmind.train.perception import Curriculum, ReadingTargets, curriculum_state, fresh_map_rows, predictions
from sketchmind.train.search_rows import Arm, draw_row, draw_turns, search_question, search_row, text_row

if TYPE_CHECKING:
    from sketchmind.models.base import Policy

FIND_PLAYER = re.compile(r"Find P (\d+),(\d+),")


def search_dataset(family: str, arm: Arm, curriculum: Curriculum, n: int, seed: int) -> Any:
    """``n`` planning rows of fresh maps (``perception.fresh_map_rows``), each with its map for the guidance."""
    return fresh_map_rows(
        family,
        curriculum,
        n,
        seed,
        lambda puzzle: search_row(puzzle, arm),
        stream=f"search-{family}",
        keys=("id", "messages", "images", "map"),
    )


def batch_search_targets(inputs: dict[str, Any], processor: Any, map: Sequence[Sequence[str]]) -> ReadingTargets:
    """``cell_targets`` for a collated batch; ``map`` is the rows' maps (``guided_trainer``'s ``row_keys``)."""
    tokenizer = processor.tokenizer
    return cell_targets(inputs, map, tokenizer, tokenizer.convert_tokens_to_ids(processor.image_token))


def validation_rows(puzzles: Sequence[Puzzle], arm: Arm) -> list[tuple[int, dict[str, Any]]]:
    """(level, row) to score teacher-forced: a text row a map, or a draw map's first, middle and last turns."""
    if arm == "text":
        return [(p.level, text_row(p)) for p in puzzles]
    rows = []
    for puzzle in puzzles:
        n = len(draw_turns(puzzle))
        rows += [(puzzle.level, draw_row(puzzle, k)) for k in sorted({0, n // 2, n - 1})]
    return rows


def answer_accuracy(model: Any, collator: Any, rows: Sequence[dict[str, Any]], batch_size: int = 16) -> float:
    """Teacher-forced: the share of the rows' answer tokens that are the model's top prediction."""
    right = total = 0
    for predicted, target in predictions(model, collator, rows, batch_size):
        real = target != -100
        right += int(((predicted == target) & real).sum())
        total += int(real.sum())
    return right / max(total, 1)


def widen_callback(
    puzzles: Sequence[Puzzle], arm: Arm, widen: float, curriculum: Curriculum, *, every: int, report: Any = print
) -> Any:
    """A ``TrainerCallback`` that opens the next size once the open ones' answer tokens pass ``widen``.

    Its curriculum is saved in each checkpoint (``curriculum_state``), so a resumed run goes on with the sizes
    it had.
    """
    rows = validation_rows(puzzles, arm)

    class SearchCurriculumCallback(curriculum_state(curriculum, every)):  # type: ignore[misc]
        def check(self, model: Any, collator: Any, levels: list[int], step: int, control: Any) -> dict[str, Any]:
            scores = {
                level: answer_accuracy(model, collator, [r for size, r in rows if size == level]) for level in levels
            }
            shown = ", ".join(f"{level}x{level} {score:.3f}" for level, score in scores.items())
            report(f"search step {step}, answer tokens right: {shown}")
            if min(scores.values()) >= widen and curriculum.widen():
                report(f"search: level {curriculum.current()[-1]} joins")
            return {"tokens": scores}

    return SearchCurriculumCallback()


# ------------------------------------------------------------------------------------------ the closed loop


def _conversation(key: str, image: Any, question: str) -> Any:
    """One user message: the image (or view) and the request, as the product's policies take it."""
    from sketchmind.models.base import Conversation
    from sketchmind.protocols.base import image_part, text_part

    return Conversation(key, [{"role": "user", "content": [image_part(0), text_part(question)]}], {0: image})


@dataclass(frozen=True)
class SearchLimits:
    """How long a closed-loop run of an n x n map may go. Every cell is tried at most once and stepped back
    from at most once, so a search has at most 2 n^2 lines; a plan has at most n^2 moves. Decoding stops
    at the end of a turn, so generous limits cost only on output that never ends."""

    turns: int
    turn_tokens: int
    text_tokens: int

    @classmethod
    def of(cls, level: int) -> SearchLimits:
        lines, moves = 2 * level * level, level * level
        return cls(turns=lines + 1, turn_tokens=24 + 2 * moves, text_tokens=14 * lines + 24 + 2 * moves)


def solve(
    policy: Policy,
    puzzles: Sequence[Puzzle],
    arm: Arm,
    chunk: int = 16,
    question: Callable[[Puzzle], str] = search_question,
) -> list[str]:
    """Each puzzle's final answer, the policy run greedily in closed loop, ``chunk`` puzzles of a size at once.

    The text arm answers in one turn. The draw arm takes a turn at a time: each sees only the view of the
    search so far, drawn from the model's own lines (from the player it found), and the run of a puzzle ends
    with its plan, with a line that does not follow from the drawn state, or after ``SearchLimits.turns``.
    What ended a run is its answer, so the verifier judges it and nothing the model wrote can raise here.
    ``question`` words the request for a puzzle (by default one of the training wordings).
    """
    answers = [""] * len(puzzles)
    for level in sorted({p.level for p in puzzles}):
        limits = SearchLimits.of(level)
        of_level = [k for k, p in enumerate(puzzles) if p.level == level]
        for start in range(0, len(of_level), chunk):
            indices = of_level[start : start + chunk]
            group = [puzzles[k] for k in indices]
            if arm == "text":
                run = _solve_text(policy, group, limits, question)
            else:
                run = _solve_draw(policy, group, limits, question)
            for k, answer in zip(indices, run, strict=True):
                answers[k] = answer
    return answers


def _solve_text(
    policy: Policy, puzzles: Sequence[Puzzle], limits: SearchLimits, question: Callable[[Puzzle], str]
) -> list[str]:
    from sketchmind.models.base import Sampling

    batch = [_conversation(f"text-{p.id}", p.image, question(p)) for p in puzzles]
    said = policy.generate_batch(batch, Sampling(max_new_tokens=limits.text_tokens))
    for conversation in batch:
        policy.release(conversation.id)
    return [generation.text for generation in said]


def _solve_draw(
    policy: Policy, puzzles: Sequence[Puzzle], limits: SearchLimits, question: Callable[[Puzzle], str]
) -> list[str]:
    from sketchmind.models.base import Sampling
    from sketchmind.tasks.frozenlake_search import search_view

    lakes = [Lake.from_truth(p.truth) for p in puzzles]
    answers: dict[int, str] = {}
    drawn: dict[int, SearchState | None] = dict.fromkeys(range(len(puzzles)))
    for turn in range(limits.turns):
        live = [k for k in range(len(puzzles)) if k not in answers]
        if not live:
            break
        batch = [
            _conversation(f"draw-{puzzles[k].id}-{turn}", search_view(puzzles[k], drawn[k]), question(puzzles[k]))
            for k in live
        ]
        said = policy.generate_batch(batch, Sampling(max_new_tokens=limits.turn_tokens))
        for conversation in batch:
            policy.release(conversation.id)
        for k, generation in zip(live, said, strict=True):
            text = generation.text.strip()
            line = text.splitlines()[-1] if text else ""
            if line.startswith("Action plan:"):
                answers[k] = line
                continue
            try:
                drawn[k] = _next_state(drawn[k], text, line, lakes[k])
            except ValueError:
                answers[k] = generation.text
    return [answers.get(k, "") for k in range(len(puzzles))]


def _next_state(state: SearchState | None, text: str, line: str, lake: Lake) -> SearchState:
    """The drawn state after a turn's line; the first turn also finds the player. ValueError: it does not follow."""
    if state is None:
        found = FIND_PLAYER.match(text)
        player = (int(found[1]) - 1, int(found[2]) - 1) if found else None
        if player is None or not lake.inside(player):
            raise ValueError("the first turn does not find the player on the map")
        state = SearchState((player,))
    step = parse_step(line, state.current)
    if step is None:
        raise ValueError(f"not a step of the search from {state.current}: {line!r}")
    return state.after(step, lake)


SOLVE_FILE = "solve.json"


@dataclass(frozen=True)
class SolveTable:
    """Closed-loop solve rates per map set and level: rows of ``set``, ``level``, ``solved``, ``n``."""

    arm: str
    rows: list[dict[str, Any]]

    def markdown(self) -> str:
        from sketchmind.bench.report import wilson

        lines = ["| maps | level | solved | n | rate (95% CI) |", "|---|---|---|---|---|"]
        for row in self.rows:
            low, high = wilson(row["solved"], row["n"])
            rate = row["solved"] / max(row["n"], 1)
            lines.append(
                f"| {row['set']} | {row['level']} | {row['solved']} | {row['n']} | {rate:.2f} ({low:.2f}-{high:.2f}) |"
            )
        return "\n".join(lines)

    def summary(self) -> dict[str, float]:
        return {f"{r['set']}_solved": round(r["solved"] / max(r["n"], 1), 4) for r in self.rows if r["level"] == "all"}

    def save(self, path: Path) -> None:
        from sketchmind.files import write_json_atomic

        write_json_atomic(path, {"arm": self.arm, "rows": self.rows})


def measure_solving(
    policy: Policy,
    sets: Mapping[str, Sequence[Puzzle]],
    arm: Arm,
    family: Any,
    question: Callable[[Puzzle], str] = search_question,
) -> SolveTable:
    """``solve`` every map set (name -> puzzles) and count the verified plans per level and overall."""
    rows = []
    for name, puzzles in sets.items():
        answers = solve(policy, puzzles, arm, question=question)
        ok = [bool(family.verify(p, a)) for p, a in zip(puzzles, answers, strict=True)]
        for level in sorted({p.level for p in puzzles}):
            picked = [o for p, o in zip(puzzles, ok, strict=True) if p.level == level]
            rows.append({"set": name, "level": level, "solved": sum(picked), "n": len(picked)})
        rows.append({"set": name, "level": "all", "solved": sum(ok), "n": len(ok)})
    return SolveTable(arm, rows)
