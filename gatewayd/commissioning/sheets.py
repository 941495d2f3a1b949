"""A point table as rows of cells, from an .xlsx workbook or a .csv file, with the row numbers a person sees.

Plants keep their point tables in Excel, often with a two-row header whose upper cells are merged over
several columns (量程 over 下限 and 上限, 报警值 over 低低报 ... 高高报); exported to CSV, the same header
leaves the merged cell's text in its first column only. Both come out here as plain rows: a merged
cell's value is copied to every cell it covers, so the header reader sees each column's full heading.
openpyxl is imported only when a workbook is read; a CSV is UTF-8 (with or without BOM) or GB18030,
the two encodings Chinese Excel writes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Cell = str | int | float | None


class SheetError(Exception):
    """The file cannot be read as a point table at all (missing, not a workbook, unknown encoding)."""


@dataclass(frozen=True)
class Sheet:
    """One sheet: `rows[i]` is the sheet's row `i + 1`, every row as long as the widest."""

    name: str
    rows: list[list[Cell]]


def read_sheets(path: Path) -> list[Sheet]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return [_read_csv(path)]
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path)
    raise SheetError(f"{path}: a point table is an .xlsx workbook or a .csv file, not {suffix or 'no suffix'}")


def _read_csv(path: Path) -> Sheet:
    data = _read_bytes(path)
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise SheetError(f"{path}: neither UTF-8 nor GB18030 text; save the sheet as CSV UTF-8")
    rows: list[list[Cell]] = [list(row) for row in csv.reader(io.StringIO(text, newline=""))]
    return Sheet(path.stem, _square(rows))


def _read_xlsx(path: Path) -> list[Sheet]:
    import openpyxl  # only `import-points` with a workbook needs it
    from openpyxl.utils.exceptions import InvalidFileException
    import zipfile

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(_read_bytes(path)), data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise SheetError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    sheets = []
    for worksheet in workbook.worksheets:
        rows: list[list[Any]] = [list(row) for row in worksheet.iter_rows(values_only=True)]
        for merged in worksheet.merged_cells.ranges:
            value = worksheet.cell(merged.min_row, merged.min_col).value
            for row in range(merged.min_row, merged.max_row + 1):
                for column in range(merged.min_col, merged.max_col + 1):
                    rows[row - 1][column - 1] = value
        sheets.append(Sheet(worksheet.title, _square(rows)))
    return sheets


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SheetError(f"{path}: {exc.strerror or exc}") from exc


def _square(rows: list[list[Cell]]) -> list[list[Cell]]:
    width = max((len(row) for row in rows), default=0)
    return [[_clean(cell) for cell in row] + [None] * (width - len(row)) for row in rows]


def _clean(cell: Any) -> Cell:
    """Empty text is an empty cell; text loses the spaces around it; anything else stays as the sheet has it."""
    if isinstance(cell, str):
        return cell.strip() or None
    if cell is None or isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return cell
    return str(cell)
