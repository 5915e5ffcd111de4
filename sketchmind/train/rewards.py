"""GRPO reward functions in TRL's signature: ``reward(prompts, completions, **kwargs) -> list[float]``.

TRL 1.16 calls each function once per batch with one entry per rollout. With conversational prompts a
completion is the list of messages the rollout added: ``assistant`` turns (``content`` plus parsed
``tool_calls``) interleaved with the ``tool`` messages the environment answered. ``kwargs`` hold every
dataset column (here ``family`` and ``truth`` matter), ``completion_ids``, ``trainer_state``,
``log_extra``/``log_metric`` and, with an ``environment_factory``, ``environments`` (one per rollout).

- ``accuracy_reward``: 1 if the family's ``verify`` accepts the answer of the final assistant turn, else 0.
- ``format_reward``: 1 if every turn is well formed (see ``format_ok``), else 0. With ``gated=True``
  (ViLaSR's rule) it also needs the answer to be right, so a wrong answer earns nothing at all.

Both read the rollout in the protocol the policy speaks (``protocol``, ``sketchmind`` by default): in
``sketchmind`` the answer is the last ``<answer>`` of the final turn; in a protocol without tools (``search``)
it is what the protocol's ``parse`` calls the answer (the ``Action plan:`` line). ``grpo_protocol`` says
which protocols GRPO can train.

``reward_functions(gated, protocol)`` gives the pair to pass as ``reward_funcs``; TRL logs them as
``rewards/accuracy_reward/mean`` and ``rewards/format_reward/mean``, and their sum as ``reward``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sketchmind.protocols import Protocol, get_protocol
from sketchmind.tasks import Puzzle, TaskFamily, get_family
from sketchmind.train.environment import DrawingEnvironment, is_error

Message = dict[str, Any]
RewardFunction = Callable[..., list[float]]

_THINK = re.compile(r"^\s*<think>(.*?)</think>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.S)
_FINAL_ANSWER = re.compile(r"<answer>(.*?)</answer>\s*\Z", re.S)

DRAWING_PROTOCOL = "sketchmind"
"""The one protocol whose rollouts draw in GRPO: ``DrawingEnvironment`` answers tool calls in its words."""


@functools.cache
def grpo_protocol(name: str) -> Protocol:
    """The protocol ``name`` if GRPO can train a policy speaking it, else ``ValueError``.

    ``sketchmind`` draws through ``DrawingEnvironment``; a protocol without tools (``protocol.draws`` False,
    as ``search``) is one turn that ends with its answer. Another drawing protocol (``vilasr``,
    ``openai-tools``) would be answered in ``sketchmind``'s words, which is not how that policy was trained.
    """
    protocol = get_protocol(name)
    if protocol.draws and name != DRAWING_PROTOCOL:
        raise ValueError(
            f"GRPO cannot train a policy speaking {name!r}: its rollouts draw only in the {DRAWING_PROTOCOL!r} "
            "protocol (DrawingEnvironment answers in its words), or speak a protocol without tools ('search')"
        )
    return protocol


def as_messages(completion: str | Sequence[Message]) -> list[Message]:
    """A completion as messages (a plain-text completion is one assistant turn)."""
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return list(completion)


def message_text(message: Mapping[str, Any]) -> str:
    """The text a message carries: string content or its text parts, with parsed reasoning put back in
    ``<think>`` (for response templates that split it out)."""
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, Sequence):
        text = "".join(str(p.get("text") or "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    else:
        text = ""
    reasoning = message.get("reasoning_content")
    return f"<think>{reasoning}</think>{text}" if reasoning else text


def final_answer(completion: str | Sequence[Message], protocol: str = DRAWING_PROTOCOL) -> str | None:
    """The answer of the final assistant turn, or None.

    In ``sketchmind``: its last ``<answer>`` (a missing closing tag is forgiven). In another protocol: the
    answer its ``parse`` reads (``search``: the last ``Action plan:`` line).
    """
    turns = [m for m in as_messages(completion) if m.get("role") == "assistant"]
    if not turns:
        return None
    text = message_text(turns[-1])
    if protocol == DRAWING_PROTOCOL:
        found = _ANSWER.findall(text)
        return found[-1].strip() if found else None
    return grpo_protocol(protocol).parse(text).answer


@functools.cache
def _family(name: str) -> TaskFamily:
    return get_family(name)


def is_correct(family: str, truth: str | Mapping[str, Any], answer: str | None) -> bool:
    """Whether ``answer`` solves the puzzle whose ground truth is ``truth`` (a dict or its JSON)."""
    record = json.loads(truth) if isinstance(truth, str) else dict(truth)
    puzzle = Puzzle(family=family, level=0, index=0, question="", answer="", image=None, truth=record)
    return _family(family).verify(puzzle, answer)


def format_ok(
    completion: str | Sequence[Message],
    environment: DrawingEnvironment | None = None,
    protocol: str = DRAWING_PROTOCOL,
) -> bool:
    """Whether a rollout is well formed.

    In ``sketchmind``: every assistant turn opens with a non-empty ``<think>...</think>``; every turn but
    the last makes parsed tool calls and no answer; the last makes no calls and ends with exactly one
    ``<answer>...</answer>``; no ``<tool_call>`` text is left unparsed (malformed JSON); and no tool call
    failed (an error tool message, or an error the environment recorded).

    In a protocol without tools (``search``): every assistant turn (a rollout has one) parses with an
    answer and no errors, and nothing called a tool.
    """
    messages = as_messages(completion)
    turns = [m for m in messages if m.get("role") == "assistant"]
    if not turns:
        return False
    if protocol != DRAWING_PROTOCOL:
        spoken = grpo_protocol(protocol)
        if any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
            return False
        parsed = [spoken.parse(message_text(turn)) for turn in turns]
        return all(turn.answer is not None and not turn.errors for turn in parsed)
    for i, turn in enumerate(turns):
        text = message_text(turn)
        think = _THINK.match(text)
        if not think or not think.group(1).strip() or text.count("<think>") != 1 or "<tool_call>" in text:
            return False
        last = i == len(turns) - 1
        if last and (turn.get("tool_calls") or text.count("<answer>") != 1 or not _FINAL_ANSWER.search(text)):
            return False
        if not last and (not turn.get("tool_calls") or "<answer>" in text):
            return False
    if any(is_error(m.get("content")) for m in messages if m.get("role") == "tool"):
        return False
    return environment is None or not environment.errors


def _column(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    values = kwargs.get(name)
    if values is None or len(values) != n:
        raise ValueError(f"the reward needs the dataset column {name!r} (one value per completion)")
    return list(values)


def accuracy_reward(
    prompts: Sequence[Any], completions: Sequence[Any], *, protocol: str = DRAWING_PROTOCOL, **kwargs: Any
) -> list[float]:
    """1.0 where the final answer (read in ``protocol``) verifies against the row's ``family`` and ``truth``
    columns, else 0.0."""
    n = len(completions)
    families, truths = _column(kwargs, "family", n), _column(kwargs, "truth", n)
    return [
        float(is_correct(family, truth, final_answer(completion, protocol)))
        for completion, family, truth in zip(completions, families, truths, strict=True)
    ]


def format_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    gated: bool = False,
    protocol: str = DRAWING_PROTOCOL,
    **kwargs: Any,
) -> list[float]:
    """1.0 where ``format_ok`` holds in ``protocol`` (and, if ``gated``, the answer is also right), else 0.0."""
    environments = kwargs.get("environments") or [None] * len(completions)
    scores = [float(format_ok(c, e, protocol)) for c, e in zip(completions, environments, strict=True)]
    if gated:
        correct = accuracy_reward(prompts, completions, protocol=protocol, **kwargs)
        scores = [s * c for s, c in zip(scores, correct, strict=True)]
    return scores


def reward_functions(gated: bool = True, protocol: str = DRAWING_PROTOCOL) -> list[RewardFunction]:
    """``[accuracy_reward, format_reward]`` for ``GRPOTrainer(reward_funcs=...)``, the format gated or not,
    both reading rollouts in ``protocol``.

    The settings are bound with ``functools.partial``: picklable, and TRL names each after the wrapped function.
    The protocol is bound here rather than carried in a dataset column because a run trains one policy,
    which speaks one protocol: the prompts (``grpo_dataset``), the environment (or none) and the rewards all
    follow ``run_grpo``'s one ``protocol`` argument. (A ``protocol`` column would also reach the rewards, as
    TRL passes every column as a keyword, and override the bound value; ``grpo_dataset`` has none.)
    """
    grpo_protocol(protocol)  # refuse a protocol GRPO cannot train before any rollout
    return [
        functools.partial(accuracy_reward, protocol=protocol),
        functools.partial(format_reward, gated=gated, protocol=protocol),
    ]
