"""Storage of a synthesized dataset: parquet shards with embedded PNG images under ``data/``, and ``stats.json``.

The row schema is ``COLUMNS`` (the keys of ``synth_rows.to_row``) typed by ``features()``. Stored image parts
carry ``"text": None`` (Arrow structs share one schema); TRL drops such ``None`` fields before templating.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sketchmind.files import write_json_atomic
from sketchmind.train.synth_stats import SynthStats

if TYPE_CHECKING:
    from datasets import Dataset, Features  # type: ignore[import-untyped]

DATA_DIR = "data"
STATS_FILE = "stats.json"
ROWS_PER_SHARD = 500
COLUMNS: tuple[str, ...] = (  # a row's keys (synth_rows.to_row), in the order they are stored
    "id",
    "family",
    "level",
    "protocol",
    "question",
    "reference",
    "answer",
    "correct",
    "reflective",
    "turns",
    "rounds",
    "n_images",
    "messages",
    "images",
)


def features() -> Features:
    """The dataset schema: the scalar columns, the chat messages and the embedded images."""
    from datasets import Features, List, Value
    from datasets import Image as ImageFeature

    part = {"type": Value("string"), "text": Value("string")}
    return Features(
        {
            "id": Value("string"),
            "family": Value("string"),
            "level": Value("int32"),
            "protocol": Value("string"),
            "question": Value("string"),
            "reference": Value("string"),
            "answer": Value("string"),
            "correct": Value("bool"),
            "reflective": Value("bool"),
            "turns": Value("int32"),
            "rounds": Value("int32"),
            "n_images": Value("int32"),
            "messages": List({"role": Value("string"), "content": List(part)}),
            "images": List(ImageFeature()),
        }
    )


def save_dataset(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    stats: SynthStats | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
) -> Path:
    """Write ``rows`` as parquet shards with embedded PNG images under ``out_dir/data``, and ``stats.json``.

    Shards of an earlier save in the same directory are replaced. Without ``stats``, the rows' own counts
    are written. Returns ``out_dir``.
    """
    from datasets import Dataset
    from datasets.utils.tqdm import (  # type: ignore[import-untyped]
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    root = Path(out_dir)
    data = root / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("train-*.parquet"):
        old.unlink()  # a smaller re-save must not leave stale shards for load_dataset to pick up
    columns = {k: [row[k] for row in rows] for k in COLUMNS}  # by column, so zero rows still has a schema
    dataset = Dataset.from_dict(columns, features=features())
    shards = max(1, math.ceil(len(rows) / rows_per_shard))
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # one bar per shard is noise in logs and tests
    try:
        for index in range(shards):
            shard = dataset.shard(shards, index, contiguous=True)
            # A temporary name, then a rename: a killed or failed save never leaves a half shard to load.
            final = data / f"train-{index:05d}-of-{shards:05d}.parquet"
            partial = data / f".{final.name}.tmp"
            try:
                shard.to_parquet(str(partial))
                os.replace(partial, final)
            finally:
                partial.unlink(missing_ok=True)
    finally:
        if not quiet:
            enable_progress_bars()
    summary = stats if stats is not None else SynthStats.from_rows(rows)
    write_json_atomic(root / STATS_FILE, summary.to_dict())
    return root


def is_saved(out_dir: str | Path) -> bool:
    """Whether ``save_dataset`` wrote into ``out_dir`` (with rows or without): ``load_dataset`` can read it."""
    return any((Path(out_dir) / DATA_DIR).glob("train-*.parquet"))


def load_dataset(out_dir: str | Path) -> Dataset:
    """The rows ``save_dataset`` wrote, as an in-memory ``datasets.Dataset`` (images decode to PIL)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]
    from datasets import Dataset
    from datasets.table import InMemoryTable  # type: ignore[import-untyped]

    files = sorted((Path(out_dir) / DATA_DIR).glob("train-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{out_dir}: no {DATA_DIR}/train-*.parquet shards (not a saved dataset)")
    table = pa.concat_tables([pq.read_table(path) for path in files])
    return Dataset(InMemoryTable(table))  # the features come from the schema metadata the shards carry


def load_stats(out_dir: str | Path) -> SynthStats:
    """The ``stats.json`` that ``save_dataset`` wrote."""
    return SynthStats.from_dict(json.loads((Path(out_dir) / STATS_FILE).read_text(encoding="utf-8")))
