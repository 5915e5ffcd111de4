"""The Gradio puzzle demo: generate or upload an image, ask, and watch (or steer) a model reason by drawing.

``build_app()`` returns the page as a ``gr.Blocks``; ``launch()`` serves it on this machine. Needs the
``demo`` extra (``pip install 'sketchmind[demo]'``).
"""

from __future__ import annotations

import sys
from typing import TextIO

from sketchmind.demo.app import build_app
from sketchmind.demo.limits import MAX_FILE_SIZE

DEFAULT_CONCURRENCY = 2  # events running at once (model runs are further limited to one at a time)
MAX_QUEUE = 32  # visitors waiting beyond this are turned away with a "queue is full" message


def warn_if_shared(share: bool, stream: TextIO | None = None) -> bool:
    """Print one warning line on stderr when a public link is asked for (the demo has no authentication)."""
    if share:
        print(
            "sketchmind: warning: --share publishes the demo at a public gradio.live link that anyone can use "
            "to run models on this machine; it has no authentication",
            file=stream if stream is not None else sys.stderr,
            flush=True,
        )
    return share


def launch(host: str = "127.0.0.1", port: int = 7860, share: bool = False, *, default_model: str | None = None) -> None:
    """Serve the demo at ``http://host:port`` (loopback only by default) until interrupted.

    ``share=True`` also opens a public gradio.live link. ``default_model`` is preselected (see
    ``build_app``). Uploads over ``MAX_FILE_SIZE`` are refused by gradio; images over the pixel limit,
    corrupt files and models that fail to load are reported as one line on the page.
    """
    from sketchmind.server import warn_if_exposed

    warn_if_exposed(host, "the demo")
    warn_if_shared(share)
    app = build_app(default_model=default_model)
    app.queue(default_concurrency_limit=DEFAULT_CONCURRENCY, max_size=MAX_QUEUE)
    app.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE, show_error=False)


__all__ = ["DEFAULT_CONCURRENCY", "MAX_FILE_SIZE", "MAX_QUEUE", "build_app", "launch", "warn_if_shared"]
