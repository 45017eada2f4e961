"""Reading dataset files into located rows.

Every reader turns one file type into ``RawRow``s that remember where they came from (the
physical file line, or the row number for columnar files) plus the problems that stop a row from
being read at all: bad bytes, bad JSON, ragged CSV. What a row *means* is data_formats' job.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuiapp.engine.data.types import Problem, short, type_name

FILE_TYPES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
# Markers save_to_disk leaves in a folder (Dataset and DatasetDict).
DATASETS_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")
MAX_BAD_BYTES = 1000  # past this many invalid UTF-8 sequences, stop naming them one by one


@dataclass
class RawRow:
    line: int
    value: Any
    bad: bool = False  # the reader already reported why this row can't be used
    duplicates: list[str] = field(default_factory=list)  # JSON paths of repeated keys
    source: tuple[str, int] | None = None  # (file text, offset) of a JSON array's element


@dataclass
class ReadResult:
    file_type: str | None
    unit: str = "line"
    rows: list[RawRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    fatal: bool = False  # reading stopped early: rows after the problem were never read


def detect_file_type(path: Path) -> str | None:
    if path.is_dir():
        return "datasets" if any((path / m).exists() for m in DATASETS_MARKERS) else None
    return FILE_TYPES.get(path.suffix.lower())


def read_rows(path: Path) -> ReadResult:
    """Read any supported file (or `datasets` folder) into located rows; never raises for bad data."""
    spath = str(path)
    if not path.exists():
        res = ReadResult(None)
        res.problems.append(Problem(spath, None, None, "no such file or folder"))
        return res
    file_type = detect_file_type(path)
    if file_type is None:
        res = ReadResult(None)
        if path.is_dir():
            msg = ("folder is not a dataset saved with datasets' save_to_disk (no state.json or "
                   "dataset_info.json); point at a data file instead")
        else:
            msg = (f"unknown file type {path.suffix or '(no extension)'!r}; expected .jsonl, "
                   ".json, .csv, .tsv, .parquet, .txt or a datasets folder")
        res.problems.append(Problem(spath, None, None, msg))
        return res
    if file_type == "parquet":
        return _read_parquet(path)
    if file_type == "datasets":
        return _read_datasets_folder(path)

    data = path.read_bytes()
    res = ReadResult(file_type)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        res.problems.append(Problem(spath, None, None, "file is UTF-16; save it as UTF-8"))
        return res
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM is harmless; drop it so line 1 parses
        data = data[3:]
    if not data.strip():
        res.problems.append(Problem(spath, None, None,
                                    "file is empty" if not data else "file has only blank lines"))
        return res
    text, bad_lines = _decode(data)
    for line, col in bad_lines:
        res.problems.append(Problem(spath, line, None, f"invalid UTF-8 byte at column {col}; "
                                    "re-save the file as UTF-8"))
    bad = {line for line, _ in bad_lines}
    if file_type == "json" or (file_type == "jsonl" and _is_json_array(text)):
        _read_json_array(spath, text, bad, res)
    elif file_type == "jsonl":
        _read_jsonl(spath, text, bad, res)
    elif file_type in ("csv", "tsv"):
        _read_csv(spath, text, bad, res, "\t" if file_type == "tsv" else ",")
    else:
        _read_txt(text, bad, res)
    if not res.rows and not res.problems:
        res.problems.append(Problem(spath, None, None, "file has no rows"))
    return res


# ---------------------------------------------------------------- bytes and JSON helpers


def _is_json_array(text: str) -> bool:
    """A .jsonl file that is really one JSON array (not JSON Lines whose rows are arrays)."""
    if not text.lstrip().startswith("["):
        return False
    try:
        return isinstance(json.loads(text), list)
    except json.JSONDecodeError:
        return False


def _decode(data: bytes) -> tuple[str, list[tuple[int, int]]]:
    """Decode UTF-8, replacing bad bytes and noting (line, column) of the first on each line."""
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    pieces: list[str] = []
    bad: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        try:
            pieces.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            start = pos + exc.start
            pieces.append(data[pos:start].decode("utf-8"))
            pieces.append("\ufffd")
            line = data.count(b"\n", 0, start) + 1
            bad.setdefault(line, start - (data.rfind(b"\n", 0, start) + 1) + 1)
            pos = pos + exc.end
            if len(bad) >= MAX_BAD_BYTES:
                pieces.append(data[pos:].decode("utf-8", errors="replace"))
                break
    return "".join(pieces), sorted(bad.items())


class _Obj(dict):
    """A JSON object that remembers keys given more than once (json keeps only the last)."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs)


def _duplicate_paths(value: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key in getattr(value, "duplicates", ()):
            found.append(f"{prefix}.{key}" if prefix else key)
        for key, sub in value.items():
            found += _duplicate_paths(sub, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            found += _duplicate_paths(sub, f"{prefix}[{i}]")
    return found


# json's terse messages, finished with what usually causes them.
_JSON_HINTS = {
    "Expecting ',' delimiter": "a ',' (or the closing ] or }) is missing before this point",
    "Expecting ':' delimiter": "a key must be followed by ':' and its value",
    "Expecting property name enclosed in double quotes": "keys need double quotes, and there "
    "must be no trailing comma before }",
    "Expecting value": "a value is missing here (or it is not JSON: single quotes, NaN, a "
    "trailing comma)",
    "Unterminated string starting at": "a string is not closed: a quote is missing, or a raw "
    "line break is inside it (write \\n)",
    "Invalid control character at": "a raw tab or line break is inside a string: write \\t "
    "or \\n",
    "Invalid \\escape": "a backslash starts an escape JSON does not have: write \\\\ for a "
    "backslash",
    "Extra data": "more text follows the value",
}


def _json_error(exc: json.JSONDecodeError) -> str:
    hint = _JSON_HINTS.get(exc.msg)
    tail = f"; {hint}" if hint else ""
    if exc.msg.endswith(" at"):  # "Unterminated string starting at": json keeps the where apart
        return f"invalid JSON at column {exc.colno}: {exc.msg} column {exc.colno}{tail}"
    return f"invalid JSON at column {exc.colno}: {exc.msg}{tail}"


def _row(line: int, value: Any) -> RawRow:
    return RawRow(line, value, duplicates=_duplicate_paths(value))


# ---------------------------------------------------------------- readers


def _read_jsonl(spath: str, text: str, bad: set[int], res: ReadResult) -> None:
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue  # blank lines (trailing ones included) carry no row
        if number in bad:
            res.rows.append(RawRow(number, None, bad=True))
            continue
        start = len(raw) - len(raw.lstrip())
        try:
            value, end = _DECODER.raw_decode(raw, start)
        except json.JSONDecodeError as exc:
            res.problems.append(Problem(spath, number, None, _json_error(exc)))
            res.rows.append(RawRow(number, None, bad=True))
            continue
        rest = raw[end:].strip()
        if rest:
            try:
                _DECODER.raw_decode(rest)
                msg = ("several JSON values on one line; JSON Lines needs exactly one object "
                       "per line")
            except json.JSONDecodeError:
                msg = f"invalid JSON at column {end + 1}: unexpected text after the object"
            res.problems.append(Problem(spath, number, None, msg))
            res.rows.append(RawRow(number, None, bad=True))
            continue
        res.rows.append(_row(number, value))


def _read_json_array(spath: str, text: str, bad: set[int], res: ReadResult) -> None:
    """A JSON array of rows; each row's line is where its element starts."""
    n = len(text)
    line = 1
    scanned = 0  # text[:scanned] has been counted into `line`

    def line_at(pos: int) -> int:
        nonlocal line, scanned
        line += text.count("\n", scanned, pos)
        scanned = pos
        return line

    def skip_ws(pos: int) -> int:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_ws(0)
    if text[pos] != "[":
        if text[pos] == "{":
            # A .json file holding JSON Lines is common enough to just read it as such.
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                if exc.msg == "Extra data":
                    res.file_type = "jsonl"
                    _read_jsonl(spath, text, bad, res)
                    return
                res.problems.append(Problem(spath, exc.lineno, None, _json_error(exc)))
                return
            res.problems.append(Problem(spath, line_at(pos), None,
                                        "top-level JSON value is an object; expected an array of "
                                        "row objects ([{...}, {...}]) or JSON Lines"))
            return
        res.problems.append(Problem(spath, line_at(pos), None,
                                    "expected a JSON array of row objects ([{...}, {...}])"))
        return
    pos = skip_ws(pos + 1)
    if pos < n and text[pos] == "]":
        res.problems.append(Problem(spath, line_at(pos), None, "the JSON array is empty"))
        return
    while True:
        start_line = line_at(pos)
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            res.problems.append(Problem(spath, exc.lineno, None, _json_error(exc)))
            res.fatal = True
            return
        if any(ln in bad for ln in range(start_line, line_at(end) + 1)):
            res.rows.append(RawRow(start_line, None, bad=True))
        else:
            res.rows.append(_row(start_line, value))
            res.rows[-1].source = (text, pos)
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            tail = skip_ws(pos + 1)
            if tail < n:
                res.problems.append(Problem(spath, line_at(tail), None,
                                            "unexpected text after the closing ]"))
            return
        err = line_at(min(pos, n))
        res.fatal = True
        res.problems.append(Problem(spath, err, None,
                                    "invalid JSON: expected ',' or ']' after an array element"))
        return


# Cells that may hold JSON (message lists); messages/conversations must.
_JSON_COLUMNS = ("messages", "conversations", "chosen", "rejected", "prompt", "completion")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _read_csv(spath: str, text: str, bad: set[int], res: ReadResult, delimiter: str) -> None:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        res.problems.append(Problem(spath, 1, None, f"cannot read the CSV header: {exc}"))
        return
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        res.problems.append(Problem(spath, 1, dupes[0], "column appears more than once in the "
                                    "header; rename or drop the copy"))
        return
    if any(not h for h in header):
        res.problems.append(Problem(spath, 1, None, f"column {header.index('') + 1} of the header "
                                    "has no name"))
        return
    while True:
        start = reader.line_num + 1  # physical line where the next record begins
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            res.problems.append(Problem(spath, start, None, f"malformed CSV: {exc}"))
            res.fatal = True
            return
        if not cells or all(not c.strip() for c in cells) and len(cells) <= 1:
            continue
        if any(line in bad for line in range(start, reader.line_num + 1)):
            res.rows.append(RawRow(start, None, bad=True))
            continue
        if len(cells) != len(header):
            res.problems.append(Problem(spath, start, None,
                                        f"row has {len(cells)} cells but the header has "
                                        f"{len(header)} columns; quote cells that contain "
                                        f"{'tabs' if delimiter == chr(9) else 'commas'}"))
            res.rows.append(RawRow(start, None, bad=True))
            continue
        row, ok = _csv_row(spath, start, dict(zip(header, cells, strict=True)), res)
        res.rows.append(RawRow(start, row, bad=not ok))


def _csv_row(spath: str, line: int, row: dict[str, Any], res: ReadResult) -> tuple[dict, bool]:
    ok = True
    for col in _JSON_COLUMNS:
        cell = row.get(col)
        if not isinstance(cell, str):
            continue
        stripped = cell.strip()
        must = col in ("messages", "conversations")
        if must or stripped.startswith("[{") or stripped.startswith("[") and stripped.endswith("]"):
            try:
                row[col] = json.loads(stripped)
            except json.JSONDecodeError as exc:
                if must or stripped.startswith("[{"):
                    res.problems.append(Problem(spath, line, col, f"cell is not valid JSON "
                                                f"({exc.msg}); it must hold a JSON list of "
                                                "message objects"))
                    ok = False
    if "label" in row:
        flag = _BOOLS.get(str(row["label"]).strip().lower())
        if flag is None:
            res.problems.append(Problem(spath, line, "label", f"must be true or false, got "
                                        f"{short(row['label'])}"))
            ok = False
        else:
            row["label"] = flag
    return row, ok


LONG_LINE = 200  # mean characters per line above which a file without blank lines is one
# document per line (a scraped corpus), not one long document (a poem, a script)


def _read_txt(text: str, bad: set[int], res: ReadResult) -> None:
    """Raw text: one document per blank-line-separated paragraph (line = its first line); a
    file without blank lines whose lines are long holds one document per line."""
    lines = text.replace("\r\n", "\n").split("\n")
    numbered = [i for i, raw in enumerate(lines) if raw.strip()]
    filled = [lines[i] for i in numbered]
    blank_inside = bool(numbered) and numbered[-1] - numbered[0] + 1 > len(numbered)
    if (not blank_inside and len(filled) > 1
            and sum(map(len, filled)) / len(filled) >= LONG_LINE):
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                _txt_doc(number, [raw], bad, res)
        return
    para: list[str] = []
    first = 0
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            if not para:
                first = number
            para.append(raw)
            continue
        if para:
            _txt_doc(first, para, bad, res)
            para = []
    if para:
        _txt_doc(first, para, bad, res)


def _txt_doc(first: int, lines: list[str], bad: set[int], res: ReadResult) -> None:
    is_bad = any(line in bad for line in range(first, first + len(lines)))
    res.rows.append(RawRow(first, None if is_bad else {"text": "\n".join(lines)}, bad=is_bad))


def _read_parquet(path: Path) -> ReadResult:
    res = ReadResult("parquet", unit="row")
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        res.problems.append(Problem(str(path), None, None, f"cannot read Parquet: {exc}"))
        return res
    res.rows = [RawRow(i, row) for i, row in enumerate(table.to_pylist(), start=1)]
    if not res.rows:
        res.problems.append(Problem(str(path), None, None, "Parquet file has no rows"))
    return res


def _read_datasets_folder(path: Path) -> ReadResult:
    res = ReadResult("datasets", unit="row")
    try:
        import datasets

        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        res.problems.append(Problem(str(path), None, None, f"cannot load the datasets folder: "
                                    f"{exc}"))
        return res
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded), None)
        if split is None:
            res.problems.append(Problem(str(path), None, None, "DatasetDict has no splits"))
            return res
        if len(loaded) > 1:
            res.problems.append(Problem(str(path), None, None, f"folder holds splits "
                                        f"{', '.join(loaded)}; using {split!r}", "warning", "row"))
        loaded = loaded[split]
    res.rows = [RawRow(i, row) for i, row in enumerate(loaded.to_list(), start=1)]
    if not res.rows:
        res.problems.append(Problem(str(path), None, None, "dataset has no rows"))
    return res


def describe(value: Any) -> str:
    """'a string', 'an array', … for 'expected X, got Y' messages."""
    name = type_name(value)
    return ("an " if name[0] in "aeiou" else "a ") + name if name != "null" else "null"
