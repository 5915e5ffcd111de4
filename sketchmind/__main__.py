"""``python -m sketchmind`` is the ``sketchmind`` command."""

import sys

from sketchmind.cli import main

sys.exit(main())
