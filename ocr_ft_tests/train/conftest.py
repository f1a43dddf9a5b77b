"""Fixtures for the training tests: one tiny GLM-OCR model per session and a 16-sample table dataset."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

WORDS = ["매출액", "영업이익", "당기순이익", "자산총계", "부채총계", "자본총계", "구분", "당기", "전기", "합계", "현금", "이자수익"]


def table_html(rng: random.Random, rows: int, cols: int, merged: bool) -> str:
    out = ["<table>"]
    for r in range(rows):
        cells = []
        for c in range(cols):
            text = rng.choice(WORDS) if c == 0 else f"{rng.randint(1, 99999):,}"
            if merged and r == 0 and c == 0:
                cells.append(f'<td rowspan="2">{text}</td>')
            elif merged and r == 1 and c == 0:
                continue
            else:
                cells.append(f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def table_image(rng: random.Random, rows: int, cols: int, width: int, height: int) -> Image.Image:
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    for r in range(rows + 1):
        y = r * (height - 1) // rows
        d.line([(0, y), (width, y)], fill="black")
    for c in range(cols + 1):
        x = c * (width - 1) // cols
        d.line([(x, 0), (x, height)], fill="black")
    for r in range(rows):
        for c in range(cols):
            d.text((c * width // cols + 3, r * height // rows + 2), str(rng.randint(0, 999)), fill="black")
    return img


def make_records(data_dir: Path, n: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    (data_dir / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        rows, cols = rng.randint(2, 4), rng.randint(2, 3)
        w, h = rng.choice([(224, 84), (196, 112), (280, 84), (168, 140)])
        rel = f"images/{prefix}_{i:03d}.png"
        table_image(rng, rows, cols, w, h).save(data_dir / rel)
        records.append({
            "image_path": rel, "ground_truth_html": table_html(rng, rows, cols, merged=i % 3 == 0),
            "nesting_level": 1, "source": "synthetic", "category": "merged" if i % 3 == 0 else "plain",
            "metadata": {"original_filename": f"{prefix}_{i:03d}.png"}, "content_hash": f"{prefix}{seed}-{i}",
            "image_sha256": "", "image_width": w, "image_height": h,
        })
    return records


def oversized_record(data_dir: Path) -> dict:
    """A valid sample whose label alone is far longer than the tests' max_seq_len (512)."""
    rng = random.Random(3)
    rec = make_records(data_dir, 1, seed=3, prefix="huge")[0]
    rec["ground_truth_html"] = table_html(rng, rows=60, cols=3, merged=False)
    rec["metadata"]["original_filename"] = "huge_table.png"
    return rec


@pytest.fixture(scope="session")
def table_data(tmp_path_factory) -> dict:
    """16 train + 4 val records with images under one data dir, plus one over-budget record."""
    data_dir = tmp_path_factory.mktemp("tables")
    train = make_records(data_dir, 16, seed=1, prefix="train")
    val = make_records(data_dir, 4, seed=2, prefix="val")
    return {"data_dir": data_dir, "train": train, "val": val, "oversized": oversized_record(data_dir)}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, table_data) -> Path:
    from ocr_ft.train.tiny import build_tiny_model

    texts = [r["ground_truth_html"] for r in table_data["train"] + table_data["val"] + [table_data["oversized"]]]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0)


@pytest.fixture(scope="session")
def tiny_config(tiny_model_dir):
    """Small, fast settings on the tiny model: 16 samples -> 4 steps per epoch, 2 epochs."""
    from ocr_ft.train.config import TINY_CONFIG_PATH, load_config

    return load_config(
        TINY_CONFIG_PATH, base_model=str(tiny_model_dir), max_seq_len=512, max_pixels=28 * 28 * 48,
        learning_rate=5e-3, warmup_ratio=0.0, num_epochs=2, per_device_batch_size=2,
        gradient_accumulation_steps=2, save_steps=2, logging_steps=1, eval_steps=None, max_eval_samples=4,
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_config, table_data):
    """One complete training run shared by the tests that only inspect its outputs."""
    from ocr_ft.train.trainer import train

    out = tmp_path_factory.mktemp("run") / "out"
    logs: list[dict] = []
    records = table_data["train"] + [table_data["oversized"]]
    result = train(tiny_config, records, table_data["val"], table_data["data_dir"], out, on_log=logs.append)
    return result, logs

