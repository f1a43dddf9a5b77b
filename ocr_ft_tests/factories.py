"""Small data the tests make: distinct PNG images and Korean HTML tables."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

HANGUL = "자산부채자본매출원가영업이익현금유동비유동차입금예금대출이자수익"


def make_png(seed: int, width: int = 96, height: int = 64) -> bytes:
    """A PNG whose perceptual hash differs from other seeds' (random blocks on white)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(2, max(3, width // 2)), y0 + rng.randrange(2, max(3, height // 2))
        shade = rng.randrange(0, 200)
        draw.rectangle([x0, y0, x1, y1], fill=(shade, shade, shade))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def table_html(seed: int, rows: int = 3, cols: int = 3, merged: bool = False) -> str:
    rng = random.Random(seed)

    def word():
        return "".join(rng.choice(HANGUL) for _ in range(3)) + f" {rng.randrange(10**6):,}"

    body = []
    for r in range(rows):
        cells = []
        for c in range(cols):
            if merged and r == 0 and c == 0:
                cells.append(f'<td colspan="2">{word()}</td>')
                continue
            if merged and r == 0 and c == 1:
                continue
            cells.append(f"<td>{word()}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(body) + "</table>"


def nested_html(seed: int, depth: int) -> str:
    inner = table_html(seed, 2, 2)
    for level in range(depth - 1):
        inner = f"<table><tr><td>상위{level}</td><td>{inner}</td></tr><tr><td>계</td><td>{seed}</td></tr></table>"
    return inner


def write_pair(folder: Path, stem: str, seed: int, html: str | None = None, layout: str = "flat") -> None:
    img_dir = folder / "images" if layout == "split" else folder
    lab_dir = folder / "labels" if layout == "split" else folder
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    (img_dir / f"{stem}.png").write_bytes(make_png(seed))
    (lab_dir / f"{stem}.html").write_text(html if html is not None else table_html(seed), encoding="utf-8")


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_EXTERNAL = REPO_ROOT.parent / "shared" / "external"


def shared_external(*parts: str) -> Path:
    """A file of the real material in ../shared/external (never copied into the package).

    CI lays shared/ beside the clone; a missing file fails the test that needs it, naming the path,
    rather than skipping it, so real-input tests cannot silently stop running."""
    path = SHARED_EXTERNAL.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"real test material missing: {path} (shared/ must sit beside the checkout)")
    return path


def zip_bytes(members: dict[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A ZIP archive in memory: member name -> bytes (str is written as UTF-8), in the given order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data.encode("utf-8") if isinstance(data, str) else data)
    return buf.getvalue()
