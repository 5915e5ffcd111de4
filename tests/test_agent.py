"""The agent loop end to end on real canvases, protocols and traces (policies replay recorded turns)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recorded import EXPERT, MAZE

from sketchmind.agent import TEXT_MODE_ERROR, Agent, Budgets
from sketchmind.models.replay import ReplayPolicy
from sketchmind.selection import normalise_answer, select
from sketchmind.trace import Step, Trace


def texts(messages: list[dict]) -> str:
    return "\n".join(p.get("text", "") for m in messages for p in m["content"] if isinstance(p, dict))


def test_draw_mode_solves_with_tools(tmp_path: Path) -> None:
    agent = Agent(ReplayPolicy(EXPERT))
    trace = agent.solve(MAZE, "Find a safe path.", save=tmp_path / "run")
    assert trace.status == "answered" and trace.answer == "Action plan: R,U,U,U"
    assert [s.view_ids for s in trace.steps] == [[2, 3], [4], []]
    assert len(trace.views) == 4 and trace.views[3]["parent"] == 2
    saved = json.loads((tmp_path / "run" / "trace.json").read_text())
    assert saved["status"] == "answered" and len(list((tmp_path / "run" / "views").glob("*.png"))) == 4


def test_model_mistakes_go_back_as_observations_and_the_run_ends_without_answer(tmp_path: Path) -> None:
    garbage = ["I think it is left", '<tool_call>{"name": "box", "arguments": {"view": 9, "bbox": [1, 2, 3, 4]}}']
    agent = Agent(ReplayPolicy(garbage * 3), budgets=Budgets(max_turns=4))
    events = list(agent.stream(MAZE, "maze?", run_id="bad", save=tmp_path / "bad"))
    assert events[-1]["status"] == "no_answer"
    trace = Trace.load(tmp_path / "bad")
    assert trace.status == "no_answer" and trace.answer is None and len(trace.steps) == 4
    assert any("no <tool_call> or <answer>" in e for e in trace.steps[0].errors)
    assert any("view 9 does not exist" in e for e in trace.steps[1].errors)


def test_stream_yields_nodes_in_order() -> None:
    agent = Agent(ReplayPolicy(EXPERT))
    nodes = [event["node"] for event in agent.stream(MAZE, "maze?")]
    assert nodes == ["think", "act", "observe", "think", "act", "observe", "think", "end"]


def test_observations_carry_the_new_views() -> None:
    agent = Agent(ReplayPolicy(EXPERT), checkpoint=None)
    final = None
    for _event, state in agent._run(MAZE, "maze?", "obs", None):
        final = state
    assert final is not None
    observation = final["messages"][3]
    assert observation["role"] == "user"
    assert {"type": "image", "view": 2} in observation["content"]
    assert "<observation>view 2: grid on view 1 (256x256)</observation>" in texts([observation])


def test_text_mode_refuses_tools() -> None:
    outputs = [EXPERT[0], "<think>R then U.</think><answer>Action plan: R,U,U,U</answer>"]
    trace = Agent(ReplayPolicy(outputs), mode="text").solve(MAZE, "maze?")
    assert trace.status == "answered" and trace.steps[0].errors == [TEXT_MODE_ERROR]
    assert trace.steps[0].view_ids == [] and len(trace.views) == 1


@pytest.mark.parametrize("mode", ["latent", "auto"])
def test_latent_modes_fail_clearly(mode: str) -> None:
    with pytest.raises(ValueError, match="needs a latent-token policy"):
        Agent(ReplayPolicy([]), mode=mode)  # type: ignore[arg-type]


def test_image_budget() -> None:
    outputs = [EXPERT[0], EXPERT[1], EXPERT[2]]
    trace = Agent(ReplayPolicy(outputs), budgets=Budgets(max_images=2)).solve(MAZE, "maze?")
    assert trace.steps[0].view_ids == [2]
    assert any("image budget spent" in e for e in trace.steps[0].errors)
    assert trace.answer is not None


def test_whiteboard_run() -> None:
    outputs = [
        '<tool_call>{"name": "line", "arguments": {"start": [0, 0], "end": [500, 500]}}</tool_call>',
        "<answer>1</answer>",
    ]
    trace = Agent(ReplayPolicy(outputs)).solve(None, "Draw a diagonal.")
    assert trace.status == "answered" and trace.views[0]["width"] == 1024


def test_checkpoint_interrupt_edit_and_resume(tmp_path: Path) -> None:
    database = tmp_path / "runs.sqlite"
    agent = Agent(ReplayPolicy(EXPERT), checkpoint=database, interrupt_before_act=True)
    list(agent.stream(MAZE, "maze?", run_id="r1"))
    paused = agent.state("r1")
    assert paused["status"] == "running" and [c["name"] for g in paused["pending"] for c in g] == ["grid", "box"]
    # A person adds a mark before the drawing happens; a fresh process resumes from the database.
    mark = {"name": "point", "arguments": {"view": 1, "point": [32, 224], "label": "me"}, "group": 2}
    fresh = Agent(ReplayPolicy(EXPERT), checkpoint=database, interrupt_before_act=True)
    fresh.edit("r1", [*paused["pending"], [mark]])
    for _ in range(3):  # one interrupt per drawing turn
        trace = fresh.resume("r1")
    assert trace.status == "answered"
    assert trace.steps[0].view_ids == [2, 3, 4]
    assert trace.views[3]["actions"][0]["arguments"]["label"] == "me"


def test_solve_batch_and_sampling() -> None:
    agent = Agent(ReplayPolicy(EXPERT))
    traces = agent.solve_batch([(MAZE, "a"), (MAZE, "b"), (None, "c")])
    assert [t.status for t in traces[:2]] == ["answered", "answered"]
    assert traces[2].status == "answered"  # the whiteboard run's boxes fit on 1024x1024 too
    sampled = agent.solve(MAZE, "maze?", samples=3, select_by="vote")
    assert sampled.meta["samples"] == ["Action plan: R,U,U,U"] * 3 and sampled.answer == "Action plan: R,U,U,U"


def _trace(answer: str | None, logprob: float, tokens: int) -> Trace:
    return Trace("q", "p", "m", steps=[Step(1, tokens_out=tokens, logprob=logprob)], answer=answer)


def test_vote_and_likelihood_selection() -> None:
    traces = [_trace("R,U", -10, 10), _trace("r, u.", -30, 10), _trace("D,D", -2, 10), _trace(None, 0, 10)]
    assert normalise_answer(" R,U. ") == normalise_answer("r,u")
    assert select(traces, "vote") == 0  # two votes for R,U; the likelier of the two wins
    assert select(traces, "likelihood") == 2  # best log-likelihood per token among answered
    assert select([_trace("a", -1, 1), _trace("a", -20, 100)], "likelihood") == 1  # -0.2/token beats -1/token


def test_vilasr_protocol_end_to_end() -> None:
    outputs = [
        "<think>Map the goal and the player.</think> Action: Object Mapper\n```json\n"
        '[{"index": 1, "bbox_2d": [64, 0, 128, 64], "label": "goal"},'
        ' {"index": 1, "bbox_2d": [0, 189, 63, 252], "label": "me"}]\n```',
        "<think>Done.</think> Action: Answer\n<answer>Action plan: R,U,U,U</answer>",
    ]
    agent = Agent(ReplayPolicy(outputs), protocol="vilasr")
    trace = agent.solve(MAZE, "Find the path.")
    assert trace.status == "answered" and trace.steps[0].view_ids == [2]  # one image for the whole call


def test_openai_tools_protocol_end_to_end() -> None:
    outputs = [
        {
            "content": "Box the goal.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "box", "arguments": '{"bbox": [64, 0, 128, 64]}'}}
            ],
        },
        {"content": "Action plan: R,U,U,U"},
    ]
    trace = Agent(ReplayPolicy(outputs), protocol="openai-tools").solve(MAZE, "maze?")
    assert trace.status == "answered" and trace.answer == "Action plan: R,U,U,U" and trace.steps[0].view_ids == [2]


def test_vilasr_inputs_are_resized_like_qwen_vl_utils() -> None:
    """ViLaSR's model sees (and draws on) the 28-multiple image resized under 351,232 px."""
    outputs = ["<think>ok</think> Action: Answer\n<answer>A</answer>"]
    trace = Agent(ReplayPolicy(outputs), protocol="vilasr").solve(MAZE, "q")
    assert (trace.views[0]["width"], trace.views[0]["height"]) == (252, 252)
