"""Atomic file writes and a content-addressed blob store.

Every artifact the graph writes goes through here: a crash mid-write leaves the previous file (or nothing),
never a half-written one, and big files (images, checkpoints) are addressed by the SHA-256 of their bytes so
identical content is stored once and has a stable path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide reports from a web server


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object in canonical form (sorted keys, no whitespace)."""
    return sha256_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


STALE_TEMP_SECONDS = 3600  # a temp file this old is a dead writer's, whoever wrote it (e.g. another host)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temps(target: Path) -> int:
    """Remove temp files of ``target`` left by a killed writer: those whose writer's pid (in the name) is gone
    on this host, or older than :data:`STALE_TEMP_SECONDS`. Returns how many were removed."""
    import time

    removed = 0
    prefix = f".{target.name}."
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        rest = name[len(prefix):-4]
        pid_part = rest.split(".", 1)[0]
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead = pid_part.startswith("p") and pid_part[1:].isdigit() and not _pid_alive(int(pid_part[1:]))
        if dead or age > STALE_TEMP_SECONDS:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was. Temp files of a writer that
    was killed (its pid is in the name) are removed on the next write of the same path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.p{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from exc
    return rows


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced only after the new directory is complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.p{os.getpid()}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class BlobStore:
    """Content-addressed files under ``root``: ``<root>/<h[:2]>/<h><suffix>``.

    Paths returned are relative to ``base`` (default: ``root``'s parent, i.e. the data directory) so records
    stay valid when the data directory moves.
    """

    def __init__(self, root: str | os.PathLike, base: str | os.PathLike | None = None):
        self.root = Path(root)
        self.base = Path(base) if base is not None else self.root.parent

    def path_for(self, digest: str, suffix: str) -> Path:
        return self.root / digest[:2] / f"{digest}{suffix}"

    def put_bytes(self, data: bytes, suffix: str = ".png") -> tuple[str, str]:
        """Store ``data``; return ``(digest, path relative to base)``. Writing the same bytes twice is a no-op,
        unless the stored file is damaged (its bytes no longer hash to its name): then it is rewritten."""
        digest = sha256_bytes(data)
        dest = self.path_for(digest, suffix)
        if not self.intact(dest, digest, len(data)):
            atomic_write_bytes(dest, data)
        return digest, self.relative(dest)

    @staticmethod
    def intact(path: Path, digest: str, size: int | None = None) -> bool:
        """Whether ``path`` exists and its bytes hash to ``digest`` (size compared first, cheaply)."""
        try:
            if size is not None and path.stat().st_size != size:
                return False
            return sha256_file(path) == digest
        except OSError:
            return False

    def put_file(self, src: str | os.PathLike, suffix: str | None = None) -> tuple[str, str]:
        src = Path(src)
        return self.put_bytes(src.read_bytes(), suffix if suffix is not None else src.suffix.lower())

    def relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.base).as_posix()
        except ValueError:
            return path.as_posix()

    def resolve(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.base / p
