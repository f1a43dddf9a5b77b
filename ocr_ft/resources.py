"""Dagster resources: where data lives, and the clients/renderer sources use. Thin: they only build the
plain-Python objects of the domain modules from configuration (and from the environment for secrets)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from .storage import BlobStore

DEFAULT_DATA_DIR = "data"


class OcrFtPaths(dg.ConfigurableResource):
    """The data directory every artifact lives under (``OCR_FT_DATA_DIR``, default ``./data``)."""

    data_dir: str = DEFAULT_DATA_DIR

    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()

    def store(self) -> BlobStore:
        return BlobStore(self.root / "blobs", base=self.root)

    def sub(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


def default_paths() -> OcrFtPaths:
    return OcrFtPaths(data_dir=os.environ.get("OCR_FT_DATA_DIR", DEFAULT_DATA_DIR))
