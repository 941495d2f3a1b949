"""`gatewayd import-points`: a realistic point table, as a workbook with merged headings and as CSV, becomes
tags that check-config accepts; every bad row is named by sheet, row and column, and then nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from core.yamlload import load_yaml
from gatewayd.commissioning.points import import_points, load_mapping, MappingError
from gatewayd.config import load_config

ROOT = Path(__file__).resolve().parent.parent
TITLE = ["XX化工有限公司 罐区 点位表"]
UPPER = ["序号", "指标编码", "位号", "名称", "单位", "量程", "量程", "报警值", "报警值", "报警值", "报警值",
         "重大危险源编码", "设备编码", "寄存器地址", "数据类型", "字节序", "采集设备", "备注"]
LOWER = [None, None, None, None, None, "下限", "上限", "低低报", "低报", "高报", "高高报",
         None, None, None, None, None, None, None]
ROWS = [
    [1, "T101_LT101", "LT101", "T-101 液位", "m", 0, 10, 1, 1.5, 8.5, 9, "HS-T101", "T-101", 0, "float32", "ABCD",
     "tank-plc", None],
    [2, "T101_GT101", "GT101", "T-101 可燃气体", "%LEL", 0, 100, None, None, 20, 50, "HS-T101", "T-101", 2,
     "float32", "CDAB", "tank-plc", "一级报警 20%LEL"],
    [None] * 18,
    [3, "T101_AT102", "AT102", "T-101 硫化氢", "ppm", 0, 100, None, None, 10, 20, "HS-T101", "T-101", 4, "UINT16",
     None, "tank-plc", None],
    [4, "T101_TT101", "TT101", "T-101 温度", "°C", -20, 150, None, None, None, None, "HS-T101", "T-101", 5, "int16",
     "BA", "tank-plc", None],
    [5, "P201_PT201", "PT201", "泵 P-201 出口压力", "MPa", 0, 2.5, None, 0.2, 1.6, None, None, "P-201", 0, "float32",
     "DCBA", "pump-plc", None],
]
EXPECTED_TANK = [
    {"name": "LT101", "description": "T-101 液位", "unit": "m", "range": [0, 10], "target_code": "T101_LT101",
     "equipment_code": "T-101", "hazard_source_code": "HS-T101", "address": 0, "type": "float32",
     "byte_order": "big", "word_order": "big", "alarms": {"hh": 9, "h": 8.5, "l": 1.5, "ll": 1}},
    {"name": "GT101", "description": "T-101 可燃气体", "unit": "%LEL", "range": [0, 100], "target_code": "T101_GT101",
     "equipment_code": "T-101", "hazard_source_code": "HS-T101", "address": 2, "type": "float32",
     "byte_order": "big", "word_order": "little", "alarms": {"hh": 50, "h": 20}},
    {"name": "AT102", "description": "T-101 硫化氢", "unit": "ppm", "range": [0, 100], "target_code": "T101_AT102",
     "equipment_code": "T-101", "hazard_source_code": "HS-T101", "address": 4, "type": "uint16",
     "alarms": {"hh": 20, "h": 10}},
    {"name": "TT101", "description": "T-101 温度", "unit": "°C", "range": [-20, 150], "target_code": "T101_TT101",
     "equipment_code": "T-101", "hazard_source_code": "HS-T101", "address": 5, "type": "int16",
     "byte_order": "little", "word_order": "big"},
]


def workbook(path: Path, rows: list[list], sheet: str = "罐区") -> Path:
    """A point table as plants write it: a title over the width, a two-row header whose single headings span
    both rows and whose group headings (量程, 报警值) span their columns, and the codes the first two rows
    share merged over both."""
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = sheet
    ws.append(TITLE)
    ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(UPPER))
    ws.append([heading if LOWER[index] is None else None for index, heading in enumerate(UPPER)])
    ws.append(LOWER)
    ws.cell(2, 6).value, ws.cell(2, 8).value = "量程", "报警值"
    ws.merge_cells("F2:G2")
    ws.merge_cells("H2:K2")
    for column, lower in enumerate(LOWER, start=1):
        if lower is None:
            ws.merge_cells(start_row=2, start_column=column, end_row=3, end_column=column)
    for row in rows:
        ws.append(row)
    ws.merge_cells("L4:L5")  # one hazard source and one vessel for the rows of T-101, as plants merge them
    ws.merge_cells("M4:M5")
    book.save(path)
    return path


def csv_table(path: Path, rows: list[list], encoding: str) -> Path:
    """The same table saved as CSV by Excel: a merged heading's text stays in its first column only."""
    upper = [heading if index in (5, 7) or LOWER[index] is None else "" for index, heading in enumerate(UPPER)]
    lines = [TITLE[0], ",".join(upper), ",".join(cell or "" for cell in LOWER)]
    lines += [",".join("" if cell is None else str(cell) for cell in row) for row in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


@pytest.fixture(params=["xlsx", "utf-8-sig", "gb18030"])
def table(request, tmp_path) -> Path:
    if request.param == "xlsx":
        return workbook(tmp_path / "points.xlsx", ROWS)
    return csv_table(tmp_path / "points.csv", ROWS, request.param)


def test_tags_from_the_table(table):
    imported = import_points(table, load_mapping(None), "tank-plc")
    assert imported.problems == []
    assert imported.tags == EXPECTED_TANK
    assert any("(序号)" in note for note in imported.notes) and any("(备注)" in note for note in imported.notes)


def test_every_device_of_the_table_must_be_chosen(table):
    imported = import_points(table, load_mapping(None))
    assert imported.tags == [] and imported.problems == [f"{table}: the table lists the devices pump-plc, "
                                                         "tank-plc: choose one with --device"]
    pump = import_points(table, load_mapping(None), "pump-plc")
    assert [tag["name"] for tag in pump.tags] == ["PT201"]
    assert pump.tags[0]["alarms"] == {"h": 1.6, "l": 0.2} and pump.tags[0]["byte_order"] == "little"


def gateway_config(tmp_path: Path, tags_yaml: str) -> Path:
    """A whole config whose one device takes the written tags, indented under its `tags:`."""
    indented = "".join(f"      {line}\n" for line in tags_yaml.splitlines())
    config = tmp_path / "gatewayd.yaml"
    config.write_text(f"""gateway:
  id: GW-IMPORT-01
devices:
  - name: tank-plc
    driver: modbus_tcp
    host: 10.0.0.5
    tags:
{indented}uplink:
  host: platform.example.org
  signing_key: /etc/gatewayd/signing.key
""", encoding="utf-8")
    return config


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gatewayd", *args], capture_output=True, text=True, cwd=ROOT)


def test_written_tags_pass_check_config_and_round_trip(table, tmp_path):
    out = tmp_path / "tags.yaml"
    done = run("import-points", str(table), "--device", "tank-plc", "-o", str(out))
    assert done.returncode == 0, done.stderr
    written = out.read_text(encoding="utf-8")
    assert load_yaml(written) == EXPECTED_TANK
    config = gateway_config(tmp_path, written)
    checked = run("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    loaded = {tag.name: tag for tag in load_config(config).tags}
    assert list(loaded) == [tag["name"] for tag in EXPECTED_TANK]
    for expected in EXPECTED_TANK:
        tag = loaded[expected["name"]]
        assert (tag.unit, tag.target_code, tag.hazard_source_code) == (expected["unit"], expected["target_code"],
                                                                        expected["hazard_source_code"])
        assert [tag.range_low, tag.range_high] == expected["range"]
        assert tag.address.address == expected["address"]
        limits = {level: getattr(tag.alarms, level) for level in ("hh", "h", "l", "ll")
                  if tag.alarms is not None and getattr(tag.alarms, level) is not None}
        assert limits == expected.get("alarms", {})


BROKEN = [
    [1, "T101_LT101", "LT101", "T-101 液位", "m", 0, 10, 1, 9.5, 8.5, 9, "HS-T101", "T-101", 0, "float32", "ABCD",
     "tank-plc", None],
    [2, "T101_GT101", "GT101", "T-101 可燃气体", "%LEL", 0, 100, None, None, 20, 50, "HS-T101", "T-101", "40x1",
     "float32", "CDAB", "tank-plc", None],
    [None] * 18,
    [3, "T101_AT102", "AT102", "T-101 硫化氢", "ppm", 0, 100, None, None, 10, 20, "HS-T101", "T-101", 4, "REAL",
     None, "tank-plc", None],
    [4, "T101_TT101", "TT101", "T-101 温度", "°C", -20, 150, None, None, None, None, "HS-T101", "T-101", 70000,
     "int16", "BA", "tank-plc", None],
    [5, "T101_TT102", "TT102", "T-101 温度 2", "°C", 150, None, None, None, None, None, "HS-T101", "T-101", 6,
     "int16", "ABDC", "tank-plc", None],
    [6, "T101_LT101B", "LT101", "again", "m", 0, 10, None, None, None, None, None, None, 1, "int16", None,
     "tank-plc", None],
]


@pytest.mark.parametrize("kind", ["xlsx", "gb18030"])
def test_every_bad_row_is_named_by_sheet_row_and_column_and_nothing_is_written(kind, tmp_path):
    table = workbook(tmp_path / "points.xlsx", BROKEN) if kind == "xlsx" else \
        csv_table(tmp_path / "points.csv", BROKEN, kind)
    sheet = "罐区" if kind == "xlsx" else "points"
    out = tmp_path / "tags.yaml"
    done = run("import-points", str(table), "--device", "tank-plc", "-o", str(out))
    assert done.returncode == 1 and not out.exists()
    problems = [line.removeprefix(f"{table}: ") for line in done.stderr.splitlines() if line.startswith(str(table))]
    expected = [
        f"sheet {sheet}, row 4, column J (报警值/高报): limits must rise ll < l < h < hh, but H 8.5 is not above L 9.5",
        f"sheet {sheet}, row 5, column N (寄存器地址): expected a number, got '40x1'",
        f"sheet {sheet}, row 7, column O (数据类型): 'REAL' is not a data type; one of: int16, uint16, int32, "
        "uint32, float32, float64, bit, bool",
        f"sheet {sheet}, row 8, column N (寄存器地址): 70000 is out of range 0..65535",
        f"sheet {sheet}, row 9, column P (字节序): 'ABDC' is not a byte order; one of: ABCD, CDAB, BADC, DCBA, AB, BA",
        f"sheet {sheet}, row 9, column G (量程/上限): give the range's low and high, or neither",
        f"sheet {sheet}, row 10, column C (位号): tag LT101 is already on sheet {sheet}, row 4",
    ]
    assert problems == expected, done.stderr
    assert done.stderr.strip().endswith("nothing written")


def test_overlapping_registers_are_a_bad_row(tmp_path):
    rows = [ROWS[0], [2, "X", "LT102", "b", "m", 0, 10, None, None, None, None, None, None, 1, "uint16", None,
                      "tank-plc", None]]
    imported = import_points(workbook(tmp_path / "p.xlsx", rows), load_mapping(None), "tank-plc")
    assert imported.tags == []
    assert imported.problems == [f"{tmp_path / 'p.xlsx'}: sheet 罐区, row 5, column N (寄存器地址): holding register 1 "
                                 "overlaps tag LT101 (holding 0..1); give each value its own registers"]


def test_a_mapping_file_names_other_headings(tmp_path):
    table = tmp_path / "plant.csv"
    table.write_text("Tag No.,Desc,EU,Lo,Hi,Alarm High,Reg,Fmt,Remarks\n"
                     "FT301,Feed flow,m3/h,0,60,50,10,int32,spare\n", encoding="utf-8")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns:\n  name: Tag No.\n  description: Desc\n  unit: EU\n  range_low: Lo\n"
                       "  range_high: Hi\n  h: Alarm High\n  address: Reg\n  type: [Fmt, Format]\n", encoding="utf-8")
    imported = import_points(table, load_mapping(mapping))
    assert imported.problems == []
    assert imported.tags == [{"name": "FT301", "description": "Feed flow", "unit": "m3/h", "range": [0, 60],
                              "address": 10, "type": "int32", "alarms": {"h": 50}}]
    assert imported.notes == ["sheet plant, column I (Remarks): no key in the config holds it; left out"]


def test_a_bad_mapping_file_names_its_line_and_key(tmp_path):
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns:\n  name: Tag No.\n  hazard: HS\n", encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(mapping)
    assert str(caught.value).startswith(f"{mapping}:3: columns.hazard: unknown key 'hazard'")


def test_a_file_that_is_no_table_is_refused_and_nothing_written(tmp_path):
    bogus = tmp_path / "points.xlsx"
    bogus.write_text("not a workbook", encoding="utf-8")
    out = tmp_path / "tags.yaml"
    done = run("import-points", str(bogus), "-o", str(out))
    assert done.returncode == 1 and not out.exists()
    assert done.stderr.startswith(f"{bogus}: not a readable .xlsx workbook")


def test_a_table_without_register_columns_gives_the_common_keys(tmp_path):
    """For an OPC UA server or a gas panel the register map has no place: the tags take their address keys
    from the driver's docs."""
    table = tmp_path / "gds.csv"
    table.write_text("位号,名称,单位,量程下限,量程上限,高报,高高报\nGT301,环氧乙烷,ppm,0,100,1,2\n",
                     encoding="utf-8-sig")
    imported = import_points(table, load_mapping(None))
    assert imported.problems == []
    assert imported.tags == [{"name": "GT301", "description": "环氧乙烷", "unit": "ppm", "range": [0, 100],
                              "alarms": {"hh": 2, "h": 1}}]
