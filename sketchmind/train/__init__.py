"""Training: SFT data synthesised from expert drawing trajectories (``synth``) and its exporters (``export``).

Submodules import ``datasets`` and friends lazily, so ``import sketchmind.train`` stays light.
"""
