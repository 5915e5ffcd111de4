"""Package discovery only (the rest is in pyproject.toml).

pyproject's ``packages.find`` cannot add a package from a folder outside ``sketchmind/``; the shipped
policy lives in ``policies/`` (beside its recipe) and installs as ``sketchmind.policies``, so the package
list is written here: every ``sketchmind*`` package found, plus that one.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["sketchmind*"]), "sketchmind.policies"])
