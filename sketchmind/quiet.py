"""Keep library progress bars out of the command line's output.

transformers draws a "Loading weights" bar every time a checkpoint loads (and "Writing model shards"
when one is saved). In ``sketchmind solve``, ``serve`` and ``demo`` that bar is noise between the lines a
user reads, and in a server log it repeats for every model loaded. The commands call
``quiet_progress_bars`` once at start; importing sketchmind changes nothing, so a library user keeps the
bars they chose.
"""

from __future__ import annotations

import sys


def quiet_progress_bars() -> None:
    """Turn off the progress bars of huggingface_hub and transformers for this process.

    transformers reads huggingface_hub's switch when it is first imported, so before that import flipping
    the hub's switch is enough (and keeps this call free of the transformers import). If transformers is
    already loaded, its own switch is flipped too.
    """
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()  # type: ignore[no-untyped-call]
