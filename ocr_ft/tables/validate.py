"""Validation report of one label: the seed's ``metadata.validation`` fields plus grid consistency."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .model import Table, TableParseError, TableTooLarge, build_grid, parse_tables


@dataclass
class ValidationReport:
    table_count: int = 0
    row_count: int = 0
    cell_count: int = 0
    has_rowspan: bool = False
    has_colspan: bool = False
    text_length: int = 0
    nesting_level: int = 0
    grid_consistent: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.table_count > 0 and self.grid_consistent

    def to_dict(self) -> dict:
        return asdict(self)

    def seed_fields(self) -> dict:
        """The six fields of the seed's ``metadata.validation``."""
        d = asdict(self)
        return {k: d[k] for k in ("table_count", "row_count", "cell_count", "has_rowspan", "has_colspan", "text_length")}


def validate_tables(tables: list[Table]) -> ValidationReport:
    rep = ValidationReport(table_count=len(tables))
    if not tables:
        rep.problems.append("no <table> element in the label")
        return rep
    for top in tables:
        rep.nesting_level = max(rep.nesting_level, top.depth)
        for depth_table in top.iter_tables():
            is_top = depth_table is top
            if is_top:
                rep.row_count += len(depth_table.rows)
            try:
                grid = build_grid(depth_table)
            except TableTooLarge as exc:
                rep.problems.append(f"{'table' if is_top else 'nested table'}: {exc}")
                continue
            where = "table" if is_top else "nested table"
            rep.problems.extend(f"{where}: {p}" for p in grid.problems)
            if depth_table.stray_text:
                rep.problems.append(f"{where}: text outside any cell: {depth_table.stray_text[:40]!r}")
            for cell in depth_table.cells():
                rep.cell_count += 1
                rep.has_rowspan |= cell.rowspan > 1
                rep.has_colspan |= cell.colspan > 1
                rep.text_length += len(cell.text)
    rep.grid_consistent = not rep.problems
    return rep


def validate_label(html: str | bytes) -> ValidationReport:
    """Validate ``html``; an unparseable label gives a report with the parse problem, never an exception."""
    try:
        tables = parse_tables(html)
    except (TableParseError, TableTooLarge) as exc:
        return ValidationReport(problems=[str(exc)])
    return validate_tables(tables)
