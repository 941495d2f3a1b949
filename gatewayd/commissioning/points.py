"""`gatewayd import-points`: the plant's point table becomes the `tags:` of a device in the YAML config.

The columns are found by their headings (指标编码, 位号, 名称, 单位, 量程下限/上限, 低低报/低报/高报/高高报,
重大危险源编码, 设备编码, 生产单元, and the register's 寄存器类型, 寄存器地址, 数据类型, 字节序, 系数), or by
the headings a mapping file names. Every row is checked with the validator's own tables (the common tag
keys, the Modbus tag keys, the alarm limits), so what is refused here is what check-config would refuse,
named by sheet, row and column instead of YAML line. A column with no key in the config is reported and
left out, never turned into a key the config does not have. Any bad row and nothing is written.
"""

from __future__ import annotations

import re

import yaml
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.schema import ConfigIssue, Field, Invalid, Reader, text
from core.yamlload import load_yaml
from drivers.modbus import config as modbus
from gatewayd.commissioning.sheets import Cell, Sheet, read_sheets
from gatewayd.config.tables import TAG_FIELDS
from rules.config import parse_tag_alarms
from rules.model import DEFAULT_PRIORITIES, TagInfo

# column -> the headings it goes by, the usual one first (a mapping file's headings replace them)
HEADINGS: dict[str, tuple[str, ...]] = {
    "name": ("位号", "仪表位号", "tag"),
    "description": ("名称", "指标名称", "描述", "description"),
    "unit": ("单位", "unit"),
    "range_low": ("量程下限", "下限", "range_low"),
    "range_high": ("量程上限", "上限", "range_high"),
    "ll": ("低低报", "低低报警", "LL"),
    "l": ("低报", "低报警", "L"),
    "h": ("高报", "高报警", "H"),
    "hh": ("高高报", "高高报警", "HH"),
    "target_code": ("指标编码", "target_code"),
    "equipment_code": ("设备编码", "equipment_code"),
    "hazard_source_code": ("重大危险源编码", "危险源编码", "hazard_source_code"),
    "production_unit": ("生产单元", "production_unit"),
    "device": ("采集设备", "device"),
    "table": ("寄存器类型", "table"),
    "address": ("寄存器地址", "地址", "address"),
    "type": ("数据类型", "type"),
    "bit": ("位地址", "bit"),
    "order": ("字节序", "字节顺序", "order"),
    "scale": ("系数", "倍率", "scale"),
}
TEXT_COLUMNS = ("description", "unit", "target_code", "equipment_code", "hazard_source_code", "production_unit")
ALARM_COLUMNS = ("hh", "h", "l", "ll")
REGISTER_COLUMNS = ("table", "address", "type", "bit", "order", "scale")  # a Modbus register map
TABLES = {"holding": "holding", "input": "input", "coil": "coil", "discrete": "discrete",
          "保持寄存器": "holding", "输入寄存器": "input", "线圈": "coil", "离散输入": "discrete"}
# byte letters in wire order -> (byte_order, word_order); A is the most significant byte
ORDERS = {"ABCD": ("big", "big"), "CDAB": ("big", "little"), "BADC": ("little", "big"),
          "DCBA": ("little", "little"), "AB": ("big", "big"), "BA": ("little", "big")}
# a tag key the validator reports -> the columns it came from
KEY_COLUMNS = {"range": ("range_low", "range_high"), "byte_order": ("order",), "word_order": ("order",),
               "": ("address", "type", "table")}


def _headings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(text(str(item)) if isinstance(item, (int, float)) else text(item) for item in items)


MAPPING_FIELDS = {
    "sheet": Field(text, None, "read only this sheet of the workbook; default every sheet with a 位号 column"),
    "columns": Field(lambda value: value, None, "column -> its heading (or a list of headings) in this table"),
}
COLUMN_FIELDS = {column: Field(_headings, None, f"default: {', '.join(names)}") for column, names in HEADINGS.items()}


@dataclass(frozen=True)
class Mapping:
    """Which headings name which column, and which sheet to read."""

    headings: dict[str, tuple[str, ...]]
    sheet: str | None = None


class MappingError(Exception):
    """The mapping file is invalid; the message has one `file:line: key: what is valid` per issue."""


def load_mapping(path: Path | None) -> Mapping:
    if path is None:
        return Mapping(dict(HEADINGS))
    try:
        document = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MappingError(f"{path}: {exc}") from exc
    reader = Reader(str(path))
    values = reader.section(document, "", 1, MAPPING_FIELDS) or {}
    columns = reader.section(values.get("columns"), "columns", Reader.key_line(document, "columns"),
                             COLUMN_FIELDS) or {}
    if not reader.ok:
        raise MappingError("\n".join(str(issue) for issue in reader.issues))
    given = {column: headings for column, headings in columns.items() if headings is not None}
    return Mapping({**HEADINGS, **given}, values.get("sheet"))


@dataclass
class Imported:
    """The tags in table order, what was left out (notes), and every bad row (problems; then no tags)."""

    tags: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Columns:
    """Where each known column sits in a sheet (0-based), its heading, and the first data row."""

    sheet: Sheet
    index: dict[str, int]
    heading: dict[int, str]
    first_row: int  # 0-based

    def cell(self, row: list[Cell], column: str) -> Cell:
        return row[self.index[column]] if column in self.index else None

    def where(self, row: int, column: str) -> str:
        index = self.index[column]
        return f"sheet {self.sheet.name}, row {row + 1}, column {column_letter(index)} ({self.heading[index]})"


def column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _key(heading: Any) -> str:
    return re.sub(r"\s+", "", str(heading)).casefold()


def find_columns(sheet: Sheet, mapping: Mapping, problems: list[str], notes: list[str]) -> Columns | None:
    """The header: the first row where two or more headings are known, with the rows right under it that
    also are (a two-row header); a column's heading is its upper and lower cell joined (量程+下限), or
    the lower one alone, or the upper one."""
    lookup = {_key(name): column for column, names in mapping.headings.items() for name in names}
    known = lambda row: sum(cell is not None and _key(cell) in lookup for cell in row) >= 2  # noqa: E731
    start = next((number for number, row in enumerate(sheet.rows) if known(row)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(sheet.rows) and known(sheet.rows[end]):
        end += 1
    header = [list(row) for row in sheet.rows[start:end]]
    for upper in header[:-1]:  # a CSV keeps a merged heading in its first column only
        for index in range(1, len(upper)):
            if upper[index] is None and header[-1][index] is not None:
                upper[index] = upper[index - 1]
    index: dict[str, int] = {}
    heading: dict[int, str] = {}
    for position in range(len(sheet.rows[start])):
        parts = list(dict.fromkeys(str(row[position]) for row in header if row[position] is not None))
        if not parts:
            continue
        heading[position] = "/".join(parts)
        column = next((lookup[_key(name)] for name in ("".join(parts), parts[-1], *reversed(parts))
                       if _key(name) in lookup), None)
        if column is None:
            notes.append(f"sheet {sheet.name}, column {column_letter(position)} ({heading[position]}): no key in "
                         "the config holds it; left out")
        elif column in index:
            problems.append(f"sheet {sheet.name}, row {end}, column {column_letter(position)} "
                            f"({heading[position]}): column {column_letter(index[column])} "
                            f"({heading[index[column]]}) is already read as {column}; keep one")
        else:
            index[column] = position
    if "name" not in index:
        problems.append(f"sheet {sheet.name}, row {start + 1}: no tag column ({', '.join(mapping.headings['name'])}); "
                        "name it in a mapping file (--mapping) under columns: name:")
        return None
    return Columns(sheet, index, heading, end)


def import_points(path: Path, mapping: Mapping, device: str | None = None) -> Imported:
    """Read the table at `path` into tags; `device` keeps the rows of that device (column 采集设备).
    Every problem starts with the file's name."""
    result = Imported()
    _import(path, mapping, device, result)
    result.problems = [problem if problem.startswith(f"{path}: ") else f"{path}: {problem}"
                       for problem in result.problems]
    return result


def _import(path: Path, mapping: Mapping, device: str | None, result: Imported) -> None:
    sheets = read_sheets(path)
    if mapping.sheet is not None:
        sheets = [sheet for sheet in sheets if sheet.name == mapping.sheet]
        if not sheets:
            result.problems.append(f"no sheet {mapping.sheet!r}")
            return
    tables = [columns for sheet in sheets
              if (columns := find_columns(sheet, mapping, result.problems, result.notes)) is not None]
    if not tables and not result.problems:
        result.problems.append(f"no sheet has a header row with a tag column ({', '.join(mapping.headings['name'])})")
    rows = [(columns, number) for columns in tables for number in range(columns.first_row, len(columns.sheet.rows))
            if any(cell is not None for cell in columns.sheet.rows[number])]
    rows = _of_device(rows, device, result.problems)
    if result.problems:  # the rows of several devices would clash; which ones to read is asked first
        return
    checked = [(columns, number, _row(columns, number, result.problems)) for columns, number in rows]
    _check_names(checked, result.problems)
    _check_registers(checked, result.problems)
    if not result.problems:
        result.tags = [tag for _, _, tag in checked if tag is not None]
    if not result.problems and not result.tags:
        result.problems.append("the table lists no tags")


def _of_device(rows: list[tuple[Columns, int]], device: str | None,
               problems: list[str]) -> list[tuple[Columns, int]]:
    named = {str(columns.cell(columns.sheet.rows[number], "device") or "") for columns, number in rows
             if "device" in columns.index}
    named.discard("")
    if device is None:
        if len(named) > 1:
            problems.append(f"the table lists the devices {', '.join(sorted(named))}: choose one with --device")
        return rows
    if not any("device" in columns.index for columns, _ in rows):
        problems.append(f"--device {device}: the table has no device column ({', '.join(HEADINGS['device'])})")
        return []
    if device not in named:
        problems.append(f"--device {device}: no row names it; the table lists {', '.join(sorted(named)) or 'none'}")
        return []
    return [(columns, number) for columns, number in rows
            if str(columns.cell(columns.sheet.rows[number], "device") or "") == device]


def _number(cell: Cell) -> float | int:
    if isinstance(cell, bool):
        raise Invalid(f"expected a number, got {cell!r}")
    if isinstance(cell, (int, float)):
        value = cell
    else:
        try:
            value = float(str(cell).replace(",", ""))
        except ValueError:
            raise Invalid(f"expected a number, got {cell!r}") from None
    return int(value) if float(value).is_integer() else float(value)


def _whole(cell: Cell) -> int:
    value = _number(cell)
    if not isinstance(value, int):
        raise Invalid(f"expected a whole register address, got {cell!r}")
    return value


def _text(cell: Cell) -> str:
    return str(_number(cell)) if isinstance(cell, float) else str(cell)


def _choice(choices: dict[str, Any], what: str) -> Any:
    def convert(cell: Cell) -> Any:
        for name, value in choices.items():
            if _key(name) == _key(cell):
                return value
        raise Invalid(f"{cell!r} is not a {what}; one of: {', '.join(choices)}")
    return convert


READERS = {"range_low": _number, "range_high": _number, "scale": _number, "address": _whole, "bit": _whole,
           "type": _choice({name: name for name in (*modbus.REGISTER_TYPES, "bool")}, "data type"),
           "table": _choice(TABLES, "register table"), "order": _choice(ORDERS, "byte order"),
           **{column: _number for column in ALARM_COLUMNS}, **{column: _text for column in ("name", *TEXT_COLUMNS)}}


def _row(columns: Columns, number: int, problems: list[str]) -> dict[str, Any] | None:
    """One row as a tag in the config's key order, checked by the validator's tables; None if bad."""
    row = columns.sheet.rows[number]
    cells: dict[str, Any] = {}
    bad = len(problems)
    for column, read in READERS.items():
        cell = columns.cell(row, column)
        if cell is None:
            continue
        try:
            cells[column] = read(cell)
        except Invalid as exc:
            problems.append(f"{columns.where(number, column)}: {exc}")
    if "name" not in cells:
        problems.append(f"{columns.where(number, 'name')}: a row with values needs its tag")
    given = [column for column in ("range_low", "range_high") if column in cells]
    if len(given) == 1:
        missing = "range_high" if given == ["range_low"] else "range_low"
        where = columns.where(number, missing) if missing in columns.index else \
            f"sheet {columns.sheet.name}, row {number + 1}"
        problems.append(f"{where}: give the range's low and high, or neither")
    if len(problems) > bad:
        return None
    tag = _tag(cells)
    issues = _validate(tag, any(column in columns.index for column in REGISTER_COLUMNS))
    for issue in issues:
        problems.append(f"{_where_of(columns, number, issue)}: {issue.message}")
    return None if issues else tag


def _tag(cells: dict[str, Any]) -> dict[str, Any]:
    tag: dict[str, Any] = {"name": cells["name"]}
    tag.update({column: cells[column] for column in ("description", "unit") if column in cells})
    if "range_low" in cells:
        tag["range"] = [cells["range_low"], cells["range_high"]]
    tag.update({column: cells[column] for column in TEXT_COLUMNS[2:] if column in cells})
    tag.update({column: cells[column] for column in ("table", "address", "type", "bit") if column in cells})
    if "order" in cells:
        tag["byte_order"], tag["word_order"] = cells["order"]
    if "scale" in cells:
        tag["scale"] = cells["scale"]
    alarms = {column: cells[column] for column in ALARM_COLUMNS if column in cells}
    if alarms:
        tag["alarms"] = alarms
    return tag


def _validate(tag: dict[str, Any], registers: bool) -> list[ConfigIssue]:
    """What check-config would say of this tag (keys, alarm limits, and with a register map its Modbus
    address); a table without register columns gives tags whose address keys the driver's docs name."""
    reader = Reader("")
    fields = {**TAG_FIELDS, **modbus.TAG_FIELDS} if registers else TAG_FIELDS
    values = reader.section(tag, "", 0, fields)
    if values is not None and reader.ok:
        if registers:
            modbus.build_address(values, reader, "", 0)
        low, high = values["range"] or (None, None)
        parse_tag_alarms(tag.get("alarms"), "alarms", 0, reader, TagInfo(tag["name"], values["unit"], low, high),
                         tuple(DEFAULT_PRIORITIES))
    return reader.issues


def _where_of(columns: Columns, number: int, issue: ConfigIssue) -> str:
    """The column a validator issue is about: its key's column, else the first one present."""
    key = issue.path.split(".")[-1] if issue.path.startswith("alarms.") else issue.path.split(".")[0]
    candidates: Iterable[str] = KEY_COLUMNS.get(key, ALARM_COLUMNS if key == "alarms" else (key,))
    present = [column for column in candidates if column in columns.index]
    if present:
        return columns.where(number, present[0])
    return f"sheet {columns.sheet.name}, row {number + 1}"


def _check_names(checked: list[tuple[Columns, int, dict[str, Any] | None]], problems: list[str]) -> None:
    """Each tag once, counting the rows that are bad for other reasons too (both rows need fixing)."""
    seen: dict[str, str] = {}
    for columns, number, _ in checked:
        name = columns.cell(columns.sheet.rows[number], "name")
        if name is None:
            continue
        name = _text(name)
        if name in seen:
            problems.append(f"{columns.where(number, 'name')}: tag {name} is already on {seen[name]}")
        else:
            seen[name] = f"sheet {columns.sheet.name}, row {number + 1}"


def _check_registers(checked: list[tuple[Columns, int, dict[str, Any] | None]], problems: list[str]) -> None:
    """No two good tags on the same registers: the driver's own check, its issues mapped back to rows."""
    reader = Reader("")
    addresses = []
    for position, (_, _, tag) in enumerate(checked):
        if tag is not None and "address" in tag:
            values = reader.section(tag, "", 0, {**TAG_FIELDS, **modbus.TAG_FIELDS})
            addresses.append((tag["name"], str(position), 0, modbus.build_address(values, reader, "", 0)))
    modbus.check_tags(addresses, reader)
    for issue in reader.issues:
        columns, number, _ = checked[int(issue.path)]
        problems.append(f"{columns.where(number, 'address')}: {issue.message}")


def render(tags: list[dict[str, Any]], source: str) -> str:
    """The tags as YAML, a list to go under a device's `tags:` (indent it by the device's depth)."""
    body = yaml.safe_dump(tags, allow_unicode=True, sort_keys=False, default_flow_style=None, width=120)
    return f"# tags from {source} (gatewayd import-points): the list under a device's `tags:`\n{body}"
