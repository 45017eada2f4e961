"""``tuneloop data``: validate, measure, import and list datasets without the TUI.

Exit codes: 0 fine, 1 the data has errors, 2 the command itself cannot run (missing path,
unknown kind, tokenizer that does not load).
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tuiapp.cli.common import fail, open_ws, print_json

app = typer.Typer(help="Check, measure, import and list datasets.", no_args_is_help=True)

MAX_SHOWN = 50  # problems printed per severity; the rest are counted

_KIND_HELP = "The job the data is for: sft, preference, kto, text or prompt (default: detected)."
_MAXLEN_HELP = "Sequence length the trainer will use; reports truncation against it."
_TOK_HELP = "Tokenizer folder or tokenizer.json for token counts (default: the demo tokenizer)."


def _console() -> Console:
    # soft_wrap: long problem lines stay one line each, so they grep and copy cleanly.
    return Console(highlight=False, soft_wrap=True)


def _check_args(path: str, kind: str | None) -> Path:
    from tuiapp.engine.data import KINDS

    if kind is not None and kind not in KINDS:
        fail(f"unknown --kind {kind!r}; expected one of: {', '.join(KINDS)}", code=2)
    p = Path(path).expanduser()
    if not p.exists():
        fail(f"no such file or folder: {path}", code=2)
    return p


def _tokenizer(name: str | None):
    from tuiapp.engine.data import load_tokenizer

    if name is None:
        return None  # compute_stats picks the demo tokenizer, or says it approximates
    try:
        return load_tokenizer(name)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a usage error here
        fail(f"cannot load the tokenizer {name!r}: {exc}", code=2)


def _stats_warnings(report, stats: dict[str, Any]) -> None:
    """Truncation that leaves nothing to learn from is worth a warning on validate."""
    from tuiapp.engine.data import Problem

    nothing = stats.get("train_on_nothing")
    if nothing and nothing["count"]:
        report.add(Problem(report.path, nothing["lines"][0], None,
                           f"{nothing['count']} example(s) would train on nothing at max_length "
                           f"{stats['max_length']}: truncation removes every assistant token "
                           f"(lines {', '.join(map(str, nothing['lines'][:10]))}); raise "
                           "--max-length or shorten the prompts", "warning"))
    for problem in tool_use_warnings(stats):
        report.add(Problem(report.path, None, None, problem, "warning"))
    pref = stats.get("preference") or {}
    if pref.get("prompt_fills_max_length"):
        report.add(Problem(report.path, None, None,
                           f"{pref['prompt_fills_max_length']} pair(s) have a prompt of at least "
                           f"max_length {stats['max_length']} tokens: nothing of chosen or "
                           "rejected survives truncation", "warning"))


def tool_use_warnings(stats: dict[str, Any]) -> list[str]:
    """A chat template that drops tool calls or tool definitions, said in words."""
    tools = stats.get("tool_use") or {}
    out = []
    if tools.get("rows_with_tool_calls") and not tools["template_renders_tool_calls"]:
        out.append(f"{tools['rows_with_tool_calls']} row(s) hold tool calls but the chat template "
                   f"of {stats['tokenizer']} does not render them: the model would learn the "
                   "conversations with the calls cut out; use a tokenizer whose template takes "
                   "tool_calls (e.g. Qwen2.5, Llama 3.1)")
    if tools.get("rows_with_tools") and not tools["template_renders_tools"]:
        out.append(f"{tools['rows_with_tools']} row(s) define tools but the chat template of "
                   f"{stats['tokenizer']} does not render tools=: the definitions are left out")
    return out


def _summary(report) -> str:
    where = escape(str(report.path))
    shape = f"{report.format or 'unknown format'}"
    if report.kind:
        shape += f", {report.kind}"
    if report.file_type:
        shape += f", {report.file_type}"
    if report.ok:
        warn = f", {report.warning_count} warning(s)" if report.warning_count else ""
        return f"[green]✓[/] {where}: {report.rows} rows ({shape}){warn}"
    return (f"[red]✗[/] {where}: {report.error_count} error(s), {report.warning_count} "
            f"warning(s) in {report.rows} rows ({shape})")


def print_report(console: Console, report) -> None:
    """Summary line, then errors and warnings (at most MAX_SHOWN each), then counts by field."""
    console.print(_summary(report))
    for severity, items, total in (("error", report.errors, report.error_count),
                                   ("warning", report.warnings, report.warning_count)):
        if not items:
            continue
        colour = "red" if severity == "error" else "yellow"
        console.print(f"[bold {colour}]{severity}s[/]")
        for problem in items[:MAX_SHOWN]:
            console.print(f"  {escape(str(problem))}")
        if total > MAX_SHOWN:
            console.print(f"  … and {total - MAX_SHOWN} more {severity}s")
    by_field = Counter(re.sub(r"\[\d+\]", "[*]", p.field) if p.field else "(row)"
                       for p in report.errors)
    if len(report.errors) > 3 and len(by_field) > 1:
        groups = ", ".join(f"{escape(f)} ×{n}" for f, n in by_field.most_common(8))
        console.print(f"[dim]errors by field: {groups}[/]")


@app.command("validate")
def validate_cmd(
    path: str = typer.Argument(..., help="Dataset file (.jsonl .json .csv .tsv .parquet .txt) "
                               "or a datasets folder."),
    kind: str | None = typer.Option(None, "--kind", help=_KIND_HELP),
    max_length: int | None = typer.Option(None, "--max-length", min=1, help=_MAXLEN_HELP),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help=_TOK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check every row; name file, line, field and what to do for each problem."""
    from tuiapp.engine.data import compute_stats, validate

    p = _check_args(path, kind)
    report = validate(p, kind=kind)
    stats = None
    if (max_length or tokenizer) and report.records:
        stats = compute_stats(report, _tokenizer(tokenizer), max_length)
        _stats_warnings(report, stats)
    if as_json:
        print_json({**report.to_dict(), "stats": stats})
    else:
        print_report(_console(), report)
    raise typer.Exit(0 if report.ok else 1)


def _print_pct(table: Table, label: str, pct: dict | None) -> None:
    if pct:
        table.add_row(label, f"p50 {pct['p50']}  p90 {pct['p90']}  p99 {pct['p99']}  "
                      f"max {pct['max']}  mean {pct['mean']}")


def print_stats(console: Console, stats: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("rows", str(stats["rows"]))
    if "documents" in stats:
        table.add_row("documents", str(stats["documents"]))
    table.add_row("tokenizer", f"{escape(stats['tokenizer'])} (template: {stats['template']})")
    _print_pct(table, "tokens", stats["tokens"])
    _print_pct(table, "assistant tokens", stats.get("assistant_tokens"))
    if stats["truncated"] is not None:
        t = stats["truncated"]
        table.add_row(f"> max_length {stats['max_length']}",
                      f"{t['count']} ({t['share']:.1%}) truncated")
    if stats.get("train_on_nothing"):
        table.add_row("train on nothing", str(stats["train_on_nothing"]["count"]))
    pref = stats.get("preference")
    if pref:
        _print_pct(table, "prompt tokens", pref["prompt_tokens"])
        _print_pct(table, "chosen tokens", pref["chosen_tokens"])
        _print_pct(table, "rejected tokens", pref["rejected_tokens"])
        if "chosen_truncated" in pref:
            table.add_row("pairs cut", f"chosen {pref['chosen_truncated']}, rejected "
                          f"{pref['rejected_truncated']}, prompt alone too long "
                          f"{pref['prompt_fills_max_length']}")
    if "labels" in stats:
        table.add_row("labels", f"desirable {stats['labels']['desirable']}, undesirable "
                      f"{stats['labels']['undesirable']}")
    table.add_row("duplicates", str(stats["duplicates"]["count"]))
    if stats["turns"]:
        table.add_row("turns", ", ".join(f"{k}: {v}" for k, v in stats["turns"].items()))
    for role, r in stats["roles"].items():
        table.add_row(f"role {role}", f"{r['messages']} messages, {r['tokens']} tokens")
    console.print(table)


@app.command("stats")
def stats_cmd(
    path: str = typer.Argument(..., help="Dataset file or datasets folder."),
    kind: str | None = typer.Option(None, "--kind", help=_KIND_HELP),
    max_length: int | None = typer.Option(None, "--max-length", min=1, help=_MAXLEN_HELP),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help=_TOK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Token lengths, truncation, duplicates, turns and role balance of the valid rows."""
    from tuiapp.engine.data import compute_stats, validate

    p = _check_args(path, kind)
    report = validate(p, kind=kind)
    stats = compute_stats(report, _tokenizer(tokenizer), max_length)
    if as_json:
        print_json({"report": report.to_dict(), "stats": stats})
        raise typer.Exit(0 if report.records else 1)
    console = _console()
    console.print(_summary(report))
    if not report.records:
        print_report(Console(stderr=True, highlight=False, soft_wrap=True), report)
        fail("no usable row: there is nothing to measure", code=1)
    if not report.ok:
        console.print(f"[yellow]{report.rows - len(report.records)} row(s) with errors are left "
                      "out; `tuneloop data validate` lists them[/]")
    for warning in tool_use_warnings(stats):
        console.print(f"[yellow]{escape(warning)}[/]")
    print_stats(console, stats)


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    path: str = typer.Argument(..., help="Dataset file or datasets folder."),
    name: str = typer.Option(..., "--name", help="Dataset name; each new content is a version."),
    kind: str | None = typer.Option(None, "--kind", help=_KIND_HELP),
    max_length: int | None = typer.Option(None, "--max-length", min=1, help=_MAXLEN_HELP),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help=_TOK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the version as JSON."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Leave rows with errors out "
                                      "(counted and listed in the version's stats) instead of "
                                      "refusing the file."),
) -> None:
    """Validate, copy into the workspace and register an immutable, content-hashed version."""
    from tuiapp.engine import data

    p = _check_args(path, kind)
    report = data.validate(p, kind=kind)
    console = _console()
    skipped = None
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not report.ok:
        print_report(err, report)
        if not skip_invalid:
            hint = (f"; or --skip-invalid to leave the {len(report.skipped_lines)} invalid row(s) "
                    "out") if data.skippable(report) else ""
            fail(f"not imported: fix the errors above first{hint}", code=1)
        if not data.skippable(report):
            why = "no row is usable" if not report.records else "the file cannot be read whole"
            fail(f"not imported: {why}, so there is nothing to keep by skipping rows", code=1)
    ws = open_ws(ctx)
    if not report.ok:
        source_hash = data.content_hash(p)
        p_copy, digest = data.write_valid_rows(report, ws.datasets_dir)
        skipped = data.skip_summary(report, source_hash)
        lines = ", ".join(map(str, skipped["lines"][:20]))
        more = " …" if skipped["count"] > 20 else ""
        err.print(f"[yellow]leaving out {skipped['count']} invalid row(s) of {report.rows} "
                  f"({skipped['unit']}s {lines}{more})[/]")
    else:
        digest = data.content_hash(p)
    for version in ws.store.list_dataset_versions(name=name):
        if version.content_hash == digest:
            if as_json:
                print_json({**_version_dict(version), "already_imported": True})
            else:
                console.print(f"{escape(name)}: already imported as version {version.id}")
            return
    stats = data.compute_stats(report, _tokenizer(tokenizer), max_length)
    # A private copy keyed by content keeps the version immutable when the source file changes.
    if skipped is not None:
        dest = p_copy
        stats["skipped"] = skipped
    else:
        dest = ws.datasets_dir / digest[:16] / p.name
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, dest)
    version = ws.store.add_dataset_version(
        name, str(dest), digest, report.format, report.kind, len(report.records),
        stats={**stats, "file_type": report.file_type}, source=str(p.resolve()),
        lineage=None if skipped is None else {"skipped_invalid": skipped})
    if as_json:
        print_json({**_version_dict(version), "already_imported": False})
        return
    left = f", {skipped['count']} invalid row(s) left out" if skipped else ""
    console.print(f"[green]✓[/] imported {escape(name)} as version {version.id}: "
                  f"{version.rows} rows, {version.format} ({version.kind}){left}, sha256 "
                  f"{digest[:12]}")


def _version_dict(v) -> dict[str, Any]:
    return {k: getattr(v, k, None) for k in ("id", "name", "path", "content_hash", "format",
                                             "kind", "rows", "source", "created_at")}


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--name", help="Only versions of this dataset."),
    kind: str | None = typer.Option(None, "--kind", help="Only datasets of this kind."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Dataset versions registered in the workspace, with their content hash."""
    ws = open_ws(ctx)
    versions = ws.store.list_dataset_versions(name=name, kind=kind)
    if as_json:
        print_json([_version_dict(v) for v in versions])
        return
    console = _console()
    if not versions:
        console.print("No datasets yet: `tuneloop data import PATH --name NAME` adds one.")
        return
    table = Table("id", "name", "kind", "format", "rows", "sha256", "created")
    table.columns[1].no_wrap = True
    for v in versions:
        table.add_row(str(v.id), escape(v.name), v.kind, v.format, str(v.rows),
                      v.content_hash[:10], str(v.created_at)[:10])
    console.print(table)
