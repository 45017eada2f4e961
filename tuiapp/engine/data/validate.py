"""The dataset layer: read, detect, validate and normalise datasets; hash and measure them.

Files: JSON Lines, JSON arrays, CSV/TSV, Parquet, `datasets` folders saved with save_to_disk,
and .txt (raw text: one document per blank-line-separated paragraph). Rows are normalised to
TRL's formats:

    sft         {"messages": [{"role", "content"}, ...]}  or  {"prompt", "completion"}
    preference  {"prompt", "chosen", "rejected"}           (strings or message lists)
    kto         {"prompt", "completion", "label": bool}
    text        {"text"}

`validate` never raises for bad data: every problem becomes a `Problem` naming file, line (row
for Parquet / datasets folders), field and what to do. No Textual here; pyarrow, datasets and
transformers are imported only by the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tuiapp.engine.data.columns import media_problem, unused
from tuiapp.engine.data.formats import SHAPES, detect_format, normalise
from tuiapp.engine.data.locate import field_line
from tuiapp.engine.data.read import describe, read_rows
from tuiapp.engine.data.types import (
    FORMAT_KIND,
    KIND_SHAPES,
    KINDS,
    Problem,
    ValidationReport,
)

# detected format -> {file format or asked kind: the format the row is a broken case of}
_BROKEN_FORMS = {
    "prompt_only": {"prompt_completion": "prompt_completion", "kto": "kto",
                    "sft": "prompt_completion"},
    "prompt_completion": {"kto": "kto"},
}


def validate(path: str | Path, kind: str | None = None) -> ValidationReport:
    """Read and check a dataset; all problems are collected, none raised.

    kind: the job the data is for ("sft", "preference", "kto", "text"); data of another kind
    gives one error naming the detected format. None: the kind follows from the format.
    """
    path = Path(path)
    spath = str(path)
    read = read_rows(path)
    report = ValidationReport(spath, None, None, rows=len(read.rows), file_type=read.file_type)

    def add(line: int | None, field: str | None, message: str, severity: str = "error") -> None:
        report.add(Problem(spath, line, field, message, severity, read.unit))

    for problem in read.problems:
        problem.unit = read.unit if problem.line is not None else problem.unit
        report.add(problem)
    report.fatal = read.fatal or any(p.line is None and p.severity == "error"
                                     for p in read.problems)
    if kind is not None and kind not in KINDS:
        add(None, None, f"unknown kind {kind!r}; expected one of: {', '.join(KINDS)}")
        report.fatal = True
        return report
    ignored: dict[str, list[int]] = {}  # column tuneloop does not read -> [first line, rows]

    first_line = switch_line = None
    switch_format = ""
    switched = 0
    for row in read.rows:
        for dup in row.duplicates:
            add(row.line, dup, "key appears twice in this object; JSON keeps only the last "
                "value: keep one")
        if row.bad:
            continue
        if not isinstance(row.value, dict):
            add(row.line, None, f"row is {describe(row.value)}; each row must be a JSON "
                'object such as {"messages": [...]} or {"prompt": ..., "completion": ...}')
            continue
        media = media_problem(row.value)
        if media is not None:
            add(row.line, *media)
            continue
        fmt = detect_format(row.value, kind or report.kind)
        if fmt is None:
            keys = ", ".join(map(repr, list(row.value)[:8])) or "none"
            add(row.line, None, f"no known format has these keys ({keys}); expected one of: "
                f"{SHAPES}")
            continue
        # A row that lost a key looks like a poorer format; judge it by the file's (or the
        # asked kind's) format so the message says "missing 'label'", not "mixed formats".
        fmt = _BROKEN_FORMS.get(fmt, {}).get(report.format or kind or "", fmt)
        if report.format is None:
            report.format, report.kind, first_line = fmt, FORMAT_KIND[fmt], row.line
            if kind is not None and report.kind != kind:
                add(row.line, None, f"this is {fmt} data (for {report.kind} jobs) but {kind} "
                    f"data was asked for; {kind} rows look like {KIND_SHAPES[kind]}")
                report.fatal = True
                break
        if fmt != report.format:
            switched += 1
            if switch_line is None:
                switch_line, switch_format = row.line, fmt
            continue
        for column in unused(fmt, row.value):
            ignored.setdefault(column, [row.line, 0])[1] += 1
        record, issues = normalise(fmt, row.value)
        for field, message, severity in issues:
            if field and row.source is not None:  # a JSON array row: say where the field is
                at = field_line(*row.source, field)
                if at is not None and at != row.line:
                    message += f" (the field is on line {at})"
            add(row.line, field, message, severity)
        if record is not None and not row.duplicates:
            report.records.append(record)
            report.line_numbers.append(row.line)
    if switch_line is not None:
        unit = "row" if read.unit == "row" else "line"
        add(switch_line, None, f"mixed formats: this row is {switch_format} but the file started "
            f"as {report.format} ({unit} {first_line}); {switched} row(s) differ: keep one "
            "format per file")
    for column, (line, count) in ignored.items():
        add(line, column, f"column not used for {report.format} data ({count} row(s)); "
            "tuneloop ignores it: drop it, or rename it if it holds something the format reads",
            "warning")
    used = set(report.line_numbers)
    report.skipped_lines = [row.line for row in read.rows if row.line not in used]
    report.problems.sort(key=lambda p: (p.line or 0))
    return report


def skippable(report: ValidationReport) -> bool:
    """Whether leaving the invalid rows out gives a dataset: every error sits on a row that was
    read (no broken file, no wrong kind), and some rows are usable."""
    return not report.fatal and bool(report.records)


def write_valid_rows(report: ValidationReport, folder: str | Path) -> tuple[Path, str]:
    """The usable rows, normalised, as JSON Lines in `folder` (named by their sha256); returns
    (path, sha256). Used by ``import --skip-invalid``: the version holds only rows that validate,
    and its lineage names the lines left out."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in report.records).encode()
    digest = hashlib.sha256(payload).hexdigest()
    dest = Path(folder) / digest[:16] / (Path(report.path).stem + ".valid.jsonl")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(payload)
    return dest, digest


def skip_summary(report: ValidationReport, source_hash: str) -> dict:
    """What --skip-invalid left out, for the version's stats and lineage."""
    return {"count": len(report.skipped_lines), "lines": report.skipped_lines,
            "unit": "row" if report.file_type in ("parquet", "datasets") else "line",
            "errors": report.error_count, "source_sha256": source_hash,
            "first_errors": [str(p) for p in report.errors[:5]]}


def content_hash(path: str | Path) -> str:
    """sha256 hex of a file's bytes; for a folder, of its sorted relative paths and bytes."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = file.relative_to(path).as_posix().encode()
            h.update(len(rel).to_bytes(8, "big") + rel)
            h.update(hashlib.sha256(file.read_bytes()).digest())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
