import os
import stat

import pytest

from ocr_ft.storage import BlobStore, atomic_dir, atomic_write_json, atomic_write_text, read_jsonl, sha256_bytes


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})

    class Boom(Exception):
        pass

    from ocr_ft.storage import atomic_path

    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise Boom()
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_written_files_are_readable_like_open_would_make_them(tmp_path):
    path = atomic_write_text(tmp_path / "report.html", "<html></html>")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("crash")
    assert [p.name for p in target.iterdir()] == ["a"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_blob_store_is_content_addressed(tmp_path):
    store = BlobStore(tmp_path / "blobs", base=tmp_path)
    d1, rel1 = store.put_bytes(b"png-bytes")
    d2, rel2 = store.put_bytes(b"png-bytes")
    assert d1 == d2 == sha256_bytes(b"png-bytes") and rel1 == rel2 == f"blobs/{d1[:2]}/{d1}.png"
    assert store.resolve(rel1).read_bytes() == b"png-bytes"


def test_read_jsonl_names_the_bad_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2"):
        read_jsonl(p)
