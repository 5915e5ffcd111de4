"""The ``search`` protocol: how the agent runs a policy that writes its search in words (the search stage's)."""

from __future__ import annotations

from sketchmind.agent import Agent, Budgets
from sketchmind.models.base import Conversation, Generation, Policy, Sampling
from sketchmind.protocols import get_protocol
from sketchmind.protocols.search import NO_PLAN, SearchProtocol
from sketchmind.tasks import get_family
from sketchmind.tasks.base import make_dataset
from sketchmind.tasks.frozenlake import Lake
from sketchmind.train.search_rows import search_question, search_text

FAMILY = get_family("frozenlake-classic")


class WrittenSearch(Policy):
    """A policy trained to speak ``search``: its turns are ``says`` in order (the expert's search after that)."""

    protocol_name = "search"

    def __init__(self, lake: Lake, says: list[str] | None = None) -> None:
        self.lake = lake
        self.says = list(says or [])
        self.seen: list[Conversation] = []

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self.seen.append(conversation)
        return Generation(self.says.pop(0) if self.says else search_text(self.lake))


def test_the_plan_line_is_the_answer_and_the_search_is_the_thought() -> None:
    protocol = get_protocol("search")
    assert isinstance(protocol, SearchProtocol) and not protocol.draws
    turn = protocol.parse("Find P 1,1, G 2,2.\n1,1 D: 2,1 F\n2,1 R: 2,2 G\nAction plan: D,R")
    assert (turn.answer, turn.errors) == ("Action plan: D,R", [])
    assert turn.thought == "Find P 1,1, G 2,2.\n1,1 D: 2,1 F\n2,1 R: 2,2 G"
    # the last plan counts (a model may revise); a dict output reads its content
    assert protocol.parse({"content": "Action plan: L\naction plan: R,R"}).answer == "action plan: R,R"
    assert protocol.format_turn("Find P 1,1, G 1,2.\n1,1 R: 1,2 G", answer="Action plan: R") == (
        "Find P 1,1, G 1,2.\n1,1 R: 1,2 G\nAction plan: R"
    )


def test_a_turn_without_a_plan_gets_one_line_back_and_nothing_is_lost() -> None:
    protocol = SearchProtocol()
    turn = protocol.parse("Find P 1,1, G 2,2.\n1,1 D: 2,1")
    assert turn.answer is None and turn.errors == [NO_PLAN] and turn.thought == "Find P 1,1, G 2,2.\n1,1 D: 2,1"
    [message] = protocol.observation([], turn.errors)
    assert message == {"role": "user", "content": [{"type": "text", "text": f"error: {NO_PLAN}"}]}


def test_the_agent_speaks_the_policys_own_protocol_with_no_system_prompt() -> None:
    puzzle = make_dataset(FAMILY, [5], 1, seed=3)[0]
    lake = Lake.from_truth(puzzle.truth)
    policy = WrittenSearch(lake, says=["Find P 1,1, G"])  # a first turn cut short: the agent says so, goes on
    agent = Agent(policy, budgets=Budgets(max_turns=3))
    assert agent.protocol.name == "search"
    trace = agent.solve(puzzle.image, search_question(puzzle), puzzle=puzzle)
    assert trace.status == "answered" and FAMILY.verify(puzzle, trace.answer)
    first, second = policy.seen
    # trained with no system prompt: the run starts with the image and the question, as the training rows did
    assert [m["role"] for m in first.messages] == ["user"]
    assert second.messages[-1]["content"] == [{"type": "text", "text": f"error: {NO_PLAN}"}]
    assert trace.steps[0].errors == [NO_PLAN] and trace.steps[1].thought.startswith("Find P")
    # text mode adds no prompt of its own either: the protocol has no tools to forbid
    text_policy = WrittenSearch(lake)
    assert Agent(text_policy, mode="text").solve(puzzle.image, "Plan a path.").status == "answered"
    assert [m["role"] for m in text_policy.seen[0].messages] == ["user"]
    # a protocol named by the caller still wins over the policy's own
    assert Agent(policy, "sketchmind").protocol.name == "sketchmind"


def test_rejection_sampling_samples_a_search_policy_in_its_own_protocol() -> None:
    from sketchmind.train.rejection import rejection_sample

    class HalfRight(WrittenSearch):
        """The expert's search on even samples; a wrong plan (the expert's first move only) on odd ones."""

        def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
            lake = Lake.from_truth(conversation.puzzle.truth)  # type: ignore[union-attr]
            text = search_text(lake)
            if conversation.id.endswith("#1"):
                text = text.rsplit("\n", 1)[0] + "\nAction plan: " + text.rsplit(": ", 1)[1].split(",")[0]
            return Generation(text)

    result = rejection_sample(
        HalfRight(Lake.from_truth(make_dataset(FAMILY, [4], 1, seed=0)[0].truth)),
        ["frozenlake-classic"],
        2,
        k=2,
        levels=[4],
        require_reflective=False,
    )
    assert (len(result.kept), len(result.rejected)) == (2, 2)
    for row in result.kept + result.rejected:
        user, assistant = row["messages"]  # no system prompt, no tool turns: the search and its plan
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["content"][0]["text"].startswith("Find P")
