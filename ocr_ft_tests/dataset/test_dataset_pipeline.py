import json
from dataclasses import replace
from pathlib import Path

import pytest

from factories import make_png, nested_html, table_html, write_pair
from ocr_ft.dataset.build import build_dataset, build_splits, validate_partition, write_manifest, read_validated
from ocr_ft.dataset.dedup import deduplicate
from ocr_ft.dataset.export import export_llamafactory
from ocr_ft.dataset.records import RawPair
from ocr_ft.dataset.splits import SplitConfig, leakage, make_splits
from ocr_ft.dataset.validate import validate_all, validate_pair
from ocr_ft.sources.existing import load_existing
from ocr_ft.storage import BlobStore, read_jsonl


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


def store_for(data_dir: Path) -> BlobStore:
    return BlobStore(data_dir / "blobs", base=data_dir)


def load_and_validate(folder, data_dir, source="existing"):
    result = load_existing(folder, store_for(data_dir), source=source)
    manifest = data_dir / "sources" / source / "all.jsonl"
    write_manifest(result, manifest)
    out = data_dir / "validated" / source / "all.jsonl"
    stats = validate_partition(manifest, out, data_dir, workers=1)
    return out, stats


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_existing_both_layouts(tmp_path, data_dir, layout):
    for i in range(3):
        write_pair(tmp_path / "src", f"t{i}", i, layout=layout)
    result = load_existing(tmp_path / "src", store_for(data_dir))
    assert sorted(p.original_filename for p in result.pairs) == ["t0.png", "t1.png", "t2.png"]
    assert not result.rejects
    for p in result.pairs:
        assert (data_dir / p.image_path).is_file() and p.image_path.startswith("blobs/")


def test_bad_inputs_are_quarantined_with_reasons(tmp_path, data_dir):
    src = tmp_path / "src"
    write_pair(src, "good", 1)
    (src / "orphan_label.html").write_text(table_html(2), encoding="utf-8")  # image missing
    (src / "orphan_image.png").write_bytes(make_png(3))  # label missing
    write_pair(src, "notable", 4, html="<p>그냥 문단</p>")  # label without a table
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (src / "corrupt.html").write_text(table_html(5), encoding="utf-8")
    (src / "empty.png").write_bytes(b"")
    (src / "empty.html").write_text(table_html(6), encoding="utf-8")
    (src / "euckr.png").write_bytes(make_png(7))
    (src / "euckr.html").write_bytes("<table><tr><td>자산</td></tr></table>".encode("euc-kr"))
    (src / "good.jpg").write_bytes(make_png(9))  # a second image named like good.png
    write_pair(src, "overlap", 8, html='<table><tr><td>a</td><td rowspan="2">b</td><td>c</td></tr>'
                                         '<tr><td colspan="2">d</td><td>e</td></tr></table>')
    out, stats = load_and_validate(src, data_dir)
    records, rejects = read_validated(out)
    reasons = {j.original_filename: j.reason for j in rejects}
    assert [r.metadata["original_filename"] for r in records] == ["good.png"]
    assert reasons == {
        "orphan_label.png": "image_missing",
        "orphan_image.png": "label_missing",
        "notable.png": "no_table",
        "corrupt.png": "image_corrupt",
        "empty.png": "image_empty",
        "euckr.png": "label_not_utf8",
        "overlap.png": "grid_invalid",
        "good.jpg": "duplicate_stem",
    }
    assert all(j.detail for j in rejects)
    assert "corrupt.png" in next(j.detail for j in rejects if j.reason == "image_corrupt")  # names the input file
    assert stats["records"] == 1 and stats["rejects"] == 8


def test_validation_record_matches_seed_schema(tmp_path, data_dir):
    write_pair(tmp_path / "src", "n3", 1, html=nested_html(1, 3))
    out, _ = load_and_validate(tmp_path / "src", data_dir)
    (rec,), _ = read_validated(out)
    assert rec.nesting_level == 3 and rec.category == "nested_3level"
    assert set(rec.metadata["validation"]) == {"table_count", "row_count", "cell_count", "has_rowspan",
                                               "has_colspan", "text_length"}
    assert rec.metadata["original_filename"] == "n3.png"
    assert (rec.image_width, rec.image_height) == (96, 64)
    assert len(rec.content_hash) == 64 and len(rec.image_phash) == 16


def test_over_budget_and_tiny_images_rejected(tmp_path, data_dir):
    store = store_for(data_dir)
    _, big = store.put_bytes(make_png(1, 2000, 2000))
    _, tiny = store.put_bytes(make_png(2, 8, 8))
    from ocr_ft.dataset.validate import ValidationLimits
    limits = ValidationLimits(max_seq_len=512)
    r1 = validate_pair(RawPair("x", "big.png", big, table_html(1)), str(data_dir), limits)
    r2 = validate_pair(RawPair("x", "tiny.png", tiny, table_html(2)), str(data_dir), limits)
    assert r1.reason == "over_budget" and "512" in r1.detail
    assert r2.reason == "image_size"


def test_revalidation_reuses_unchanged_pairs(tmp_path, data_dir):
    src = tmp_path / "src"
    for i in range(5):
        write_pair(src, f"t{i}", i)
    out, first = load_and_validate(src, data_dir)
    assert first["validated"] == 5 and first["reused"] == 0
    _, again = load_and_validate(src, data_dir)
    assert again["validated"] == 0 and again["reused"] == 5 and again["data_version"] == first["data_version"]
    write_pair(src, "t2", 99)
    _, changed = load_and_validate(src, data_dir)
    assert changed["validated"] == 1 and changed["reused"] == 4 and changed["data_version"] != first["data_version"]


def _records(data_dir, pairs):
    results = validate_all(pairs, str(data_dir), workers=1)
    assert all(hasattr(r, "content_hash") for r in results), results
    return results


def test_dedup_exact_near_conflict_and_filename_collision(data_dir):
    store = store_for(data_dir)
    img = {i: store.put_bytes(make_png(i))[1] for i in range(6)}
    # near-duplicate image: same picture re-encoded at a different size (different bytes, close phash)
    from PIL import Image
    import io
    im = Image.open(io.BytesIO(make_png(0))).resize((100, 67))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    near_img = store.put_bytes(buf.getvalue())[1]
    h0 = table_html(0)
    pairs = [
        RawPair("existing", "a.png", img[0], h0),
        RawPair("existing", "a_copy.png", img[0], h0),                      # exact duplicate of a
        RawPair("synthetic", "a_near.png", near_img, h0),                    # near duplicate of a
        RawPair("existing", "b.png", img[1], table_html(1)),
        RawPair("dart", "b2.png", img[1], table_html(2)),                    # same image, other label
        RawPair("existing", "c.png", img[3], table_html(3)),
        RawPair("synthetic", "c.png", img[4], table_html(4)),               # same file name, other source
        RawPair("existing", "d.png", img[5], table_html(5)),
    ]
    res = deduplicate(_records(data_dir, pairs))
    kept = sorted((r.source, r.metadata["original_filename"]) for r in res.kept)
    assert kept == [("existing", "a.png"), ("existing", "c.png"), ("existing", "d.png")]
    reasons = sorted((j.source, j.original_filename, j.reason) for j in res.rejects)
    assert reasons == [
        ("dart", "b2.png", "conflicting_labels"),
        ("existing", "a_copy.png", "exact_duplicate"),
        ("existing", "b.png", "conflicting_labels"),
        ("synthetic", "a_near.png", "near_duplicate"),
        ("synthetic", "c.png", "filename_collision"),
    ]
    near = next(j for j in res.rejects if j.reason == "near_duplicate")
    assert near.extra["phash_distance"] <= 4 and near.extra["text_similarity"] >= 0.95


def test_similar_images_with_different_text_are_kept(data_dir):
    store = store_for(data_dir)
    _, img = store.put_bytes(make_png(0))
    from PIL import Image
    import io
    im = Image.open(io.BytesIO(make_png(0))).resize((100, 67))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    _, img2 = store.put_bytes(buf.getvalue())
    res = deduplicate(_records(data_dir, [RawPair("existing", "a.png", img, table_html(0)),
                                          RawPair("existing", "b.png", img2, table_html(77))]))
    assert len(res.kept) == 2


def _many_records(data_dir, n=120):
    store = store_for(data_dir)
    pairs = []
    for i in range(n):
        kind = i % 4
        html = {0: table_html(i), 1: table_html(i, merged=True), 2: nested_html(i, 2), 3: nested_html(i, 3)}[kind]
        pairs.append(RawPair("existing" if i % 3 else "synthetic", f"r{i:03d}.png", store.put_bytes(make_png(i))[1], html))
    # the same label drawn twice (two images): a duplicate group that must stay in one split
    pairs.append(RawPair("existing", "r000_restyled.png", store.put_bytes(make_png(1000))[1], table_html(0)))
    return deduplicate(_records(data_dir, pairs))


def test_splits_are_deterministic_stratified_and_leak_free(data_dir):
    res = _many_records(data_dir)
    cfg = SplitConfig(seed=7, val_ratio=0.2, test_ratio=0.1)
    a = make_splits(res.kept, res.groups, cfg)
    b = make_splits(list(reversed(res.kept)), res.groups, cfg)
    assert {k: [r.content_hash for r in v] for k, v in a.items()} == {k: [r.content_hash for r in v] for k, v in b.items()}
    assert not leakage(a, res.groups)
    group_of_pair = {r.metadata["original_filename"]: res.groups[r.content_hash] for r in res.kept}
    assert group_of_pair["r000.png"] == group_of_pair["r000_restyled.png"]
    split_of = {r.metadata["original_filename"]: s for s, rs in a.items() for r in rs}
    assert split_of["r000.png"] == split_of["r000_restyled.png"]
    for cat in ("plain", "merged", "nested_2level", "nested_3level"):
        n = {s: sum(r.category == cat for r in rs) for s, rs in a.items()}
        total = sum(n.values())
        assert abs(n["val"] - 0.2 * total) <= 2 and abs(n["test"] - 0.1 * total) <= 2, (cat, n)
    c = make_splits(res.kept, res.groups, replace(cfg, seed=8))
    assert [r.content_hash for r in c["val"]] != [r.content_hash for r in a["val"]]


def test_curated_test_list_and_oversampling(data_dir):
    res = _many_records(data_dir, 40)
    cfg = SplitConfig(seed=1, curated_test=("r005.png", "r000.png"), oversample={"nested_3level": 3})
    s = make_splits(res.kept, res.groups, cfg)
    test_names = {r.metadata["original_filename"] for r in s["test"]}
    assert {"r005.png", "r000.png", "r000_restyled.png"} <= test_names
    unique_train = {r.content_hash for r in s["train"]}
    n3 = sum(1 for r in s["train"] if r.category == "nested_3level")
    n3_unique = len({r.content_hash for r in s["train"] if r.category == "nested_3level"})
    assert n3 == 3 * n3_unique and n3_unique > 0
    assert not unique_train & {r.content_hash for r in s["val"] + s["test"]}
    with pytest.raises(ValueError, match="sum below 1"):
        SplitConfig(val_ratio=0.6, test_ratio=0.5)


def test_build_dataset_splits_and_export(tmp_path, data_dir):
    src = tmp_path / "src"
    for i in range(12):
        write_pair(src, f"t{i:02d}", i, html=nested_html(i, 1 + i % 3))
    write_pair(src, "bad", 50, html="<p>x</p>")
    out, _ = load_and_validate(src, data_dir)
    stats = build_dataset([out], data_dir / "dataset")
    assert stats["records"] == 12 and stats["reject_reasons"] == {"no_table": 1}
    rejects = read_jsonl(data_dir / "dataset" / "rejects.jsonl")
    assert rejects[0]["original_filename"] == "bad.png" and rejects[0]["reason"] == "no_table"
    row = read_jsonl(data_dir / "dataset" / "dataset.jsonl")[0]
    for key in ("image_path", "ground_truth_html", "nesting_level", "source", "category", "metadata"):
        assert key in row
    sstats = build_splits(data_dir / "dataset", data_dir / "splits",
                          SplitConfig(val_ratio=0.25, test_ratio=0.25, curated_test=("t03.png", "bad.png", "typo.png")))
    assert sum(sstats["counts"].values()) == 12
    assert sstats["curated_not_found"] == ["bad.png", "typo.png"]  # rejected, and a name that never existed
    again = build_splits(data_dir / "dataset", data_dir / "splits",
                         SplitConfig(val_ratio=0.25, test_ratio=0.25, curated_test=("t03.png", "bad.png", "typo.png")))
    assert again["data_version"] == sstats["data_version"]
    from ocr_ft.dataset.build import load_split
    splits = {s: load_split(data_dir / "splits", s) for s in ("train", "val", "test")}
    counts = export_llamafactory(splits, data_dir, data_dir / "export")
    assert counts == sstats["counts"]
    info = json.loads((data_dir / "export" / "dataset_info.json").read_text())
    assert info["ocr_ft_train"]["formatting"] == "sharegpt"
    entry = json.loads((data_dir / "export" / "train_sharegpt.json").read_text())[0]
    assert entry["messages"][0]["content"] == "<image>Table Recognition:"
    assert entry["messages"][1]["content"].startswith("<table>")
    assert not Path(entry["images"][0]).is_absolute() and (data_dir / "export" / entry["images"][0]).is_file()


def test_many_small_strata_still_fill_val_and_test(data_dir):
    store = store_for(data_dir)
    pairs = [RawPair(src, f"{src}{i}.png", store.put_bytes(make_png(500 + 10 * k + i))[1],
                     nested_html(500 + 10 * k + i, 1 + i % 3))
             for k, src in enumerate(("existing", "dart", "fss", "wiki", "synthetic", "synthetic_shilu"))
             for i in range(3)]
    res = deduplicate(_records(data_dir, pairs))
    s = make_splits(res.kept, res.groups, SplitConfig(val_ratio=0.2, test_ratio=0.1))
    assert len(s["val"]) >= 3 and len(s["test"]) >= 1  # 18 records in 18 one-record strata


def test_validation_limits_follow_the_training_recipe():
    from ocr_ft.dataset.validate import ValidationLimits
    from ocr_ft.train.config import load_config

    cfg = load_config()
    assert (ValidationLimits().max_pixels, ValidationLimits().max_seq_len) == (cfg.max_pixels, cfg.max_seq_len)
