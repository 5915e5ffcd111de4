"""Training recipes and the shipped default policy, installed as the package ``sketchmind.policies``."""
