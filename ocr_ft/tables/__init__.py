"""HTML table model: parse, grid, normalise, validate, nesting depth, repair. Plain Python (lxml)."""

from .model import (
    MAX_ELEMENT_DEPTH,
    MAX_GRID_SLOTS,
    MAX_SPAN,
    MAX_SPAN_DIGITS,
    Cell,
    Grid,
    LabelTruncated,
    TableTooLarge,
    check_table_size,
    element_depth,
    grid_slot_count,
    parse_span,
    Row,
    Table,
    TableParseError,
    build_grid,
    nesting_depth,
    normalize_text,
    parse_document,
    parse_tables,
)
from .normalize import normalize_html, normalize_tables, table_to_html
from .repair import RepairResult, repair_html
from .validate import ValidationReport, validate_label, validate_tables

__all__ = [
    "MAX_ELEMENT_DEPTH", "MAX_GRID_SLOTS", "MAX_SPAN", "MAX_SPAN_DIGITS", "LabelTruncated", "TableTooLarge",
    "check_table_size", "element_depth", "grid_slot_count", "parse_span",
    "Cell", "Grid", "Row", "Table", "TableParseError", "build_grid", "nesting_depth", "normalize_text",
    "parse_document", "parse_tables", "normalize_html", "normalize_tables", "table_to_html", "RepairResult",
    "repair_html", "ValidationReport", "validate_label", "validate_tables",
]
