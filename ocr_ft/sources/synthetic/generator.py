"""The synthetic table engine: Jinja2 templates + Korean vocabulary + seeded randomness -> HTML -> PNG + label.

A *template* (``templates/<name>.html.j2``) lays out one table document; it calls the :class:`TableGen`
object ``g`` for everything random (names, periods, amounts, whole statements whose totals add up) and uses
the CSS classes of :func:`style_css` (``num``, ``c``, ``lv1``..``lv3``, rows ``total``/``sec``). The page may
carry a title, unit line and footnote outside the table; the screenshot is of the table element only, and
the label is the normalised form of that one table (so the label holds exactly the cells drawn).

Determinism: sample ``i`` of shard ``s`` with base seed ``seed`` uses
``random.Random(derive_seed(source, seed, s, i))`` for its template choice, style and content, and nothing
else (no time, no set iteration, no global state). The same seed and :data:`GENERATOR_VERSION` give
byte-identical HTML, and one shard can be regenerated alone.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import jinja2

from ...dataset.records import RawPair, Reject, SourceResult
from ...storage import sha256_text
from ...tables import parse_tables, table_to_html, validate_tables
from . import vocab

GENERATOR_VERSION = "1"
TEMPLATES_DIR = Path(__file__).with_name("templates")
TEMPLATE_SUFFIX = ".html.j2"

FONTS = (
    "'Noto Sans CJK KR', sans-serif",
    "'Noto Serif CJK KR', serif",
    "'Noto Sans Mono CJK KR', monospace",
)
ALL_BORDERS = ("grid", "grid_double_outer", "box_light", "horizontal", "header_rules")
#: Border modes that draw every cell edge, so merged cells are visible as merged.
CELL_BORDERS = ("grid", "grid_double_outer", "box_light")


# ----------------------------------------------------------------------------- template registry


@dataclass(frozen=True)
class TemplateSpec:
    """What a template is: its file stem, the nesting level its tables have, whether it merges cells, and
    which border modes it may be drawn with (templates with merged cells use only :data:`CELL_BORDERS`)."""

    name: str
    nesting_level: int
    merged: bool
    description: str
    border_modes: tuple[str, ...] = ALL_BORDERS

    @property
    def category(self) -> str:
        if self.nesting_level >= 3:
            return "nested_3level"
        if self.nesting_level == 2:
            return "nested_2level"
        return "merged" if self.merged else "plain"


def _spec(name, level, merged, description, borders=None) -> TemplateSpec:
    if borders is None:
        borders = CELL_BORDERS if (merged or level > 1) else ALL_BORDERS
    return TemplateSpec(name, level, merged, description, borders)


SYNTHETIC_TEMPLATES: tuple[TemplateSpec, ...] = (
    _spec("plain_branch_results", 1, False, "지점별 실적: plain grid of branches x figures"),
    _spec("plain_transactions", 1, False, "거래내역: dates, descriptions, amounts, balance"),
    _spec("plain_company_profile", 1, False, "회사 개요: key/value rows with th in the first column"),
    _spec("plain_ratio_trend", 1, False, "재무비율 추이: ratios over years, %, △ changes"),
    _spec("fs_balance_sheet", 1, False, "재무상태표: indented accounts, subtotals, two or three periods"),
    _spec("fs_income_statement", 1, True, "손익계산서: 3개월/누적 multi-row header over 당기/전기"),
    _spec("fs_cash_flow", 1, True, "현금흐름표: full-width section rows (colspan)"),
    _spec("fs_equity_changes", 1, True, "자본변동표: wide matrix, multi-line headers, rowspan corner"),
    _spec("note_borrowings", 1, True, "주석 차입금: rowspan groups by lender"),
    _spec("note_maturity", 1, True, "주석 만기분석: three header rows of colspans"),
    _spec("note_ppe_movement", 1, True, "주석 유형자산 변동: rowspan period blocks x asset classes"),
    _spec("merged_segment_matrix", 1, True, "부문별 정보: rowspan segments x colspan periods"),
    _spec("nested2_summary_detail", 2, False, "요약 표 with a detail table inside a cell"),
    _spec("nested2_side_by_side", 2, False, "two statements side by side in a layout table"),
    _spec("nested2_merged_breakdown", 2, True, "rowspan groups whose cells hold a breakdown table"),
    _spec("nested3_group_report", 3, True, "group report: subsidiary tables holding account breakdowns"),
    _spec("nested3_loan_portfolio", 3, False, "loan portfolio: type tables holding maturity tables"),
    _spec("nested2_related_party", 2, True, "특수관계자 거래: merged header, nested 거래 detail"),
)


# ----------------------------------------------------------------------------- styles


@dataclass(frozen=True)
class Style:
    """Visual choices for one document (fonts, borders, colours, alignment); see :func:`style_css`."""

    font_family: str
    font_size: int
    line_height: float
    border_mode: str
    line_color: str
    header_bg: str
    header_fg: str
    header_weight: int
    total_bg: str
    stripe_bg: str | None
    num_align: str
    title_align: str
    pad_y: int
    pad_x: int


_HEADER_COLOURS = (
    ("#f2f2f2", "#111"), ("#e8eef7", "#111"), ("#dde6f0", "#111"), ("#eef4ea", "#111"), ("#ffffff", "#111"),
    ("#d9d9d9", "#111"), ("#fbf3e4", "#111"), ("#1f3864", "#fff"), ("#2f5597", "#fff"), ("#44546a", "#fff"),
)


def pick_style(rng: random.Random, border_modes: Sequence[str] = ALL_BORDERS) -> Style:
    header_bg, header_fg = rng.choice(_HEADER_COLOURS)
    return Style(
        font_family=rng.choice(FONTS),
        font_size=rng.choice((12, 13, 13, 14, 14, 15, 16)),
        line_height=rng.choice((1.25, 1.35, 1.5)),
        border_mode=rng.choice(tuple(border_modes)),
        line_color=rng.choice(("#000", "#333", "#666", "#8c8c8c")),
        header_bg=header_bg,
        header_fg=header_fg,
        header_weight=rng.choice((600, 700)),
        total_bg=rng.choice(("transparent", "#f5f5f5", "#eef2f8")),
        stripe_bg=rng.choice((None, None, "#f7f7f7", "#f4f8fc")),
        num_align=rng.choice(("right", "right", "right", "center")),
        title_align=rng.choice(("left", "center")),
        pad_y=rng.choice((2, 3, 4, 6)),
        pad_x=rng.choice((4, 6, 8, 10)),
    )


def style_css(s: Style) -> str:
    """The document stylesheet for ``s``. Nested tables always get a full thin grid so they read as tables."""
    line = f"1px solid {s.line_color}"
    rules = [
        f"body{{font-family:{s.font_family};font-size:{s.font_size}px;line-height:{s.line_height};color:#111;}}",
        ".doc{display:inline-block;}",
        f".doc-title{{font-size:1.3em;font-weight:700;text-align:{s.title_align};margin:0 0 6px 0;}}",
        ".doc-sub{font-size:.95em;margin:0 0 4px 0;}",
        ".doc-unit{font-size:.9em;text-align:right;margin:0 0 10px 0;}",
        ".doc-note{font-size:.85em;margin:12px 0 0 0;}",
        "table.t{border-collapse:collapse;border-spacing:0;margin:0;}",
        f"table.t th,table.t td{{padding:{s.pad_y}px {s.pad_x}px;vertical-align:middle;}}",
        f"table.t th{{background:{s.header_bg};color:{s.header_fg};font-weight:{s.header_weight};text-align:center;}}",
        "table.t td{text-align:left;}",
        f"table.t td.num{{text-align:{s.num_align};white-space:nowrap;}}",
        "table.t td.c,table.t th.c{text-align:center;}",
        "table.t td.top{vertical-align:top;}",
        "table.t .lv1{padding-left:1.5em;}table.t .lv2{padding-left:2.7em;}table.t .lv3{padding-left:3.9em;}",
        f"table.t tr.total>td,table.t tr.total>th{{font-weight:700;background:{s.total_bg};}}",
        "table.t tr.sec>td{font-weight:700;}",
    ]
    if s.border_mode == "grid":
        rules.append(f"table.t th,table.t td{{border:{line};}}")
    elif s.border_mode == "grid_double_outer":
        rules.append(f"table.t th,table.t td{{border:{line};}}table.t{{border:2px solid #000;}}")
    elif s.border_mode == "box_light":
        rules.append(
            "table.t th,table.t td{border:1px solid #c4c4c4;}table.t{border:2px solid #333;}"
            "table.t>thead>tr:last-child>th{border-bottom:2px solid #333;}"
        )
    elif s.border_mode == "horizontal":
        rules.append(
            f"table.t th,table.t td{{border-bottom:{line};}}table.t{{border-top:2px solid #222;border-bottom:2px solid #222;}}"
        )
    elif s.border_mode == "header_rules":
        rules.append(
            "table.t{border-top:2px solid #222;border-bottom:2px solid #222;}"
            "table.t>thead>tr:last-child>th{border-bottom:1px solid #222;}"
            "table.t tr.total>td{border-top:1px solid #222;}"
        )
    else:
        raise ValueError(f"unknown border mode {s.border_mode!r}")
    if s.stripe_bg:
        rules.append(f"table.t>tbody>tr:nth-child(even)>td{{background:{s.stripe_bg};}}")
    rules += [
        "table.t table{border-collapse:collapse;width:100%;margin:3px 0;font-size:.95em;}",
        "table.t table th,table.t table td{border:1px solid #7a7a7a;padding:2px 5px;background:#fff;color:#111;}",
        "table.t table th{background:#eeeeee;font-weight:600;}",
        "table.t table table{margin:2px 0;font-size:1em;}",
        "table.t table table th,table.t table table td{border-color:#a0a0a0;}",
    ]
    return "\n".join(rules)


# ----------------------------------------------------------------------------- numbers


@dataclass(frozen=True)
class NumberStyle:
    """How a document writes amounts: negatives as ``(1,234)``, ``△1,234`` or ``-1,234``; zero as ``-`` or ``0``."""

    negative: str = "paren"
    zero: str = "-"
    thousands: bool = True

    def format(self, value: int | float | None, decimals: int = 0) -> str:
        if value is None:
            return ""
        if value == 0:
            return self.zero if decimals == 0 else f"{0:.{decimals}f}"
        mag = abs(value)
        body = f"{mag:,.{decimals}f}" if self.thousands else f"{mag:.{decimals}f}"
        if value > 0:
            return body
        return {"paren": f"({body})", "triangle": f"△{body}", "minus": f"-{body}"}[self.negative]


@dataclass
class StmtRow:
    """One row of a generated statement: ``level`` 0 (section) to 3, ``kind`` section/group/item/total."""

    name: str
    level: int
    values: list[int | None]
    kind: str = "item"

    @property
    def css_class(self) -> str:
        return {"total": "total", "section": "sec"}.get(self.kind, "")


_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")


class TableGen:
    """The random source a template sees as ``g``: Korean names, periods, amounts and whole statements.

    All randomness comes from the ``random.Random`` given; document-wide choices (fiscal year, unit, number
    style, numbering) are drawn once in ``__init__``.
    """

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.fy = rng.randint(2015, 2024)
        self.term = rng.randint(5, 72)
        self.unit, self._mult = vocab.UNITS[rng.choice((1, 1, 2, 2, 2, 0, 3))]
        self.numbers = NumberStyle(
            negative=rng.choice(("paren", "paren", "triangle", "triangle", "minus")),
            zero=rng.choice(("-", "-", "0")),
            thousands=rng.random() > 0.05,
        )
        self.numbering = rng.choice(("none", "roman", "roman", "paren"))
        self._company = self._make_company()

    # -- basic draws ---------------------------------------------------------------------------------
    def choice(self, seq):
        return self.rng.choice(tuple(seq))

    def randint(self, a: int, b: int) -> int:
        return self.rng.randint(a, b)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, seq, k: int) -> list:
        """``k`` distinct items of ``seq`` in their original order (all of them if ``k`` is larger)."""
        seq = tuple(seq)
        k = max(0, min(k, len(seq)))
        idx = sorted(self.rng.sample(range(len(seq)), k))
        return [seq[i] for i in idx]

    def shuffled(self, seq) -> list:
        out = list(seq)
        self.rng.shuffle(out)
        return out

    # -- names ---------------------------------------------------------------------------------------
    def _make_company(self) -> str:
        return self.rng.choice(vocab.COMPANY_FORMS).format(name=self.rng.choice(vocab.COMPANIES))

    def company(self, new: bool = False) -> str:
        """The document's company (``new=True``: another one)."""
        return self._make_company() if new else self._company

    def bank(self) -> str:
        return self.choice(vocab.BANKS)

    def lender(self) -> str:
        return self.choice(vocab.LENDERS)

    def person(self) -> str:
        return self.choice(vocab.SURNAMES) + self.choice(vocab.GIVEN_NAMES)

    def region(self) -> str:
        return self.choice(vocab.REGIONS)

    def branches(self, k: int) -> list[str]:
        cities = self.pick(vocab.CITIES, k)
        return [c + self.choice(vocab.BRANCH_SUFFIXES) for c in cities]

    # -- periods and dates ---------------------------------------------------------------------------
    def periods(self, n: int = 2, kind: str | None = None) -> list[str]:
        """Column headings for ``n`` consecutive periods, newest first."""
        kind = kind or self.choice(("term", "year", "date", "curprev", "term_year"))
        out = []
        for i in range(n):
            y = self.fy - i
            if kind == "term":
                out.append(f"제 {self.term - i} 기")
            elif kind == "year":
                out.append(f"{y}년")
            elif kind == "date":
                out.append(f"{y}.12.31")
            elif kind == "term_year":
                out.append(f"제{self.term - i}기 ({y}년)")
            elif kind == "fy":
                out.append(f"FY{y}")
            else:  # curprev
                out.append(("당기", "전기", "전전기", "전전전기")[i] if i < 4 else f"{y}년")
        return out

    def years(self, n: int, ascending: bool = True) -> list[str]:
        ys = [f"{self.fy - i}년" for i in range(n)]
        return ys[::-1] if ascending else ys

    def as_of(self) -> str:
        return self.choice((f"{self.fy}년 12월 31일 현재", f"{self.fy}.12.31 현재", f"{self.fy}년 말 현재"))

    def period_range(self) -> str:
        return self.choice((
            f"{self.fy}년 1월 1일부터 {self.fy}년 12월 31일까지",
            f"{self.fy}.01.01 ~ {self.fy}.12.31",
            f"제 {self.term} 기 {self.fy}년 1월 1일부터 12월 31일까지",
        ))

    def date(self, fmt: str | None = None, year: int | None = None) -> str:
        y = year if year is not None else self.fy + self.rng.choice((-1, 0, 0, 1, 2, 3))
        m, d = self.rng.randint(1, 12), self.rng.randint(1, 28)
        fmt = fmt or self.choice(("dot", "dash", "kor", "short"))
        return {
            "dot": f"{y}.{m:02d}.{d:02d}",
            "dash": f"{y}-{m:02d}-{d:02d}",
            "kor": f"{y}년 {m}월 {d}일",
            "short": f"{y % 100:02d}.{m:02d}.{d:02d}",
        }[fmt]

    # -- units and numbers ---------------------------------------------------------------------------
    def unit_text(self, extra: str = "") -> str:
        unit = self.unit + (f", {extra}" if extra else "")
        return self.choice(vocab.UNIT_FORMS).format(unit=unit)

    def title(self, text: str) -> str:
        return self.choice(vocab.TITLE_DECOR).format(t=text)

    def money(self, lo: float = 50, hi: float = 2_000_000, neg: float = 0.0) -> int:
        """An amount in the document's unit, log-uniform between ``lo`` and ``hi`` million won."""
        v = math.exp(self.rng.uniform(math.log(lo), math.log(hi))) * self._mult
        v = max(1, round(v))
        return -v if self.rng.random() < neg else v

    def fmt(self, value: int | float | None, decimals: int = 0) -> str:
        return self.numbers.format(value, decimals)

    def pct(self, lo: float = 0.0, hi: float = 30.0, decimals: int = 2, neg: float = 0.0, suffix: str = "%") -> str:
        v = round(self.rng.uniform(lo, hi), decimals)
        if self.rng.random() < neg:
            v = -v
        return self.fmt(v, decimals) + (suffix if v != 0 else "")

    def rate(self) -> str:
        return f"{self.rng.uniform(1.2, 7.5):.2f}%"

    def count(self, lo: int = 1, hi: int = 500) -> str:
        return f"{self.rng.randint(lo, hi):,}"

    def note(self) -> str:
        return self.choice(vocab.NOTE_LINES)

    # -- numbering -----------------------------------------------------------------------------------
    def numbered(self, name: str, level: int, index: int) -> str:
        """``name`` with the document's numbering for ``level`` (0: ``I.``, 1: ``1.``, 2: ``(1)``)."""
        if self.numbering == "none" or level > 2:
            return name
        if self.numbering == "paren" and level == 0:
            return f"({index + 1}) {name}" if index < 20 else name
        if level == 0:
            return f"{_ROMAN[index % len(_ROMAN)]}. {name}"
        if level == 1:
            return f"{index + 1}. {name}"
        return f"({index + 1}) {name}"

    # -- generic grids -------------------------------------------------------------------------------
    def matrix(self, n_rows: int, n_cols: int, lo: float = 50, hi: float = 500_000, neg: float = 0.0) -> list[list[int]]:
        return [[self.money(lo, hi, neg) for _ in range(n_cols)] for _ in range(n_rows)]

    @staticmethod
    def col_sums(rows: Sequence[Sequence[int]]) -> list[int]:
        return [sum(col) for col in zip(*rows)]

    @staticmethod
    def row_sum(values: Sequence[int]) -> int:
        return sum(values)

    def split(self, total: int, k: int) -> list[int]:
        """``k`` amounts adding up to ``total`` (each at least 1 when ``total`` allows)."""
        if k <= 1:
            return [total]
        weights = [self.rng.uniform(0.2, 1.0) for _ in range(k)]
        scale = sum(weights)
        parts = [int(total * w / scale) for w in weights[:-1]]
        return parts + [total - sum(parts)]

    def metric(self, kind: str) -> tuple[float, str]:
        """A value of ``kind`` (money/count/pct/rate) and its formatted text."""
        if kind == "money":
            v = self.money(100, 800_000)
            return v, self.fmt(v)
        if kind == "count":
            v = self.randint(3, 5_000)
            return v, f"{v:,}"
        v = round(self.rng.uniform(0.1, 120.0 if kind == "pct" else 8.0), 2)
        return v, f"{v:.2f}"

    def metric_table(self, metrics: Sequence[tuple[str, str]], row_labels: Sequence[str], total: bool = False) -> dict[str, Any]:
        """Rows ``(label, [text...])`` of ``metrics`` (name, kind) values, and the total row's texts (sums for
        money and counts, means for ratios) when ``total``."""
        rows, sums = [], [0.0] * len(metrics)
        for label in row_labels:
            cells = []
            for j, (_, kind) in enumerate(metrics):
                value, text = self.metric(kind)
                sums[j] += value
                cells.append(text)
            rows.append((label, cells))
        totals = None
        if total and row_labels:
            totals = [
                self.fmt(int(s)) if kind == "money" else f"{int(s):,}" if kind == "count" else f"{s / len(row_labels):.2f}"
                for s, (_, kind) in zip(sums, metrics)
            ]
        return {"rows": rows, "total": totals}

    def transactions(self, n: int) -> list[dict[str, Any]]:
        """Bank-book lines, oldest first: date, memo, deposit or withdrawal, running balance, branch."""
        balance = self.money(5, 3_000)
        dates = sorted(self.date("dot", self.fy) for _ in range(n))
        out = []
        for d in dates:
            amount = self.money(0.05, 400)
            deposit = self.chance(0.45)
            if not deposit and amount > balance:
                deposit = True
            balance += amount if deposit else -amount
            out.append({
                "date": d, "memo": self.choice(vocab.TX_MEMOS),
                "deposit": amount if deposit else None, "withdrawal": None if deposit else amount,
                "balance": balance, "branch": self.choice(vocab.CITIES),
            })
        return out

    def address(self) -> str:
        return self.choice(vocab.STREETS)

    # -- statements ----------------------------------------------------------------------------------
    def _values(self, n: int, lo: float, hi: float, neg: float, scales: Sequence[float] | None = None) -> list[int]:
        base = self.money(lo, hi, neg)
        # later periods drift from the first so columns look like a time series
        values = [base] + [round(base * self.rng.uniform(0.7, 1.3)) for _ in range(n - 1)]
        if scales is not None:
            values = [round(v * s) for v, s in zip(values, scales)]
        return values

    def balance_sheet(self, n_periods: int = 2, bank: bool = False, max_items: int = 6) -> list[StmtRow]:
        """A balance sheet that adds up: items to groups, groups to section totals, and
        자산총계 = 부채총계 + 자본총계 (이익잉여금, or the last equity line, absorbs the difference, so it may
        be negative, as 결손금 is). ``bank=True`` uses the bank chart of accounts."""
        tree = vocab.BANK_BS_TREE if bank else vocab.BS_TREE
        sections = []  # (section row, [(group row | None, items)], total row)
        for si, (section, groups, total_label) in enumerate(tree):
            blocks = []
            for gi, (group, leaves) in enumerate(groups):
                k = self.randint(min(3, len(leaves)), min(max_items, len(leaves))) if leaves else 0
                items = [
                    StmtRow(self.numbered(name, 2 if group else 1, ii), 2 if group else 1,
                            self._values(n_periods, 20, 900_000, 0.12 if name.startswith("기타") else 0.02))
                    for ii, name in enumerate(self.pick(leaves, k))
                ]
                values = [sum(r.values[p] for r in items) for p in range(n_periods)] if items else \
                    self._values(n_periods, 100, 300_000, 0.0)
                head = StmtRow(self.numbered(group, 1, gi), 1, values, "group") if group else None
                blocks.append((head, items))
            total = [sum((h.values[p] if h else sum(r.values[p] for r in its)) for h, its in blocks)
                     for p in range(n_periods)]
            sections.append((StmtRow(self.numbered(section, 0, si), 0, [None] * n_periods, "section"),
                             blocks, StmtRow(total_label, 0, total, "total")))
        if len(sections) == 3:  # 자산, 부채, 자본: realistic leverage, then equity closes the balance
            assets = sections[0][2].values
            leverage = self.rng.uniform(0.85, 0.95) if bank else self.rng.uniform(0.3, 0.75)
            self._rescale(sections[1], [round(a * leverage) for a in assets])
            self._rescale(sections[2], [round(a * (1 - leverage)) for a in assets])
            liabilities, equity = sections[1][2].values, sections[2][2].values
            diff = [a - l - e for a, l, e in zip(assets, liabilities, equity)]
            blocks = sections[2][1]
            # prefer 이익잉여금 (retained earnings), then the last item of any group, then the last group
            found = [(h, r) for h, its in blocks for r in its if "이익잉여금" in r.name]
            found = found or [(h, its[-1]) for h, its in blocks if its][-1:] or [(blocks[-1][0], None)]
            head, item = found[0]
            targets = [r for r in (item, head) if r is not None]
            for row in targets + [sections[2][2]]:
                row.values = [v + d for v, d in zip(row.values, diff)]
        rows: list[StmtRow] = []
        for sec_row, blocks, total_row in sections:
            rows.append(sec_row)
            for head, items in blocks:
                if head:
                    rows.append(head)
                rows.extend(items)
            rows.append(total_row)
        return rows

    @staticmethod
    def _rescale(section, targets: Sequence[int]) -> None:
        """Scale a balance-sheet section's lines so its total per period is close to ``targets``."""
        _, blocks, total_row = section
        for p, target in enumerate(targets):
            current = total_row.values[p]
            if not current or current <= 0:
                continue
            factor = target / current
            block_sums = 0
            for head, items in blocks:
                for r in items:
                    r.values[p] = round(r.values[p] * factor)
                if head is not None:
                    head.values[p] = sum(r.values[p] for r in items) if items else round(head.values[p] * factor)
                block_sums += head.values[p] if head is not None else sum(r.values[p] for r in items)
            total_row.values[p] = block_sums

    def income_statement(self, n_periods: int = 2, bank: bool = False,
                         scales: Sequence[float] | None = None) -> list[StmtRow]:
        """An income statement with derived lines (gross profit, operating income, net income) computed.

        ``scales`` multiplies each column's drawn amounts, e.g. ``[1, 3, 1, 3]`` for 3개월/누적 columns of a
        third quarter."""
        n = n_periods

        def v(lo, hi, neg=0.0):
            return self._values(n, lo, hi, neg, scales)

        def sub(a, b):
            return [x - y for x, y in zip(a, b)]

        def add(*xs):
            return [sum(t) for t in zip(*xs)]

        rows: list[StmtRow] = []
        if bank:
            ii, ie = v(50_000, 3_000_000), None
            ie = [round(x * self.rng.uniform(0.45, 0.7)) for x in ii]
            nii = sub(ii, ie)
            fi = v(5_000, 300_000)
            fe = [round(x * self.rng.uniform(0.2, 0.6)) for x in fi]
            nfi = sub(fi, fe)
            other = v(1_000, 80_000, 0.4)
            prov = [round(x * self.rng.uniform(0.05, 0.2)) for x in nii]
            ga = [round(x * self.rng.uniform(0.35, 0.55)) for x in nii]
            op = sub(add(nii, nfi, other), add(prov, ga))
            nonop = v(100, 20_000, 0.5)
            pbt = add(op, nonop)
            tax = [max(0, round(x * 0.24)) for x in pbt]
            ni = sub(pbt, tax)
            spec = [
                ("순이자이익", 0, nii, "group"), ("이자수익", 1, ii, "item"), ("이자비용", 1, ie, "item"),
                ("순수수료이익", 0, nfi, "group"), ("수수료수익", 1, fi, "item"), ("수수료비용", 1, fe, "item"),
                ("기타영업손익", 0, other, "group"), ("신용손실충당금전입액", 0, prov, "group"),
                ("일반관리비", 0, ga, "group"), ("영업이익", 0, op, "total"), ("영업외손익", 0, nonop, "group"),
                ("법인세비용차감전순이익", 0, pbt, "total"), ("법인세비용", 0, tax, "group"),
                ("당기순이익", 0, ni, "total"),
            ]
        else:
            rev = v(1_000, 5_000_000)
            cogs = [round(x * self.rng.uniform(0.55, 0.9)) for x in rev]
            gp = sub(rev, cogs)
            sga = [round(x * self.rng.uniform(0.4, 1.1)) for x in gp]
            op = sub(gp, sga)
            oi, oe, fin_i, fin_e = v(10, 50_000), v(10, 50_000), v(10, 40_000), v(10, 60_000)
            pbt = sub(add(op, oi, fin_i), add(oe, fin_e))
            tax = [max(0, round(x * 0.22)) for x in pbt]
            ni = sub(pbt, tax)
            spec = [
                ("매출액", 0, rev, "group"), ("매출원가", 0, cogs, "group"), ("매출총이익", 0, gp, "total"),
                ("판매비와관리비", 0, sga, "group"), ("영업이익(손실)", 0, op, "total"), ("기타수익", 0, oi, "group"),
                ("기타비용", 0, oe, "group"), ("금융수익", 0, fin_i, "group"), ("금융비용", 0, fin_e, "group"),
                ("법인세비용차감전순이익(손실)", 0, pbt, "total"), ("법인세비용", 0, tax, "group"),
                ("당기순이익(손실)", 0, ni, "total"),
            ]
        top = 0
        for name, level, values, kind in spec:
            if level == 0 and kind != "total":
                name = self.numbered(name, 0, top)
                top += 1
            rows.append(StmtRow(name, level, list(values), kind))
        return rows

    def cash_flow(self, n_periods: int = 2, bank: bool = False, max_items: int = 5) -> list[StmtRow]:
        """Cash-flow statement: section rows (with their totals), items, then change and ending cash."""
        sections = vocab.BANK_CF_SECTIONS if bank else vocab.CF_SECTIONS
        rows: list[StmtRow] = []
        net = [0] * n_periods
        for si, (section, items) in enumerate(sections):
            chosen = self.pick(items, self.randint(3, min(max_items, len(items))))
            item_rows = [StmtRow(self.numbered(name, 1, ii), 1, self._values(n_periods, 50, 400_000, 0.45))
                         for ii, name in enumerate(chosen)]
            total = [sum(r.values[p] for r in item_rows) for p in range(n_periods)]
            rows.append(StmtRow(self.numbered(section, 0, si), 0, total, "section"))
            rows.extend(item_rows)
            net = [a + b for a, b in zip(net, total)]
        begin = self._values(n_periods, 5_000, 900_000, 0.0)
        begin = [max(b, -x + 1) for b, x in zip(begin, net)]
        rows.append(StmtRow(self.numbered("현금및현금성자산의 증감", 0, len(sections)), 0, net, "total"))
        rows.append(StmtRow(self.numbered("기초 현금및현금성자산", 0, len(sections) + 1), 0, begin, "item"))
        rows.append(StmtRow(self.numbered("기말 현금및현금성자산", 0, len(sections) + 2), 0,
                            [a + b for a, b in zip(begin, net)], "total"))
        return rows

    def equity_changes(self, columns: Sequence[str], n_events: int = 4) -> dict[str, Any]:
        """Statement of changes in equity: ``{"columns", "blocks"}``; each block is one year with an opening
        row, event rows and a closing row; every row has one value per column plus the row total."""
        cols = list(columns)
        blocks = []
        opening = [self.money(500, 900_000, 0.15 if c.startswith("기타") or c == "자본조정" else 0.0) for c in cols]
        for i in range(2):
            year = self.fy - 1 + i
            events = self.pick(vocab.EQUITY_EVENTS, n_events)
            rows = [(f"{year}.01.01 (기초)", opening)]
            closing = list(opening)
            for ev in events:
                vals = [self.money(10, 80_000, 0.4) if self.chance(0.45) else 0 for _ in cols]
                if not any(vals):
                    vals[-1] = self.money(10, 80_000, 0.4)
                rows.append((ev, vals))
                closing = [a + b for a, b in zip(closing, vals)]
            rows.append((f"{year}.12.31 (기말)", closing))
            blocks.append({"year": year, "rows": [(n, v, sum(v)) for n, v in rows]})
            opening = closing
        return {"columns": cols, "blocks": blocks}

    def breakdown(self, groups, n_values: int, max_groups: int = 4, max_items: int = 4,
                  lo: float = 50, hi: float = 500_000) -> list[dict[str, Any]]:
        """Groups of items with ``n_values`` amounts each and a subtotal per group (sums add up)."""
        out = []
        for name, items in self.pick(groups, self.randint(2, max_groups)):
            chosen = self.pick(items, self.randint(min(2, len(items)), min(max_items, len(items))))
            rows = [(it, [self.money(lo, hi) for _ in range(n_values)]) for it in chosen]
            total = [sum(r[1][j] for r in rows) for j in range(n_values)]
            out.append({"name": name, "items": rows, "total": total})
        return out

    def series(self, n: int, lo: float = 50, hi: float = 500_000, neg: float = 0.0) -> list[int]:
        return [self.money(lo, hi, neg) for _ in range(n)]


# ----------------------------------------------------------------------------- documents


@dataclass
class SyntheticDocument:
    """One generated table: the full HTML page, its label (normalised table), and what it is."""

    source: str
    template: str
    seed: int
    html: str
    label: str
    nesting_level: int
    expected_nesting_level: int
    merges: dict[str, int]
    rows: int
    cells: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def derive_seed(source: str, seed: int, shard: int, index: int) -> int:
    """Seed of sample ``index`` of ``shard``: a 63-bit integer from SHA-256, independent of shard size."""
    digest = hashlib.sha256(f"{source}|{seed}|{shard}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@functools.lru_cache(maxsize=None)
def make_environment(*dirs: str) -> jinja2.Environment:
    """A Jinja2 environment over ``dirs`` (searched in order), autoescaping, strict about undefined names,
    with a ``zip`` filter (``a|zip(b)`` -> list of pairs)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(dirs)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["zip"] = lambda a, b: list(zip(a, b))
    return env


def synthetic_environment() -> jinja2.Environment:
    return make_environment(str(TEMPLATES_DIR))


def _merge_counts(tables) -> dict[str, int]:
    rowspan = colspan = 0
    for top in tables:
        for t in top.iter_tables():
            for c in t.cells():
                rowspan += c.rowspan > 1
                colspan += c.colspan > 1
    return {"rowspan_cells": rowspan, "colspan_cells": colspan}


def build_document(env: jinja2.Environment, spec: TemplateSpec, sample_seed: int, source: str) -> SyntheticDocument:
    """Render template ``spec`` with ``random.Random(sample_seed)``; label and checks come from the HTML.

    ``problems`` lists what makes the document unusable (not exactly one top-level table, an inconsistent
    grid, a nesting level other than the template's); template errors raise, since they are bugs.
    """
    rng = random.Random(sample_seed)
    style = pick_style(rng, spec.border_modes)
    g = TableGen(rng)
    html = env.get_template(spec.name + TEMPLATE_SUFFIX).render(g=g, style=style, css=style_css(style), vocab=vocab)
    tables = parse_tables(html)
    problems: list[str] = []
    if len(tables) != 1:
        problems.append(f"template {spec.name} produced {len(tables)} top-level tables, expected 1")
    report = validate_tables(tables[:1])
    problems += report.problems
    level = tables[0].depth if tables else 0
    if level != spec.nesting_level:
        problems.append(f"template {spec.name} produced nesting level {level}, declared {spec.nesting_level}")
    return SyntheticDocument(
        source=source,
        template=spec.name,
        seed=sample_seed,
        html=html,
        label=table_to_html(tables[0]) if tables else "",
        nesting_level=level,
        expected_nesting_level=spec.nesting_level,
        merges=_merge_counts(tables[:1]),
        rows=report.row_count,
        cells=report.cell_count,
        problems=problems,
    )


def plan_shard(
    source: str, specs: Sequence[TemplateSpec], shard: int, count: int, seed: int
) -> list[tuple[int, TemplateSpec, int]]:
    """``(index, template, sample_seed)`` for each sample of a shard.

    Each shard cycles through the templates in its own seeded order, so templates are balanced within a
    shard and sample ``i`` does not depend on ``count``.
    """
    if count < 0 or shard < 0:
        raise ValueError(f"shard and count must be >= 0 (got shard={shard}, count={count})")
    if not specs:
        raise ValueError("no templates selected")
    order = list(specs)
    random.Random(derive_seed(source + ":order", seed, shard, 0)).shuffle(order)
    return [(i, order[i % len(order)], derive_seed(source, seed, shard, i)) for i in range(count)]


def select_templates(specs: Sequence[TemplateSpec], names: Sequence[str] | None) -> list[TemplateSpec]:
    if names is None:
        return list(specs)
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown templates {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


def sample_filename(source: str, shard: int, index: int) -> str:
    return f"{source}_s{shard:03d}_{index:05d}.png"


def generate_shard(
    source: str,
    env: jinja2.Environment,
    specs: Sequence[TemplateSpec],
    shard: int,
    count: int,
    seed: int,
    renderer,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SourceResult, list[tuple[str, SyntheticDocument]]]:
    """Build and render one shard. Returns the result and ``(filename, document)`` of every accepted pair.

    Documents with problems become ``invalid_label`` rejects, render failures ``render_failed`` rejects.
    """
    t0 = time.perf_counter()
    plan = plan_shard(source, specs, shard, count, seed)
    docs = [(sample_filename(source, shard, i), i, build_document(env, spec, s, source)) for i, spec, s in plan]
    rejects: list[Reject] = []
    to_render = []
    for name, i, doc in docs:
        if doc.ok:
            to_render.append((name, i, doc))
        else:
            rejects.append(Reject(source, name, "load", "invalid_label", "; ".join(doc.problems)[:500],
                                  extra={"template": doc.template, "seed": doc.seed}))
    results = renderer.render_many([d.html for _, _, d in to_render], progress=progress) if to_render else []
    pairs: list[RawPair] = []
    accepted: list[tuple[str, SyntheticDocument]] = []
    cached = 0
    for (name, i, doc), res in zip(to_render, results):
        meta = {
            "template": doc.template,
            "nesting_level": doc.nesting_level,
            "seed": doc.seed,
            "base_seed": seed,
            "shard": shard,
            "index": i,
            "merges": doc.merges,
            "generator_version": GENERATOR_VERSION,
            "html_sha256": sha256_text(doc.html),
        }
        if isinstance(res, Exception) or not getattr(res, "image_path", None):
            detail = f"{getattr(res, 'reason', 'error')}: {getattr(res, 'message', res)}"
            rejects.append(Reject(source, name, "load", "render_failed", detail[:500],
                                  extra={"template": doc.template, "seed": doc.seed}))
            continue
        cached += bool(res.cached)
        meta["image"] = {"sha256": res.sha256, "width": res.width, "height": res.height}
        pairs.append(RawPair(source, name, res.image_path, doc.label, meta))
        accepted.append((name, doc))
    stats = {
        "shard": shard,
        "count": count,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "pairs": len(pairs),
        "rejects": len(rejects),
        "cached": cached,
        "by_template": dict(sorted(Counter(d.template for _, d in accepted).items())),
        "by_nesting_level": {str(k): v for k, v in sorted(Counter(d.nesting_level for _, d in accepted).items())},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return SourceResult(pairs=pairs, rejects=rejects, stats=stats), accepted


def generate_synthetic(
    shard: int,
    count: int,
    seed: int,
    renderer,
    templates: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SourceResult:
    """The ``synthetic`` source: ``count`` tables of shard ``shard`` (files ``synthetic_s003_00042.png``).

    ``renderer`` is an :class:`ocr_ft.render.Renderer` (anything with its ``render_many``); ``templates``
    restricts the template names (default: all of :data:`SYNTHETIC_TEMPLATES`). Pair metadata: template,
    nesting_level, seed (the sample's), base_seed, shard, index, merges, generator_version, html_sha256, image.
    """
    specs = select_templates(SYNTHETIC_TEMPLATES, templates)
    result, _ = generate_shard("synthetic", synthetic_environment(), specs, shard, count, seed, renderer, progress)
    return result
