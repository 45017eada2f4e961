"""``tuneloop export REF``: a run or model folder to GGUF files, checked for parity and recorded;
``tuneloop export setup-converter``: unpack llama.cpp's reference converter into the cache.

Mounted as a group (``app.add_typer(export_cmd.app, name="export")``) whose first word is REF
unless it names a sub-command, so ``tuneloop export 7 --quant f16`` keeps working; ``export``
stays a plain function for callers that mount it alone.
Exit codes: 0 every file passed its parity check, 1 a parity failure or a failed step,
2 bad arguments (unknown output type, a REF that leads nowhere).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from tuiapp.cli.common import fail, open_ws, print_json

DEFAULT = "gguf"  # the hidden sub-command a REF is routed to


class _RefFirstGroup(TyperGroup):
    """``export REF ...`` runs the export; only a sub-command's own name selects it."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RefFirstGroup, add_completion=False, no_args_is_help=True,
    help="Export a run or model folder to GGUF: `tuneloop export REF [--quant f16,q8_0] ...` "
    "(see `tuneloop export REF --help`), or set up llama.cpp's reference converter once: "
    "`tuneloop export setup-converter`.")


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _figures(f: dict) -> str:
    fig, parts = f["figures"], []
    if fig.get("top1_agreement") is not None:
        parts.append(f"top-1 {fig['top1_agreement']:.0%}")
    if fig.get("max_abs_diff") is not None:
        parts.append(f"Δlogit {fig['max_abs_diff']:.2g}")
    if fig.get("greedy_prompts"):
        parts.append(f"greedy {fig['greedy_agreeing']}/{fig['greedy_prompts']}")
    if fig.get("tokenization_identical") is False:
        parts.append("tokenization differs")
    return ", ".join(parts)


def _print_plan(console: Console, plan: dict) -> None:
    src = plan["source"]
    what = f"run {src.run_id}" if src.run_id is not None else str(src.model_dir or src.adapter_dir)
    how = f"merge {src.adapter_dir} into {src.base_dir}" if src.adapter_dir else "no merge (full model)"
    console.print(f"Exporting {what}: {how}")
    console.print(f"GGUF writer: {plan['writer'].name}", highlight=False)
    table = Table("type", "predicted size", title="Predicted sizes", title_justify="left")
    for q, n in plan["predicted"].items():
        table.add_row(q, _size(n))
    table.add_row("total", _size(plan["total_predicted"]), style="bold")
    console.print(table)


def _print_result(console: Console, result: dict) -> None:
    table = Table("type", "size", "sha256", "parity", "figures")
    table.add_column("file", overflow="fold")
    for f in result["files"]:
        status = "[green]ok[/]" if f["status"] == "ok" else "[red]failed[/]"
        table.add_row(f["quant"], _size(f["size_bytes"]), f["sha256"][:12], status, _figures(f),
                      Path(f["path"]).name)
    console.print(table)
    for f in result["files"]:
        for reason in f["reasons"]:
            console.print(f"[red]{f['quant']} failed parity:[/] {reason}", markup=True,
                          highlight=False)
    console.print(f"Written by {result['writer']}; files in {result['out_dir']}", highlight=False)
    if result["modelfile"]:
        console.print(f"Ollama Modelfile: {result['modelfile']}")
    if result["card"]:
        console.print(f"Model card: {result['card']}")
    for note in result["notes"]:
        console.print(f"note: {note}", highlight=False)


def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="A run id (see `tuneloop runs list`) or a model / adapter folder."),
    quant: str = typer.Option("f16", "--quant", "-q",
                              help="Comma-separated output types: f16, f32, bf16, q8_0, q6_k, "
                              "q5_k_m, q4_k_m, ... (quantized files are made from the float one)."),
    ollama: bool = typer.Option(False, "--ollama", help="Write an Ollama Modelfile for the smallest passing file."),
    card: bool = typer.Option(False, "--card", help="Write a model card (README.md) from the store."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                       help="Output folder (default: HOME/exports/<run or model>-<time>/)."),
    system: str | None = typer.Option(None, "--system", help="SYSTEM prompt for the Modelfile."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (no progress bar)."),
) -> None:
    """Merge a run's adapter and write GGUF files (f16, q8_0, q4_k_m, ...), each checked for
    parity against the merged model and recorded in the store with its sha256."""
    from tuiapp.engine.export.job import parse_quants, plan_export, resolve_source, run_export
    from tuiapp.engine.export.steps import ExportError

    try:
        names = parse_quants(quant)
    except ExportError as exc:
        fail(str(exc), code=2)
    ws = open_ws(ctx)
    try:
        resolve_source(ref, ws.store)
    except ExportError as exc:
        fail(str(exc), code=2)
    console = Console(stderr=as_json)
    try:
        plan = plan_export(ref, ws.store, names)
    except ExportError as exc:
        fail(str(exc), code=1)
    if not as_json:
        _print_plan(console, plan)

    phase = {"name": "start"}
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bar says what is happening
        if as_json:
            result = run_export(ref, ws.store, ws.home, names, ollama=ollama, card=card, out=out,
                                progress=lambda p, d, t: phase.update(name=p), system=system)
        else:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            with Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=False) as bar:
                task = bar.add_task("starting", total=None)

                def on_progress(p: str, done: int, total: int) -> None:
                    phase.update(name=p)
                    bar.update(task, description=p, completed=done, total=total)

                result = run_export(ref, ws.store, ws.home, names, ollama=ollama, card=card, out=out,
                                    progress=on_progress, system=system)
    except ExportError as exc:
        fail(f"{phase['name']}: {exc}", code=1)
    except Exception as exc:  # noqa: BLE001 - a person reads this, not a traceback
        fail(f"the export failed during {phase['name']}: {type(exc).__name__}: {exc}", code=1)

    if as_json:
        print_json(result)
    else:
        _print_result(console, result)
    if not result["ok"]:
        failed = [f["quant"] for f in result["files"] if f["status"] != "ok"]
        typer.echo(f"error: parity check failed for {', '.join(failed)}; the files are kept as "
                   "*.failed.gguf and recorded as failed.", err=True)
        raise typer.Exit(1)


app.command(DEFAULT, hidden=True)(export)


@app.command("setup-converter")
def setup_converter(
    sdist: Path | None = typer.Option(None, "--sdist", help="A llama-cpp-python .tar.gz sdist of "
                                      "the installed version (default: pip downloads it)."),
    as_json: bool = typer.Option(False, "--json", help="Print where it went as JSON."),
) -> None:
    """Unpack llama.cpp's HF -> GGUF converter (convert_hf_to_gguf.py) from the llama-cpp-python
    sdist into the cache, so exports are written by the converter matching the compiled
    llama.cpp. Without it tuneloop's own writer is used (Llama, Mistral, Qwen2 only)."""
    from tuiapp.engine.export import reference

    try:
        root = reference.setup_converter(sdist=sdist)
        names = sorted(reference.supported_architectures(root))
    except reference.ConverterError as exc:
        fail(str(exc), code=1)
    version = reference.converter_version(root)
    if as_json:
        print_json({"path": str(root), "version": version, "architectures": names})
        return
    examples = ", ".join(n for n in ("LlamaForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM",
                                     "Phi3ForCausalLM") if n in names) or ", ".join(names[:4])
    typer.echo(f"llama.cpp converter (llama-cpp-python {version or '?'}) in {root}")
    typer.echo(f"it converts {len(names)} architectures, e.g. {examples}")
