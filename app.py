"""The SketchMind puzzle demo: ``python app.py`` (or ``sketchmind demo``), then open http://127.0.0.1:7860.

``python app.py`` takes exactly the flags of ``sketchmind demo`` (``--host``, ``--port``, ``--share``,
``--model``; see ``python app.py --help``): it runs that command, so the two never differ.
"""

import sys

from sketchmind.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
else:  # imported (``gradio app.py`` hot-reloads the page it finds here as `demo`)
    from sketchmind.demo import build_app

    demo = build_app()
