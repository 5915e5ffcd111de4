"""Export synthesised rows to other trainers' formats.

``export_llamafactory`` writes LLaMA-Factory's ShareGPT multimodal layout (its ``mllm_demo`` format): a
``data.json`` of ``{"messages": [{"role", "content"}], "images": [paths]}`` records in which every image
is an ``<image>`` placeholder inside the text, the PNGs under ``images/``, and the ``dataset_info.json``
entry that registers the file. Point LLaMA-Factory's ``dataset_dir`` (and so its ``media_dir``) at the
output directory and use ``dataset: sketchmind``.

A text part and an image part join with nothing between them, as the Qwen-VL chat templates join a
content list, so the placeholder text renders to the same tokens the TRL rows do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sketchmind.files import write_json_atomic

IMAGE_TOKEN = "<image>"
DATA_FILE = "data.json"
INFO_FILE = "dataset_info.json"
IMAGES_DIR = "images"


def dataset_info(name: str = "sketchmind", file_name: str = DATA_FILE) -> dict[str, Any]:
    """The ``dataset_info.json`` entry that registers ``file_name`` as a ShareGPT multimodal dataset."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }


def sharegpt_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Chat messages with content lists as ShareGPT messages: one string each, images as ``<image>``.

    Raises ``ValueError`` where LLaMA-Factory would silently skip the example (roles that do not alternate
    user/assistant after an optional system message) or miscount images (``<image>`` already in the text).
    """
    out: list[dict[str, str]] = []
    for message in messages:
        pieces = []
        for part in message["content"]:
            if part["type"] == "image":
                pieces.append(IMAGE_TOKEN)
            elif IMAGE_TOKEN in (part.get("text") or ""):
                raise ValueError(f"a {message['role']} message already contains {IMAGE_TOKEN}")
            else:
                pieces.append(part.get("text") or "")
        out.append({"role": str(message["role"]), "content": "".join(pieces)})
    roles = [m["role"] for m in out[1:]] if out and out[0]["role"] == "system" else [m["role"] for m in out]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if roles != expected or len(roles) % 2:
        raise ValueError(f"roles must alternate user/assistant and end with assistant, got {roles}")
    return out


def export_llamafactory(rows: Iterable[Mapping[str, Any]], out_dir: str | Path, *, name: str = "sketchmind") -> Path:
    """Write ``rows`` (synth rows or a loaded ``datasets.Dataset``) in LLaMA-Factory's ShareGPT format.

    Creates ``out_dir/data.json``, ``out_dir/images/<id>_<k>.png`` (k counts a row's images from 0) and
    adds the ``name`` entry to ``out_dir/dataset_info.json`` (other entries there are kept). Returns ``out_dir``.
    """
    root = Path(out_dir)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        row_id = str(row["id"])
        if row_id in seen:
            raise ValueError(f"row id {row_id!r} repeats: image file names would collide")
        seen.add(row_id)
        messages = sharegpt_messages(row["messages"])
        images = list(row["images"])
        placeholders = sum(m["content"].count(IMAGE_TOKEN) for m in messages)
        if placeholders != len(images):
            raise ValueError(f"{row_id}: {placeholders} {IMAGE_TOKEN} placeholders for {len(images)} images")
        paths = []
        for k, image in enumerate(images):
            path = f"{IMAGES_DIR}/{row_id}_{k}.png"
            _as_pil(image).save(root / path)
            paths.append(path)
        records.append({"messages": messages, "images": paths})
    write_json_atomic(root / DATA_FILE, records, indent=1)
    info_path = root / INFO_FILE
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    info.update(dataset_info(name))
    write_json_atomic(info_path, info)
    return root


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    return pil if pil.mode == "RGB" else pil.convert("RGB")


__all__ = ["dataset_info", "export_llamafactory", "sharegpt_messages"]
