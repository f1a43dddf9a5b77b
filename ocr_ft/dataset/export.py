"""LLaMA-Factory export: ShareGPT JSON per split plus ``dataset_info.json``, self-contained.

Images are hard-linked (copied when the file system refuses) into ``<out>/images/`` under their content
hash, and referenced by paths relative to ``<out>``, so the folder can be moved to a GPU box as one piece and
used as LLaMA-Factory's ``dataset_dir``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..storage import atomic_dir, atomic_write_json
from .records import Record

PROMPT = "Table Recognition:"
# What the export's README says about the prompt format (issue 11: one format end to end).
FORMAT_README = """# ocr-ft LLaMA-Factory export

Train with `template: glm_ocr` (LLaMA-Factory >= 0.9.5). The rendered text of one sample is

    [gMASK]<sop><|user|>\\n<|begin_of_image|><|image|>x N<|end_of_image|>Table Recognition:<|assistant|>\\n{html}<|endoftext|>

which is exactly what ocr-ft trains (ocr_ft/train/inputs.py) and what a server sends by default (GLM-OCR's
chat template, add_generation_prompt=True, no enable_thinking): the answer follows `<|assistant|>\\n`
directly, with no `<think></think>` block. The one difference: LLaMA-Factory's glm_ocr template puts the
`\\n` after `<|assistant|>` into the assistant part, so it is supervised (loss on `\\n` + html +
`<|endoftext|>`); ocr-ft supervises only html + `<|endoftext|>`. The token boundaries at `\\n<table>` may
also differ (LLaMA-Factory encodes `\\n{html}` as one string). Set `image_max_pixels`/`image_min_pixels`
as in the generated training YAML so the resolution matches.
"""
DATASET_NAMES = {"train": "ocr_ft_train", "val": "ocr_ft_val", "test": "ocr_ft_test"}


def sharegpt_entry(record: Record, image_rel: str, prompt: str = PROMPT) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"<image>{prompt}"},
            {"role": "assistant", "content": record.ground_truth_html.strip()},  # as ocr-ft trains it
        ],
        "images": [image_rel],
    }


def _link(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_llamafactory(splits: dict[str, list[Record]], data_dir: str | Path, out_dir: str | Path,
                        prompt: str = PROMPT, readme: str = FORMAT_README) -> dict:
    """Write the export atomically (the whole folder appears at once); return counts per split. ``prompt`` and
    ``readme`` default to GLM-OCR's; another base-model family passes its own."""
    data_dir = Path(data_dir)
    counts = {}
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        info = {}
        for split, records in splits.items():
            rows = []
            for r in records:
                src = Path(r.image_path) if os.path.isabs(r.image_path) else data_dir / r.image_path
                name = f"{r.image_sha256}{src.suffix or '.png'}"
                _link(src, tmp / "images" / name)
                rows.append(sharegpt_entry(r, f"images/{name}", prompt))
            file_name = f"{split}_sharegpt.json"
            atomic_write_json(tmp / file_name, rows, indent=None)
            counts[split] = len(rows)
            info[DATASET_NAMES.get(split, f"ocr_ft_{split}")] = {
                "file_name": file_name,
                "formatting": "sharegpt",
                "columns": {"messages": "messages", "images": "images"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
            }
        atomic_write_json(tmp / "dataset_info.json", info)
        (tmp / "README.md").write_text(readme, encoding="utf-8")
    return counts
