"""Model backends and model builders.

Nothing here is imported by ``import sketchmind``; each submodule imports torch/transformers itself,
inside the functions that need them (``sketchmind.models.tiny`` builds tiny offline test models).
"""
