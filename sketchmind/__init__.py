"""SketchMind: vision-language models that reason by drawing.

``import sketchmind`` stays light (numpy, OpenCV, Pillow, pydantic): torch and transformers are
imported only where a model is loaded.
"""

from sketchmind.actions import ACTIONS, Action, ActionError, parse_action
from sketchmind.canvas import Canvas, View
from sketchmind.coords import Affine, Convention
from sketchmind.images import ImageInputError, load_image

__version__ = "0.1.0"

__all__ = [
    "ACTIONS",
    "Action",
    "ActionError",
    "Affine",
    "Canvas",
    "Convention",
    "ImageInputError",
    "View",
    "__version__",
    "load_image",
    "parse_action",
]
