"""The package's layers: subpackages that import each other only one way, and no reaching into private names.

Read from the source (ast), so imports inside functions and under ``TYPE_CHECKING`` count too: a lazy import
is still a dependency, and a lazy cycle is a cycle waiting for the import that closes it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sketchmind"
LAYERED = ("bench", "train", "latent", "models")


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, ast.parse(path.read_text(encoding="utf-8"))


def _imports(tree: ast.Module) -> Iterator[tuple[str, list[str], int]]:
    """Every sketchmind import as (module, names imported from it, line); ``import a.b`` gives ([])."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("sketchmind"):
            yield str(node.module), [alias.name for alias in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sketchmind"):
                    yield alias.name, [], node.lineno


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERED else None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_relative_imports_hide_from_these_checks() -> None:
    relative = [
        f"{module}:{node.lineno}"
        for module, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level
    ]
    assert relative == []


def test_the_subpackages_import_each_other_one_way_only() -> None:
    edges: dict[tuple[str, str], str] = {}  # (importer, imported) subpackage -> the first import that does it
    for module, tree in _modules():
        source = _subpackage(module)
        for target, names, line in _imports(tree):
            # ``from sketchmind import train`` reaches the subpackage as well.
            for imported in [target, *(f"{target}.{n}" for n in names if target == "sketchmind")]:
                destination = _subpackage(imported)
                if source and destination and source != destination:
                    edges.setdefault((source, destination), f"{module}:{line} imports {imported}")
    assert _cycles(edges) == []


def _cycles(edges: dict[tuple[str, str], str]) -> list[str]:
    """Every cycle among the subpackages, each as the imports that close it, listed once from its least node."""
    found = []
    for start in sorted(LAYERED):
        stack = [[start]]
        while stack:
            path = stack.pop()
            for a, b in edges:
                if a != path[-1] or b < start:
                    continue
                if b == start:
                    hops = zip(path, [*path[1:], start], strict=True)
                    found.append("; ".join(edges[hop] for hop in hops))
                elif b not in path:
                    stack.append([*path, b])
    return found


def test_no_module_imports_a_private_name_of_another_module() -> None:
    reaching_in = []
    for module, tree in _modules():
        for target, names, line in _imports(tree):
            parts = target.split(".")
            # A private module belongs to its package (``tasks._draw``): only that package's modules import it.
            for depth, part in enumerate(parts):
                if _private(part) and not module.startswith(".".join(parts[:depth]) + "."):
                    reaching_in.append(f"{module}:{line} imports {target}")
            reaching_in += [f"{module}:{line} imports {name} from {target}" for name in names if _private(name)]
    assert reaching_in == []


# Modules split off a larger one, each with one job (issue 17), and the modules they left. A split-off module may
# name its parent's types for annotations (under ``TYPE_CHECKING``), but imports nothing of it to run: otherwise it
# is the same module in two files, and the two can only be read, tested and changed together.
SPLIT_OFF: dict[str, tuple[str, ...]] = {
    "sketchmind.train.synth_filters": ("sketchmind.train.synth",),
    "sketchmind.train.synth_rows": ("sketchmind.train.synth",),
    "sketchmind.train.synth_stats": ("sketchmind.train.synth",),
    "sketchmind.train.synth_storage": ("sketchmind.train.synth",),
    "sketchmind.train.eval_policies": ("sketchmind.train.pipeline",),
    "sketchmind.train.eval_stage": ("sketchmind.train.pipeline",),
    "sketchmind.train.stage_clock": ("sketchmind.train.pipeline",),
    "sketchmind.train.plots": ("sketchmind.train.pipeline",),
    "sketchmind.train.params": ("sketchmind.train.pipeline",),
    "sketchmind.train.resume": ("sketchmind.train.sft", "sketchmind.train.grpo", "sketchmind.train.dpo"),
    "sketchmind.models.tiny_latent": (),  # the latent policy's module does not build test checkpoints
}


def _runtime_imports(tree: ast.Module) -> Iterator[tuple[str, list[str], int]]:
    """``_imports`` without the ones under ``if TYPE_CHECKING:`` (annotations only)."""
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for statement in node.body
        for inner in ast.walk(statement)
    }
    pruned = ast.Module(body=[], type_ignores=[])
    pruned.body = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    pruned.body = [node for node in pruned.body if id(node) not in typing_only]
    yield from _imports(pruned)


def test_split_off_modules_run_without_the_module_they_left() -> None:
    modules = dict(_modules())
    assert "sketchmind.models.latent" in modules and "build_tiny_latent" not in ast.unparse(
        modules["sketchmind.models.latent"]
    )
    leaning = [
        f"{module}:{line} imports {target}"
        for module, parents in SPLIT_OFF.items()
        for target, _names, line in _runtime_imports(modules[module])
        if target in parents
    ]
    assert leaning == []
