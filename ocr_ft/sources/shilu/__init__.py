"""The ``synthetic_shilu`` source: BNK-style bank financial statements, 2/3-level nested with merged cells.

Sixteen Jinja2 templates (``templates/``; they share ``_macros.j2`` with :mod:`ocr_ft.sources.synthetic`)
cover the statements and notes of a Korean bank: 재무상태표, 손익계산서, 포괄손익계산서, 자본변동표,
현금흐름표, 대출채권/예수부채/유가증권 내역, 신용손실충당금, 자산건전성, BIS 자기자본비율, 평균잔액과 이율,
영업점 현황 and BNK금융그룹 summaries. Every template merges cells and nests tables two or three levels deep.

:func:`generate_shilu` renders one shard and, like the seed's ``synthetic-shilu`` folder, writes
``metadata.json`` describing each sample (template, nesting level, merges, seed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from ...dataset.records import SourceResult
from ...storage import atomic_write_json, sha256_text
from ..synthetic.generator import (
    CELL_BORDERS,
    GENERATOR_VERSION,
    TEMPLATES_DIR as SYNTHETIC_TEMPLATES_DIR,
    TemplateSpec,
    generate_shard,
    make_environment,
    select_templates,
)

SOURCE = "synthetic_shilu"
TEMPLATES_DIR = Path(__file__).with_name("templates")


def _bank(name: str, level: int, description: str) -> TemplateSpec:
    return TemplateSpec(name, level, True, description, CELL_BORDERS)


SHILU_TEMPLATES: tuple[TemplateSpec, ...] = (
    _bank("bank_bs_notes", 2, "은행 재무상태표 with breakdown tables in account cells"),
    _bank("bank_bs_loans_nested3", 3, "요약 재무상태표: 대출채권 -> 종류 -> 기업규모"),
    _bank("bank_income_nested", 2, "은행 손익계산서 (3개월/누적) with 이자수익/수수료 breakdowns"),
    _bank("bnk_segment_income_nested3", 3, "BNK 부문별 손익: 계열사 -> 손익 -> 이자수익/비용"),
    _bank("bank_equity_changes_nested", 2, "은행 자본변동표 with a dividend breakdown"),
    _bank("bank_cash_flow_nested", 2, "은행 현금흐름표 with colspan sections and 원화/외화 splits"),
    _bank("bank_loans_by_type_nested", 2, "대출채권 내역 with stage tables"),
    _bank("bank_deposits_nested", 2, "예수부채 내역 with maturity tables"),
    _bank("bank_capital_adequacy_nested3", 3, "BIS 자기자본비율: 자기자본 -> 자본 구분 -> 보통주자본 항목"),
    _bank("bank_allowance_nested", 2, "신용손실충당금 변동 by stage with write-off breakdown"),
    _bank("bank_asset_quality_nested3", 3, "자산건전성: 여신 -> 등급 -> 고정이하 세부"),
    _bank("bank_securities_nested", 2, "유가증권 내역 (장부금액/공정가치) with bond issuers"),
    _bank("bank_branch_network_nested3", 3, "지역별 영업점: 채널 -> 점포 -> 직원 구성"),
    _bank("bnk_group_summary_nested3", 3, "BNK금융그룹 계열사 현황: 지표 -> 건전성"),
    _bank("bank_nim_nested", 2, "평균잔액 및 이율 (NIM) with loan breakdowns"),
    _bank("bank_comprehensive_income_nested", 2, "포괄손익계산서 with tax-effect splits"),
)


def shilu_environment():
    """Jinja2 environment over the shilu templates, then the synthetic ones (for ``_macros.j2``)."""
    return make_environment(str(TEMPLATES_DIR), str(SYNTHETIC_TEMPLATES_DIR))


def generate_shilu(
    shard: int,
    count: int,
    seed: int,
    renderer,
    out_dir: str | os.PathLike | None = None,
    templates: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SourceResult:
    """The ``synthetic_shilu`` source: ``count`` bank tables of shard ``shard``
    (files ``synthetic_shilu_s003_00042.png``); render failures become ``render_failed`` rejects.

    With ``out_dir`` (one directory per shard), ``<out_dir>/metadata.json`` is written atomically: the shard's
    parameters and, per accepted sample, filename, template, nesting_level, merges, seed, image and label
    hashes, plus the rejects. ``stats["metadata_path"]`` names it.
    """
    specs = select_templates(SHILU_TEMPLATES, templates)
    result, accepted = generate_shard(SOURCE, shilu_environment(), specs, shard, count, seed, renderer, progress)
    if out_dir is not None:
        images = {p.original_filename: p.metadata.get("image", {}) for p in result.pairs}
        metadata = {
            "source": SOURCE,
            "shard": shard,
            "count": count,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
            "templates": [s.name for s in specs],
            "samples": [
                {
                    "filename": name,
                    "template": doc.template,
                    "nesting_level": doc.nesting_level,
                    "merges": doc.merges,
                    "seed": doc.seed,
                    "rows": doc.rows,
                    "cells": doc.cells,
                    "image": images.get(name, {}),
                    "label_sha256": sha256_text(doc.label),
                }
                for name, doc in accepted
            ],
            "rejects": [
                {"filename": r.original_filename, "reason": r.reason, "detail": r.detail} for r in result.rejects
            ],
        }
        path = Path(out_dir) / "metadata.json"
        atomic_write_json(path, metadata)
        result.stats["metadata_path"] = str(path)
    return result


__all__ = ["SOURCE", "SHILU_TEMPLATES", "TEMPLATES_DIR", "generate_shilu", "shilu_environment"]
