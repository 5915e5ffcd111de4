"""Copy a trained recipe's policies into a folder that ships with the package (``make policy``'s last step).

``python -m sketchmind.train.ship RECIPE DEST`` copies the draw policy (the last draw trainer's final
checkpoint: the policy the agent's draw and text modes run, whatever protocol it speaks) to ``DEST/draw`` and
the latent policy (``latent2/final``) to ``DEST/latent``: only the files a policy loads from (weights, configs,
tokenizer, chat template, the latent spec), never pickled training state. ``DEST/manifest.json`` records
the recipe and run each came from, the parameter count and a SHA-256 per file, so the shipped weights can be
checked against the run that produced the published results. A variant the recipe does not train (the
default recipe has no latent stages) stays as an earlier recipe shipped it, with its manifest entry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sketchmind.files import write_json_atomic
from sketchmind.train.params import parameter_count
from sketchmind.train.pipeline import Pipeline
from sketchmind.train.recipe import RecipeError, load_recipe

SHIPPED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "chat_template.jinja",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "latent.json",
    "latent_projection.safetensors",
)
MAX_MEGABYTES = 60.0  # the whole shipped folder: it lives in git and in every wheel


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ship(pipeline: Pipeline, dest: str | Path, *, max_megabytes: float = MAX_MEGABYTES) -> dict[str, Any]:
    """Copy the pipeline's draw (and latent, if trained) policies into ``dest``; return the manifest.

    Variants already in ``dest`` that the recipe does not train are kept, and count toward the size limit.
    Raises ``ValueError`` when a policy has not been trained yet or the whole folder would exceed
    ``max_megabytes`` (``dest`` is then left as it was).
    """
    sources = {"draw": Path(pipeline.model_after(pipeline.enabled()[-1]))}
    latent = pipeline.latent_model()
    if latent is not None:
        sources["latent"] = Path(latent)
    for variant, source in sources.items():
        if not (source / "model.safetensors").is_file():
            raise ValueError(f"the {variant} policy is not trained yet: {source} has no model.safetensors")
    files = {v: [s / name for name in SHIPPED_FILES if (s / name).is_file()] for v, s in sources.items()}
    out = Path(dest)
    kept = {v: entry for v, entry in _shipped(out).items() if v not in sources}
    megabytes = sum(f.stat().st_size for listed in files.values() for f in listed) / 1e6
    megabytes += sum((out / v / name).stat().st_size for v, entry in kept.items() for name in entry["sha256"]) / 1e6
    if megabytes > max_megabytes:
        raise ValueError(f"the policies take {megabytes:.1f} MB, over the {max_megabytes:g} MB allowed")
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"recipe": pipeline.recipe.name, "megabytes": round(megabytes, 1), "policies": kept}
    for variant, source in sources.items():
        target = out / variant
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        for file in files[variant]:
            shutil.copy2(file, target / file.name)
        manifest["policies"][variant] = {
            "recipe": pipeline.recipe.name,
            "source": str(source),
            "parameters": parameter_count(target),
            "sha256": {f.name: _sha256(target / f.name) for f in files[variant]},
        }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _shipped(dest: Path) -> dict[str, Any]:
    """The variants an earlier ``ship`` left in ``dest`` (its manifest's entries), each with its recipe."""
    path = dest / "manifest.json"
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    policies: dict[str, Any] = manifest.get("policies", {})
    return {v: {"recipe": manifest.get("recipe"), **entry} for v, entry in policies.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Copy a trained recipe's policies into a shipped folder.")
    parser.add_argument("recipe", help="the recipe YAML whose run to ship")
    parser.add_argument("dest", help="the folder to fill (draw/, latent/, manifest.json)")
    options = parser.parse_args(argv)
    try:
        manifest = ship(Pipeline(load_recipe(options.recipe)), options.dest)
    except (RecipeError, ValueError) as error:
        print(f"ship: {error}", file=sys.stderr)
        return 2
    shipped = ", ".join(f"{v} ({p['parameters'] / 1e6:.1f} M parameters)" for v, p in manifest["policies"].items())
    print(f"shipped {shipped} to {options.dest}: {manifest['megabytes']} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
