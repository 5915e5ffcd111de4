"""The processes of one launch (``torchrun``, ``accelerate launch``): which one writes, and how the others wait.

A recipe runs the same on 1 process or N. Trainer stages run on every process (data parallel: the Trainer
sees the launch's world size); everything else, and every file a stage's bookkeeping writes, is the main
process's alone, while the others wait in ``wait_for_everyone`` and then read what it wrote. On one
process each helper is a no-op.

The state is accelerate's ``PartialState``, the one the HF Trainer itself uses, created the way
``TrainingArguments`` creates it: with ``cpu=True`` where there is no accelerator. Without that flag
accelerate, finding no GPU, still initialises the process group but records the run as not distributed,
so every process trained alone and wrote the stage's files (transformers' "process group is
initialized, but parallel_mode != ParallelMode.DISTRIBUTED").
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accelerate import PartialState  # type: ignore[import-untyped]

# The main process alone synthesises data, samples rejection rollouts and benches the eval: the others wait
# in a barrier that must outlast those (hours on a 7B model), not the 30 minutes of torch's default timeout.
WAIT_TIMEOUT = timedelta(hours=24)


def no_accelerator() -> bool:
    """Whether this machine has no GPU (or other torch accelerator): training then runs on CPU, over gloo."""
    import torch

    return not torch.accelerator.is_available()


def state() -> PartialState:
    """This process's place in the launch (accelerate's shared ``PartialState``; the process group starts here
    when a launcher started several processes and nothing has started it yet)."""
    from accelerate import PartialState

    return PartialState(cpu=no_accelerator(), timeout=WAIT_TIMEOUT)


def is_main() -> bool:
    """Whether this is the process that writes (rank 0; the only one without a launcher)."""
    return bool(state().is_main_process)


def world_size() -> int:
    """How many processes the launch started (1 without a launcher)."""
    return int(state().num_processes)


def wait_for_everyone() -> None:
    """Block until every process of the launch gets here (returns at once on one process)."""
    state().wait_for_everyone()
