"""Dagster resources: where data lives, and the clients/renderer sources use. Thin: they only build the
plain-Python objects of the domain modules from configuration (and from the environment for secrets)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

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


class RendererResource(dg.ConfigurableResource):
    """The Playwright renderer every source uses (Debian's chromium, a pool of pages, a content-addressed cache)."""

    device_scale_factor: float = 1.5
    viewport_width: int = 1280
    pool_size: int = 4
    chromium_path: str = "/usr/bin/chromium"
    timeout_ms: int = 15_000

    def open(self, paths: OcrFtPaths):
        """A started :class:`ocr_ft.render.Renderer` writing into the data directory; use as a context manager."""
        from .render import Renderer, RenderSettings

        settings = RenderSettings(device_scale_factor=self.device_scale_factor, viewport_width=self.viewport_width,
                                  timeout_ms=self.timeout_ms)
        return Renderer(paths.store(), paths.sub("render_cache"), settings, pool_size=self.pool_size,
                        chromium_path=self.chromium_path)


class _ApiResource(dg.ConfigurableResource):
    max_attempts: int = 5
    backoff_base: float = 2.0
    min_interval: float = 0.1

    def _common(self, paths: OcrFtPaths, name: str) -> dict:
        return {"cache_dir": paths.sub("http_cache", name), "max_attempts": self.max_attempts,
                "backoff_base": self.backoff_base, "min_interval": self.min_interval}


class DartResource(_ApiResource):
    """OpenDART client. The key comes from ``DART_API_KEY`` (bound with EnvVar: never in config or logs)."""

    api_key: str = Field(repr=False, description="OpenDART key; bind with EnvVar('DART_API_KEY').")
    base_url: str = "https://opendart.fss.or.kr/api"

    def client(self, paths: OcrFtPaths):
        from .sources.dart import DartClient

        return DartClient(self.api_key, base_url=self.base_url, **self._common(paths, "dart"))


class FssResource(_ApiResource):
    """FSS FISIS OpenAPI client. The key comes from ``FSS_API_KEY``."""

    api_key: str = Field(repr=False, description="FISIS key; bind with EnvVar('FSS_API_KEY').")
    base_url: str = "https://fisis.fss.or.kr/openapi"

    def client(self, paths: OcrFtPaths):
        from .sources.fss import FssClient

        return FssClient(self.api_key, base_url=self.base_url, **self._common(paths, "fss"))


class WikiResource(_ApiResource):
    """MediaWiki client for Korean Wikipedia. Wikimedia asks for a User-Agent with a contact address."""

    api_url: str = "https://ko.wikipedia.org/w/api.php"
    user_agent: str = "ocr-ft/0.1 (table-recognition dataset builder; set OCR_FT_WIKI_USER_AGENT)"
    min_interval: float = 0.2

    def client(self, paths: OcrFtPaths):
        """The client; raises :class:`~ocr_ft.sources.wiki.WikiUserAgentError` (naming OCR_FT_WIKI_USER_AGENT)
        when the User-Agent has no URL or e-mail."""
        from .sources.wiki import WikiClient, check_user_agent

        return WikiClient(api_url=self.api_url, user_agent=check_user_agent(self.user_agent),
                          **self._common(paths, "wiki"))


def default_resources() -> dict:
    """Resources of the code location, bound from the environment (secrets via EnvVar, never in config)."""
    env = os.environ.get
    return {
        "paths": default_paths(),
        "renderer": RendererResource(),
        "dart": DartResource(api_key=dg.EnvVar("DART_API_KEY"), base_url=env("OCR_FT_DART_URL", DartResource.model_fields["base_url"].default)),
        "fss": FssResource(api_key=dg.EnvVar("FSS_API_KEY"), base_url=env("OCR_FT_FSS_URL", FssResource.model_fields["base_url"].default)),
        "wiki": WikiResource(api_url=env("OCR_FT_WIKI_URL", WikiResource.model_fields["api_url"].default),
                             user_agent=env("OCR_FT_WIKI_USER_AGENT", WikiResource.model_fields["user_agent"].default)),
    }
